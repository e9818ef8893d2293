/* NF4 quantisation on the host, bit for bit as bitsandbytes' 4-bit path
 * (quant.h), and QLoRA's double quantisation of the absmax values. Checked
 * against ../shared/refkit/lm/vectors/nf4.safetensors (tests/runtime/test_nf4.c). */
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const float vkl_nf4_levels[16] = {
    -1.0f,          -0x1.647362p-1f, -0x1.0cd660p-1f, -0x1.946540p-2f, -0x1.23449ap-2f, -0x1.7a6a7ep-3f,
    -0x1.74f0e2p-4f, 0.0f,           0x1.45f5fep-4f,  0x1.4995c6p-3f,  0x1.f809bap-3f,  0x1.5a0674p-2f,
    0x1.c34970p-2f, 0x1.200f56p-1f,  0x1.722766p-1f,  1.0f,
};

/* bitsandbytes' dQuantizeNF4 decision thresholds, in increasing order (they
 * are not all the f32 midpoints of neighbouring levels) */
const float vkl_nf4_midpoints[15] = {
    -0x1.b239b0p-1f, -0x1.38a4e0p-1f, -0x1.d70900p-2f, -0x1.5bd4ecp-2f, -0x1.e079d8p-3f,
    -0x1.1a7178p-3f, -0x1.74f0e2p-5f, 0x1.45f5fep-5f,  0x1.ec90c4p-4f,  0x1.a0cfc0p-3f,
    0x1.2b05a8p-2f,  0x1.8ea7f2p-2f,  0x1.00da08p-1f,  0x1.491b5ep-1f,  0x1.b913b4p-1f,
};

int vkl_dtype_is_quant(vkl_dtype t) { return t == VKL_NF4 || t == VKL_NF4_DQ || vkl_dtype_is_gguf(t); }

static uint64_t round16(uint64_t v) { return (v + 15) & ~(uint64_t)15; }

int vkl_quant_layout_of(vkl_dtype t, uint64_t n, vkl_quant_layout *l)
{
    if (vkl_dtype_is_gguf(t)) return vkl_gguf_layout_of(t, n, l);
    if (!vkl_dtype_is_quant(t)) return -1;
    memset(l, 0, sizeof *l);
    l->block = VKL_NF4_BLOCK;
    l->nblocks = (n + VKL_NF4_BLOCK - 1) / VKL_NF4_BLOCK;
    l->code_bytes = (n + 1) / 2;
    l->scale_offset = round16(l->code_bytes);
    if (t == VKL_NF4) {
        l->total_bytes = l->scale_offset + 4 * l->nblocks;
        return 0;
    }
    l->nblocks2 = (l->nblocks + VKL_NF4_DQ_BLOCK - 1) / VKL_NF4_DQ_BLOCK;
    l->absmax2_offset = l->scale_offset + 4 * VKL_NF4_DQ_MAP_WORDS;
    l->qcode_offset = round16(l->absmax2_offset + 4 * l->nblocks2);
    l->total_bytes = round16(l->qcode_offset + l->nblocks);
    return 0;
}

uint8_t vkl_nf4_code(float xn)
{
    uint8_t c = 0;
    for (int i = 0; i < 15; i++) c += xn > vkl_nf4_midpoints[i];
    return c;
}

int vkl_nf4_quantize(const float *x, uint64_t n, uint8_t *packed, float *absmax, vkl_err *e)
{
    for (uint64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return vkl_fail(e, "NF4: element %llu is %g; only finite values quantise", (unsigned long long)i, x[i]);
    memset(packed, 0, (size_t)((n + 1) / 2));
    for (uint64_t b0 = 0; b0 < n; b0 += VKL_NF4_BLOCK) {
        uint64_t b1 = b0 + VKL_NF4_BLOCK < n ? b0 + VKL_NF4_BLOCK : n;
        float m = 0.0f;
        for (uint64_t i = b0; i < b1; i++) m = fmaxf(m, fabsf(x[i]));
        absmax[b0 / VKL_NF4_BLOCK] = m;
        float inv = m > 0.0f ? 1.0f / m : 0.0f; /* reciprocal, then multiply, as bitsandbytes */
        for (uint64_t i = b0; i < b1; i++) {
            uint8_t c = m > 0.0f ? vkl_nf4_code(x[i] * inv) : 7;
            packed[i >> 1] |= (uint8_t)(i & 1 ? c : c << 4);
        }
    }
    if (n & 1) packed[n >> 1] |= 7; /* the missing element reads as 0 */
    return 0;
}

void vkl_nf4_dequantize(const uint8_t *packed, const float *absmax, uint64_t n, float *y)
{
    for (uint64_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)(i & 1 ? packed[i >> 1] & 15 : packed[i >> 1] >> 4);
        y[i] = vkl_nf4_levels[c] * absmax[i / VKL_NF4_BLOCK];
    }
}

