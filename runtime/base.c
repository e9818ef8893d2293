#include "vkl_base.h"
#include "quant.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>

int vkl_fail(vkl_err *e, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void vkl_err_prefix(vkl_err *e, const char *fmt, ...)
{
    if (!e) return;
    char old[sizeof e->msg];
    memcpy(old, e->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n < sizeof e->msg) {
        size_t room = sizeof e->msg - (size_t)n;
        snprintf(e->msg + n, room, "%s", old);
    }
}

void vkl_err_clear(vkl_err *e)
{
    if (e) e->msg[0] = 0;
}

static const struct {
    const char *name, *alt1, *alt2;
    size_t size;
} dtype_info[VKL_DTYPE_COUNT] = {
    [VKL_F32] = {"f32", "float32", "F32", 4},   [VKL_F16] = {"f16", "float16", "F16", 2},
    [VKL_BF16] = {"bf16", "bfloat16", "BF16", 2}, [VKL_I32] = {"i32", "int32", "I32", 4},
    [VKL_I64] = {"i64", "int64", "I64", 8},     [VKL_U8] = {"u8", "uint8", "U8", 1},
    [VKL_I8] = {"i8", "int8", "I8", 1},         [VKL_I16] = {"i16", "int16", "I16", 2},
    [VKL_F64] = {"f64", "float64", "F64", 8},   [VKL_BOOL] = {"bool", "boolean", "BOOL", 1},
    [VKL_NF4] = {"nf4", "normalfloat4", "NF4", 0},
    [VKL_NF4_DQ] = {"nf4dq", "normalfloat4_dq", "NF4_DQ", 0},
    [VKL_Q4_0] = {"q4_0", "gguf_q4_0", "Q4_0", 0}, [VKL_Q4_1] = {"q4_1", "gguf_q4_1", "Q4_1", 0},
    [VKL_Q5_0] = {"q5_0", "gguf_q5_0", "Q5_0", 0}, [VKL_Q5_1] = {"q5_1", "gguf_q5_1", "Q5_1", 0},
    [VKL_Q8_0] = {"q8_0", "gguf_q8_0", "Q8_0", 0}, [VKL_Q4_K] = {"q4_k", "gguf_q4_k", "Q4_K", 0},
    [VKL_Q5_K] = {"q5_k", "gguf_q5_k", "Q5_K", 0}, [VKL_Q6_K] = {"q6_k", "gguf_q6_k", "Q6_K", 0},
};

size_t vkl_dtype_size(vkl_dtype t) { return (unsigned)t < VKL_DTYPE_COUNT ? dtype_info[t].size : 0; }
uint64_t vkl_dtype_bytes(vkl_dtype t, uint64_t n)
{
    vkl_quant_layout l;
    if (!vkl_quant_layout_of(t, n, &l)) return l.total_bytes;
    return n * vkl_dtype_size(t);
}

const char *vkl_dtype_name(vkl_dtype t) { return (unsigned)t < VKL_DTYPE_COUNT ? dtype_info[t].name : "?"; }

int vkl_dtype_parse(const char *s, vkl_dtype *out)
{
    for (int i = 0; i < VKL_DTYPE_COUNT; i++) {
        if (!strcasecmp(s, dtype_info[i].name) || !strcasecmp(s, dtype_info[i].alt1) ||
            !strcmp(s, dtype_info[i].alt2)) {
            *out = (vkl_dtype)i;
            return 0;
        }
    }
    return -1;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float vkl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t vkl_f32_to_f16(float f)
{
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000;
    uint32_t a = u & 0x7fffffff;
    if (a >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (a > 0x7f800000 ? 0x200 : 0));
    if (a >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: inf */
    if (a < 0x38800000) {
        /* subnormal half (or zero): round(|f| * 2^24) with ties to even via the FPU */
        float v = u2f(a) * 16777216.0f;
        uint32_t m = (uint32_t)nearbyintf(v);
        return (uint16_t)(sign | m);
    }
    uint32_t mant = a & 0x7fffff, exp = (a >> 23) - 112;
    uint32_t h = (exp << 10) | (mant >> 13), rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

float vkl_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t vkl_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static double load_num(const void *p, vkl_dtype t, size_t i)
{
    switch (t) {
    case VKL_F32: return ((const float *)p)[i];
    case VKL_F16: return vkl_f16_to_f32(((const uint16_t *)p)[i]);
    case VKL_BF16: return vkl_bf16_to_f32(((const uint16_t *)p)[i]);
    case VKL_F64: return ((const double *)p)[i];
    case VKL_I32: return ((const int32_t *)p)[i];
    case VKL_I64: return (double)((const int64_t *)p)[i];
    case VKL_U8: return ((const uint8_t *)p)[i];
    case VKL_I8: return ((const int8_t *)p)[i];
    case VKL_I16: return ((const int16_t *)p)[i];
    case VKL_BOOL: return ((const uint8_t *)p)[i] != 0;
    default: return 0;
    }
}

int vkl_convert_host(const void *src, vkl_dtype st, void *dst, vkl_dtype dt, size_t n, vkl_err *e)
{
    if ((unsigned)st >= VKL_DTYPE_COUNT || (unsigned)dt >= VKL_DTYPE_COUNT)
        return vkl_fail(e, "cannot convert between element types %d and %d", (int)st, (int)dt);
    if (st == dt) {
        memcpy(dst, src, (size_t)vkl_dtype_bytes(st, n));
        return 0;
    }
    if (st == VKL_F32 && dt == VKL_NF4) return vkl_nf4_pack(src, n, 0, dst, e);
    if (st == VKL_NF4 && dt == VKL_F32) {
        vkl_nf4_unpack(src, n, dst);
        return 0;
    }
    if (st == VKL_F32 && dt == VKL_NF4_DQ) return vkl_nf4dq_pack(src, n, dst, e);
    if (st == VKL_NF4_DQ && dt == VKL_F32) {
        vkl_nf4dq_unpack(src, n, dst);
        return 0;
    }
    if (vkl_dtype_is_gguf(st) || vkl_dtype_is_gguf(dt)) return vkl_gguf_convert_host(src, st, dst, dt, n, e);
    if (vkl_dtype_is_quant(st) || vkl_dtype_is_quant(dt))
        return vkl_fail(e, "cannot convert %s to %s (quantised types convert from and to f32)", vkl_dtype_name(st),
                        vkl_dtype_name(dt));
    if (st == VKL_F16 && dt == VKL_F32) {
        for (size_t i = 0; i < n; i++) ((float *)dst)[i] = vkl_f16_to_f32(((const uint16_t *)src)[i]);
        return 0;
    }
    if (st == VKL_BF16 && dt == VKL_F32) {
        for (size_t i = 0; i < n; i++) ((float *)dst)[i] = vkl_bf16_to_f32(((const uint16_t *)src)[i]);
        return 0;
    }
    /* i64 <-> i32 keeps exact integers; others go through double */
    if (st == VKL_I64 && dt == VKL_I32) {
        for (size_t i = 0; i < n; i++) {
            int64_t v = ((const int64_t *)src)[i];
            if (v < INT32_MIN || v > INT32_MAX)
                return vkl_fail(e, "value %lld at index %zu does not fit in i32", (long long)v, i);
            ((int32_t *)dst)[i] = (int32_t)v;
        }
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        double v = load_num(src, st, i);
        switch (dt) {
        case VKL_F32: ((float *)dst)[i] = (float)v; break;
        case VKL_F16: ((uint16_t *)dst)[i] = vkl_f32_to_f16((float)v); break;
        case VKL_BF16: ((uint16_t *)dst)[i] = vkl_f32_to_bf16((float)v); break;
        case VKL_F64: ((double *)dst)[i] = v; break;
        case VKL_I32: ((int32_t *)dst)[i] = (int32_t)v; break;
        case VKL_I64: ((int64_t *)dst)[i] = (int64_t)v; break;
        case VKL_U8: ((uint8_t *)dst)[i] = (uint8_t)v; break;
        case VKL_I8: ((int8_t *)dst)[i] = (int8_t)v; break;
        case VKL_I16: ((int16_t *)dst)[i] = (int16_t)v; break;
        case VKL_BOOL: ((uint8_t *)dst)[i] = v != 0; break;
        default: return vkl_fail(e, "cannot convert to %s", vkl_dtype_name(dt));
        }
    }
    return 0;
}

static vkl_log_level log_level = VKL_LOG_INFO;
void vkl_log_set_level(vkl_log_level l) { log_level = l; }
vkl_log_level vkl_log_get_level(void) { return log_level; }

static vkl_log_fn log_fn;
static void *log_user;

void vkl_log_set(vkl_log_fn fn, void *user)
{
    log_fn = fn;
    log_user = user;
}

void vkl_log(vkl_log_level l, const char *fmt, ...)
{
    if (l > log_level) return;
    static const char *pre[] = {"error: ", "warning: ", "", "debug: "};
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_fn) log_fn(l, msg, log_user);
    else fprintf(stderr, "%s%s\n", pre[l], msg);
}

const char *vkl_version(void) { return VKL_VERSION_STRING; }
