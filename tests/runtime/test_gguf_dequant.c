/* GGUF block formats: for every type, the values of the blocks computed here
 * straight from the documented block layouts (plain loops over each block,
 * written independently of runtime/ref/ref_gguf.c), and both the CPU
 * dequantiser and the shader must give exactly those floats, bit for bit;
 * blocks come from the quantiser and from random bytes (every code, every
 * scale). The quantiser's round trip stays within half a code step. The
 * shader also runs with a tiny binding limit (many windows, blocks straddling
 * words) and into f16/bf16 weights. */
#include "vkl_test.h"

#include "io/gguf.h"
#include "io/gguf_device.h"
#include "ref/ref_gguf.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const int all_types[] = {VKL_GQ_F32,  VKL_GQ_F16,  VKL_GQ_BF16, VKL_GQ_Q4_0, VKL_GQ_Q4_1, VKL_GQ_Q5_0,
                                VKL_GQ_Q5_1, VKL_GQ_Q8_0, VKL_GQ_Q4_K, VKL_GQ_Q5_K, VKL_GQ_Q6_K};
#define NTYPES (int)(sizeof all_types / sizeof *all_types)

/* ---- the formats, written out from their documentation */

static float f16(const uint8_t *p) { return vkl_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

/* Q4_K/Q5_K: 12 bytes hold eight 6-bit scales and mins: sub-blocks 0-3 in the
 * low 6 bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 in the
 * nibbles of bytes 8-11 (scale low, min high) with their top two bits in the
 * top bits of bytes 0-3 (scales) and 4-7 (mins). */
static void k_scale(const uint8_t *s, int j, float *sc, float *mn)
{
    int a, b;
    if (j < 4) {
        a = s[j] & 0x3f;
        b = s[4 + j] & 0x3f;
    } else {
        a = (s[8 + j - 4] & 0x0f) + 16 * (s[j - 4] >> 6);
        b = (s[8 + j - 4] >> 4) + 16 * (s[j] >> 6);
    }
    *sc = (float)a;
    *mn = (float)b;
}

static void formula(int type, const uint8_t *blocks, int64_t nelem, float *y)
{
    int bytes = vkl_gguf_type_bytes(type), blk = vkl_gguf_type_block(type);
    for (int64_t bi = 0; bi < nelem / blk; bi++) {
        const uint8_t *b = blocks + bi * bytes;
        float *o = y + bi * blk;
        switch (type) {
        case VKL_GQ_F32: memcpy(o, b, 4); break;
        case VKL_GQ_F16: o[0] = f16(b); break;
        case VKL_GQ_BF16: {
            uint32_t u = (uint32_t)(b[0] | b[1] << 8) << 16;
            memcpy(o, &u, 4);
            break;
        }
        case VKL_GQ_Q8_0: /* d, then 32 signed bytes */
            for (int j = 0; j < 32; j++) o[j] = (float)(int8_t)b[2 + j] * f16(b);
            break;
        case VKL_GQ_Q4_0: /* d, 16 bytes: low nibbles are elements 0-15, high ones 16-31 */
            for (int j = 0; j < 16; j++) {
                o[j] = (float)((b[2 + j] & 0x0f) - 8) * f16(b);
                o[j + 16] = (float)((b[2 + j] >> 4) - 8) * f16(b);
            }
            break;
        case VKL_GQ_Q4_1: /* d, m, nibbles as Q4_0 */
            for (int j = 0; j < 16; j++) {
                o[j] = (float)(b[4 + j] & 0x0f) * f16(b) + f16(b + 2);
                o[j + 16] = (float)(b[4 + j] >> 4) * f16(b) + f16(b + 2);
            }
            break;
        case VKL_GQ_Q5_0: /* d, 32 high bits (element j = bit j), nibbles as Q4_0 */
        case VKL_GQ_Q5_1: { /* d, m, high bits, nibbles */
            int hb = type == VKL_GQ_Q5_0 ? 2 : 4;
            uint32_t qh = (uint32_t)b[hb] | (uint32_t)b[hb + 1] << 8 | (uint32_t)b[hb + 2] << 16 | (uint32_t)b[hb + 3] << 24;
            for (int j = 0; j < 16; j++) {
                int x0 = (b[hb + 4 + j] & 0x0f) + 16 * (int)((qh >> j) & 1);
                int x1 = (b[hb + 4 + j] >> 4) + 16 * (int)((qh >> (j + 16)) & 1);
                if (type == VKL_GQ_Q5_0) {
                    o[j] = (float)(x0 - 16) * f16(b);
                    o[j + 16] = (float)(x1 - 16) * f16(b);
                } else {
                    o[j] = (float)x0 * f16(b) + f16(b + 2);
                    o[j + 16] = (float)x1 * f16(b) + f16(b + 2);
                }
            }
            break;
        }
        case VKL_GQ_Q4_K: /* d, dmin, scales[12], qs[128]: 4 chunks of 64 = 32 low nibbles + 32 high nibbles */
        case VKL_GQ_Q5_K: { /* d, dmin, scales[12], qh[32], qs[128]: bit 2c / 2c+1 of qh[l] is the fifth bit */
            const uint8_t *qs = b + (type == VKL_GQ_Q4_K ? 16 : 48), *qh = b + 16;
            for (int c = 0; c < 4; c++) {
                float sc0, m0, sc1, m1;
                k_scale(b + 4, 2 * c, &sc0, &m0);
                k_scale(b + 4, 2 * c + 1, &sc1, &m1);
                float d0 = f16(b) * sc0, mm0 = f16(b + 2) * m0, d1 = f16(b) * sc1, mm1 = f16(b + 2) * m1;
                for (int l = 0; l < 32; l++) {
                    int lo = qs[32 * c + l] & 0x0f, hi = qs[32 * c + l] >> 4;
                    if (type == VKL_GQ_Q5_K) {
                        if (qh[l] & (1 << (2 * c))) lo += 16;
                        if (qh[l] & (2 << (2 * c))) hi += 16;
                    }
                    o[64 * c + l] = d0 * (float)lo - mm0;
                    o[64 * c + 32 + l] = d1 * (float)hi - mm1;
                }
            }
            break;
        }
        case VKL_GQ_Q6_K: { /* ql[128], qh[64], int8 scales[16], d; two halves of 128 */
            float d = f16(b + 208);
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
                const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
                for (int l = 0; l < 32; l++) {
                    int s = l / 16;
                    int q1 = ((ql[l] & 0x0f) | ((qh[l] & 0x03) << 4)) - 32;
                    int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 0x03) << 4)) - 32;
                    int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 0x03) << 4)) - 32;
                    int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 0x03) << 4)) - 32;
                    o[128 * h + l] = d * (float)sc[s] * (float)q1;
                    o[128 * h + l + 32] = d * (float)sc[s + 2] * (float)q2;
                    o[128 * h + l + 64] = d * (float)sc[s + 4] * (float)q3;
                    o[128 * h + l + 96] = d * (float)sc[s + 6] * (float)q4;
                }
            }
            break;
        }
        default: fail();
        }
    }
}