/* The positive half of bitsandbytes' signed dynamic map, as torch builds it
 * in create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for
 * exponent i = 0..6 the midpoints of linspace(0.1, 1, 2^i + 1) times
 * 10^(i-6), in f32. The values are listed rather than recomputed because
 * torch's f32 linspace rounds some of them differently from a plain loop
 * (by one ulp); tests/runtime/test_nf4.c checks them against the reference
 * kit bit for bit. The map is -(these, reversed), 0, these, 1. */
static const float dynamic8_positive[127] = {
    0x1.27476ep-21f, 0x1.b43528p-19f, 0x1.040bfep-17f, 0x1.64840cp-16f, 0x1.6f0068p-15f, 0x1.15df66p-14f,
    0x1.743e96p-14f, 0x1.47ae16p-13f, 0x1.19ce0ap-12f, 0x1.8fc506p-12f, 0x1.02de02p-11f, 0x1.3dd982p-11f,
    0x1.78d5p-11f, 0x1.b3d07cp-11f, 0x1.eecbfep-11f, 0x1.4fdf3ap-10f, 0x1.e353f8p-10f, 0x1.3b645ap-9f, 0x1.851eb8p-9f,
    0x1.ced914p-9f, 0x1.0c49bap-8f, 0x1.3126e8p-8f, 0x1.56041ap-8f, 0x1.7ae148p-8f, 0x1.9fbe76p-8f, 0x1.c49ba6p-8f,
    0x1.e978d4p-8f, 0x1.072b02p-7f, 0x1.19999ap-7f, 0x1.2c083p-7f, 0x1.3e76c8p-7f, 0x1.75c29p-7f, 0x1.d1eb86p-7f,
    0x1.170a3ep-6f, 0x1.451eb8p-6f, 0x1.733334p-6f, 0x1.a147aep-6f, 0x1.cf5c26p-6f, 0x1.fd70a4p-6f, 0x1.15c28ep-5f,
    0x1.2ccccep-5f, 0x1.43d70ap-5f, 0x1.5ae146p-5f, 0x1.71eb86p-5f, 0x1.88f5c2p-5f, 0x1.ap-5f, 0x1.b70a3ep-5f,
    0x1.ce147ap-5f, 0x1.e51ebap-5f, 0x1.fc28f4p-5f, 0x1.09999ap-4f, 0x1.151ebap-4f, 0x1.20a3d6p-4f, 0x1.2c28f6p-4f,
    0x1.37ae14p-4f, 0x1.433334p-4f, 0x1.4eb85p-4f, 0x1.5a3d7p-4f, 0x1.65c29p-4f, 0x1.7147aep-4f, 0x1.7ccccep-4f,
    0x1.8851eap-4f, 0x1.93d70ap-4f, 0x1.b66668p-4f, 0x1.fp-4f, 0x1.14ccccp-3f, 0x1.31999ap-3f, 0x1.4e6666p-3f,
    0x1.6b3332p-3f, 0x1.88p-3f, 0x1.a4ccccp-3f, 0x1.c1999ap-3f, 0x1.de6668p-3f, 0x1.fb3334p-3f, 0x1.0cp-2f,
    0x1.1a6668p-2f, 0x1.28ccccp-2f, 0x1.373334p-2f, 0x1.459998p-2f, 0x1.54p-2f, 0x1.626664p-2f, 0x1.70ccccp-2f,
    0x1.7f3334p-2f, 0x1.8d9998p-2f, 0x1.9cp-2f, 0x1.aa6664p-2f, 0x1.b8ccccp-2f, 0x1.c73334p-2f, 0x1.d59998p-2f,
    0x1.e4p-2f, 0x1.f26668p-2f, 0x1.006666p-1f, 0x1.07999ap-1f, 0x1.0eccccp-1f, 0x1.16p-1f, 0x1.1d3334p-1f,
    0x1.246668p-1f, 0x1.2b999ap-1f, 0x1.32ccccp-1f, 0x1.3ap-1f, 0x1.413334p-1f, 0x1.486666p-1f, 0x1.4f999ap-1f,
    0x1.56cccep-1f, 0x1.5ep-1f, 0x1.653334p-1f, 0x1.6c6668p-1f, 0x1.73999ap-1f, 0x1.7acccep-1f, 0x1.82p-1f,
    0x1.893334p-1f, 0x1.906666p-1f, 0x1.979998p-1f, 0x1.9eccccp-1f, 0x1.a6p-1f, 0x1.ad3332p-1f, 0x1.b46666p-1f,
    0x1.bb9998p-1f, 0x1.c2ccccp-1f, 0x1.cap-1f, 0x1.d13334p-1f, 0x1.d86666p-1f, 0x1.df9998p-1f, 0x1.e6ccccp-1f,
    0x1.eep-1f, 0x1.f53332p-1f, 0x1.fc6666p-1f,
};