/* ---- data */

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = vkl_f32_to_f16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Random bytes with the f16 scale fields set to finite values (NaN scales
 * would make the bitwise comparison meaningless). */
static void random_blocks(vkl_test_rng *r, int type, uint8_t *b, int64_t nblocks)
{
    int bytes = vkl_gguf_type_bytes(type);
    for (int64_t i = 0; i < nblocks * bytes; i++) b[i] = (uint8_t)vkl_test_rng_u64(r);
    for (int64_t i = 0; i < nblocks; i++) {
        uint8_t *p = b + i * bytes;
        switch (type) {
        case VKL_GQ_F32: { float v = vkl_test_rng_uniform(r, -4, 4); memcpy(p, &v, 4); break; }
        case VKL_GQ_F16: put_f16(p, vkl_test_rng_uniform(r, -4, 4)); break;
        case VKL_GQ_BF16: p[1] &= 0xbf; break; /* exponent below 0x7f: finite */
        case VKL_GQ_Q4_1: case VKL_GQ_Q5_1: case VKL_GQ_Q4_K: case VKL_GQ_Q5_K:
            put_f16(p, vkl_test_rng_uniform(r, -0.1f, 0.1f));
            put_f16(p + 2, vkl_test_rng_uniform(r, -0.1f, 0.1f));
            break;
        case VKL_GQ_Q6_K: put_f16(p + 208, vkl_test_rng_uniform(r, -0.01f, 0.01f)); break;
        default: put_f16(p, vkl_test_rng_uniform(r, -0.1f, 0.1f)); break;
        }
    }
}