void vkl_dynamic8_table(float table[256])
{
    for (int i = 0; i < 127; i++) {
        table[126 - i] = -dynamic8_positive[i];
        table[128 + i] = dynamic8_positive[i];
    }
    table[127] = 0.0f;
    table[255] = 1.0f;
}

/* bitsandbytes' dQuantize (no stochastic rounding): a binary search over the
 * sorted map, then the nearer of the two values around x by their f32 midpoint. */
static uint8_t dynamic8_code(const float *code, float x)
{
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f, val = code[pivot];
    for (int i = 64; i > 0; i >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += i;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= i;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255) upper = code[upper_pivot];
    if (lower_pivot == 0) lower = code[lower_pivot];
    if (x > val) return (uint8_t)(x > (upper + val) * 0.5f ? upper_pivot : pivot);
    return (uint8_t)(x < (lower + val) * 0.5f ? lower_pivot : pivot);
}

void vkl_nf4_double_quant(const float *absmax, uint64_t nb, float *offset, uint8_t *q, float *absmax2)
{
    float table[256];
    vkl_dynamic8_table(table);
    /* the mean in double, rounded once (what the reference kit's offsets are) */
    double sum = 0;
    for (uint64_t i = 0; i < nb; i++) sum += absmax[i];
    float off = nb ? (float)(sum / (double)nb) : 0.0f;
    *offset = off;
    for (uint64_t b0 = 0; b0 < nb; b0 += VKL_NF4_DQ_BLOCK) {
        uint64_t b1 = b0 + VKL_NF4_DQ_BLOCK < nb ? b0 + VKL_NF4_DQ_BLOCK : nb;
        float m = 0.0f;
        for (uint64_t i = b0; i < b1; i++) m = fmaxf(m, fabsf(absmax[i] - off));
        absmax2[b0 / VKL_NF4_DQ_BLOCK] = m;
        float inv = m > 0.0f ? 1.0f / m : 0.0f;
        for (uint64_t i = b0; i < b1; i++) q[i] = dynamic8_code(table, (absmax[i] - off) * inv);
    }
}

void vkl_nf4_double_dequant(const uint8_t *q, const float *absmax2, float offset, uint64_t nb, float *absmax)
{
    float table[256];
    vkl_dynamic8_table(table);
    for (uint64_t i = 0; i < nb; i++) absmax[i] = table[q[i]] * absmax2[i / VKL_NF4_DQ_BLOCK] + offset;
}

int vkl_nf4_pack(const float *x, uint64_t n, int double_quant, void *dst, vkl_err *e)
{
    vkl_quant_layout l;
    vkl_quant_layout_of(VKL_NF4, n, &l);
    uint8_t *d = dst;
    memset(d, 0, (size_t)l.total_bytes);
    float *absmax = (float *)(d + l.scale_offset); /* 16-byte aligned within dst */
    float *tmp = malloc(sizeof(float) * (size_t)(l.nblocks ? l.nblocks : 1));
    if (!tmp) return vkl_fail(e, "out of host memory quantising %llu elements", (unsigned long long)n);
    int rc = vkl_nf4_quantize(x, n, d, tmp, e);
    if (!rc && double_quant) {
        uint64_t nb2 = (l.nblocks + VKL_NF4_DQ_BLOCK - 1) / VKL_NF4_DQ_BLOCK;
        uint8_t *q = malloc((size_t)(l.nblocks ? l.nblocks : 1));
        float *a2 = malloc(sizeof(float) * (size_t)(nb2 ? nb2 : 1)), off;
        if (!q || !a2) {
            rc = vkl_fail(e, "out of host memory quantising %llu elements", (unsigned long long)n);
        } else {
            vkl_nf4_double_quant(tmp, l.nblocks, &off, q, a2);
            vkl_nf4_double_dequant(q, a2, off, l.nblocks, tmp);
        }
        free(q);
        free(a2);
    }
    if (!rc) memcpy(absmax, tmp, sizeof(float) * (size_t)l.nblocks);
    free(tmp);
    return rc;
}

void vkl_nf4_unpack(const void *src, uint64_t n, float *y)
{
    vkl_quant_layout l;
    vkl_quant_layout_of(VKL_NF4, n, &l);
    const uint8_t *s = src;
    for (uint64_t b0 = 0; b0 < n; b0 += VKL_NF4_BLOCK) {
        float m;
        memcpy(&m, s + l.scale_offset + 4 * (b0 / VKL_NF4_BLOCK), 4);
        uint64_t b1 = b0 + VKL_NF4_BLOCK < n ? b0 + VKL_NF4_BLOCK : n;
        for (uint64_t i = b0; i < b1; i++) {
            uint8_t c = (uint8_t)(i & 1 ? s[i >> 1] & 15 : s[i >> 1] >> 4);
            y[i] = vkl_nf4_levels[c] * m;
        }
    }
}