static void assert_bits_equal(const char *what, int type, const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (memcmp(&got[i], &want[i], 4)) {
            print_error("%s %s: element %lld is %.9g, the formula gives %.9g\n", vkl_gguf_type_name(type), what,
                        (long long)i, (double)got[i], (double)want[i]);
            fail();
        }
    }
}

/* nblocks of each kind of data for `type`: [quantised random values | random bytes] */
static uint8_t *make_blocks(int type, int64_t nblocks, float **values, uint64_t seed)
{
    vkl_test_rng r;
    vkl_test_rng_seed(&r, seed);
    int blk = vkl_gguf_type_block(type), bytes = vkl_gguf_type_bytes(type);
    int64_t half = nblocks / 2, n = half * blk;
    float *x = malloc(sizeof(float) * (size_t)n);
    uint8_t *b = malloc((size_t)(nblocks * bytes));
    assert_non_null(x);
    assert_non_null(b);
    /* blocks of different scales, one all zero, one constant */
    for (int64_t i = 0; i < n; i++) {
        float scale = (float)(1 + (i / blk) % 5) * 0.25f;
        x[i] = vkl_test_rng_uniform(&r, -scale, scale);
    }
    if (half > 2) {
        memset(x, 0, sizeof(float) * (size_t)blk);
        for (int j = 0; j < blk; j++) x[blk + j] = 0.75f;
    }
    vkl_err e;
    assert_int_equal(vkl_gguf_quantize(type, x, (uint64_t)n, b, &e), 0);
    random_blocks(&r, type, b + half * bytes, nblocks - half);
    *values = x;
    return b;
}

static void cpu_matches_formula(void **state)
{
    (void)state;
    for (int k = 0; k < NTYPES; k++) {
        int type = all_types[k], blk = vkl_gguf_type_block(type);
        int64_t nblocks = blk == 1 ? 1000 : 24, n = nblocks * blk;
        float *x;
        uint8_t *b = make_blocks(type, nblocks, &x, 11 + (uint64_t)k);
        float *want = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
        formula(type, b, n, want);
        assert_int_equal(vkl_ref_gguf_dequant(type, b, (uint64_t)n, got), 0);
        assert_bits_equal("CPU dequantiser", type, got, want, n);
        /* the quantiser's half: within half a step of the values (steps bounded by the block's range) */
        int64_t nq = (nblocks / 2) * blk;
        double worst = 0;
        for (int64_t i = 0; i < nq; i++) {
            double range = 0;
            int64_t b0 = i / blk * blk;
            for (int j = 0; j < blk; j++) range = fmax(range, fabs(x[b0 + j]));
            double err = fabs((double)want[i] - x[i]) / (range > 0 ? range : 1);
            worst = fmax(worst, err);
        }
        /* half a code step of the block's range (2 * largest magnitude), or a
         * whole step at the end a symmetric format clamps (Q4_0 -8..7); 10% more
         * where the step itself is quantised (6/8-bit scales of the K types, f16 d) */
        double bound = type == VKL_GQ_F32 ? 0 : type == VKL_GQ_F16 ? 1.0 / 1024 : type == VKL_GQ_BF16 ? 1.0 / 128
                       : type == VKL_GQ_Q8_0 ? 1.1 / 254 : type == VKL_GQ_Q4_0 ? 1.01 / 8 : type == VKL_GQ_Q5_0 ? 1.01 / 16
                       : type == VKL_GQ_Q4_1 ? 1.01 / 15 : type == VKL_GQ_Q5_1 ? 1.01 / 31 : type == VKL_GQ_Q4_K ? 1.1 / 15
                       : type == VKL_GQ_Q5_K ? 1.1 / 31 : 1.1 / 32;
        print_message("%-5s round trip: worst error %.4f of the block's largest magnitude (bound %.4f)\n",
                      vkl_gguf_type_name(type), worst, bound);
        assert_true(worst <= bound);
        free(x);
        free(b);
        free(want);
        free(got);
    }
}

static void shader_run(const char *profile, vkl_dtype dt)
{
    vkl_ctx *c = vkl_test_ctx(profile);
    for (int k = 0; k < NTYPES; k++) {
        int type = all_types[k], blk = vkl_gguf_type_block(type), bytes = vkl_gguf_type_bytes(type);
        int64_t nblocks = blk == 1 ? 1002 : 26, n = nblocks * blk;
        float *x;
        uint8_t *b = make_blocks(type, nblocks, &x, 101 + (uint64_t)k);
        float *want = malloc(sizeof(float) * (size_t)n);
        formula(type, b, n, want);
        vkl_err e;
        vkl_tensor *raw = vkl_gguf_raw_upload(c, b, (uint64_t)(nblocks * bytes), &e);
        assert_non_null(raw);
        int64_t shape[2] = {nblocks, blk};
        vkl_tensor *y = vkl_tensor_new(c, dt, 2, shape, &e);
        assert_non_null(y);
        vkl_graph *g = vkl_graph_new(c);
        assert_ptr_equal(vkl_gguf_dequant_into(g, raw, type, y), y);
        vkl_test_run_graph(g);
        float *got = vkl_test_download(c, y);
        if (dt == VKL_F32) {
            assert_bits_equal("shader", type, got, want, n);
        } else {
            vkl_test_round_to(dt, want, (size_t)n);
            vkl_test_assert_close(vkl_gguf_type_name(type), got, want, (size_t)n, 0, dt == VKL_F16 ? 1e-3f : 8e-3f);
        }
        vkl_graph_free(g);
        vkl_tensor_free(raw);
        vkl_tensor_free(y);
        free(got);
        free(want);
        free(x);
        free(b);
    }
    vkl_test_ctx_done(c);
}

static void shader_matches_formula(void **state)
{
    (void)state;
    shader_run(NULL, VKL_F32);
}

/* 4 KiB bindings: Q6_K output windows of 3 blocks, Q8_0 inputs of 34-byte blocks
 * starting inside words */
static void shader_windows(void **state)
{
    (void)state;
    shader_run("binding=4096", VKL_F32);
}

static void shader_into_16bit(void **state)
{
    (void)state;
    shader_run(NULL, VKL_F16);
    shader_run("portable", VKL_BF16);
}

static void refuses_bad_operands(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e;
    uint8_t bytes[34] = {0};
    vkl_tensor *raw = vkl_gguf_raw_upload(c, bytes, 34, &e);
    int64_t s64 = 64, s32 = 32, s31 = 31;
    vkl_tensor *big = vkl_tensor_new(c, VKL_F32, 1, &s64, &e), *ok = vkl_tensor_new(c, VKL_F32, 1, &s32, &e);
    vkl_tensor *odd = vkl_tensor_new(c, VKL_F32, 1, &s31, &e);
    struct { vkl_tensor *dst; int type; const char *msg; } cases[] = {
        {big, VKL_GQ_Q8_0, "fewer than"}, {odd, VKL_GQ_Q8_0, "not whole"}, {ok, 5, "not supported"},
        {ok, VKL_GQ_Q4_K, "not whole"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        vkl_graph *g = vkl_graph_new(c);
        assert_null(vkl_gguf_dequant_into(g, raw, cases[i].type, cases[i].dst));
        if (!strstr(vkl_graph_error(g), cases[i].msg)) {
            print_error("case %zu: \"%s\" lacks \"%s\"\n", i, vkl_graph_error(g), cases[i].msg);
            fail();
        }
        vkl_graph_free(g);
    }
    vkl_tensor_free(raw);
    vkl_tensor_free(big);
    vkl_tensor_free(ok);
    vkl_tensor_free(odd);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cpu_matches_formula),
        cmocka_unit_test(shader_matches_formula),
        cmocka_unit_test(shader_windows),
        cmocka_unit_test(shader_into_16bit),
        cmocka_unit_test(refuses_bad_operands),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
