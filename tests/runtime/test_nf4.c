/* NF4 quantisation on the host (runtime/quant_nf4.c) bit for bit against the
 * reference kit's vectors (refkit/lm/vectors/nf4.safetensors, QLoRA /
 * bitsandbytes semantics): code tables, codes, packing, absmax, dequantised
 * values, and the double quantisation of the absmax; plus the tensor-level
 * conversions (f32 <-> NF4 layout) and refusals. */
#include "vkl_test.h"
#include "quant.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NF4_FILE "refkit/lm/vectors/nf4.safetensors"

static float *ref(const char *name, int64_t *n)
{
    return vkl_test_ref_f32(NF4_FILE, name, n);
}

/* Bitwise equality of floats (also tells -0 from 0). */
static void assert_bits(const char *what, const float *got, const float *want, int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&got[i], &want[i], 4)) {
            if (first < 0) first = i;
            bad++;
        }
    if (bad) {
        print_error("%s: %lld of %lld differ, first at %lld: got %.9g want %.9g\n", what, (long long)bad, (long long)n,
                    (long long)first, got[first], want[first]);
        fail();
    }
    print_message("%s: %lld values bit-exact\n", what, (long long)n);
}

static void tables(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(NF4_FILE);
    int64_t n;
    float *lv = ref("nf4_code_table", &n);
    assert_int_equal(n, 16);
    assert_bits("NF4 levels", vkl_nf4_levels, lv, 16);
    float *mp = ref("nf4_midpoints", &n);
    assert_int_equal(n, 15);
    assert_bits("NF4 midpoints", vkl_nf4_midpoints, mp, 15);
    float *d8 = ref("dynamic8_code_table", &n), mine[256];
    assert_int_equal(n, 256);
    vkl_dynamic8_table(mine);
    assert_bits("dynamic 8-bit map", mine, d8, 256);
    free(lv); free(mp); free(d8);
}

static void one_matrix(const char *m, int dq)
{
    char name[64];
    int64_t n, nb, k;
    snprintf(name, sizeof name, "%s.weight", m);
    float *w = ref(name, &n);
    snprintf(name, sizeof name, "%s.absmax", m);
    float *want_absmax = ref(name, &nb);
    assert_int_equal(nb, (n + 63) / 64);
    uint8_t *packed = malloc((size_t)(n + 1) / 2);
    float *absmax = malloc(sizeof(float) * (size_t)nb), *codes = malloc(sizeof(float) * (size_t)n);
    float *pk = malloc(sizeof(float) * (size_t)(n + 1) / 2), *dq_vals = malloc(sizeof(float) * (size_t)n);
    vkl_err e = {{0}};
    assert_int_equal(vkl_nf4_quantize(w, (uint64_t)n, packed, absmax, &e), 0);
    for (int64_t i = 0; i < n; i++) codes[i] = (float)(i & 1 ? packed[i / 2] & 15 : packed[i / 2] >> 4);
    for (int64_t i = 0; i < (n + 1) / 2; i++) pk[i] = packed[i];
    snprintf(name, sizeof name, "%s absmax", m);
    assert_bits(name, absmax, want_absmax, nb);
    snprintf(name, sizeof name, "%s.codes_u8", m);
    float *want_codes = ref(name, &k);
    assert_int_equal(k, n);
    assert_bits(name, codes, want_codes, n);
    snprintf(name, sizeof name, "%s.packed_u8", m);
    float *want_packed = ref(name, &k);
    assert_int_equal(k, (n + 1) / 2);
    assert_bits(name, pk, want_packed, k);
    vkl_nf4_dequantize(packed, absmax, (uint64_t)n, dq_vals);
    snprintf(name, sizeof name, "%s.dequant", m);
    float *want_dq = ref(name, &k);
    assert_bits(name, dq_vals, want_dq, n);
    free(want_codes); free(want_packed); free(want_dq);
    if (dq) {
        uint64_t nb2 = ((uint64_t)nb + 255) / 256;
        uint8_t *q = malloc((size_t)nb);
        float *a2 = malloc(sizeof(float) * nb2), off, *qf = malloc(sizeof(float) * (size_t)nb);
        float *adq = malloc(sizeof(float) * (size_t)nb);
        vkl_nf4_double_quant(absmax, (uint64_t)nb, &off, q, a2);
        for (int64_t i = 0; i < nb; i++) qf[i] = q[i];
        snprintf(name, sizeof name, "%s.dq.offset", m);
        float *want_off = ref(name, &k);
        assert_int_equal(k, 1);
        assert_bits(name, &off, want_off, 1);
        snprintf(name, sizeof name, "%s.dq.absmax_q_u8", m);
        float *want_q = ref(name, &k);
        assert_bits(name, qf, want_q, nb);
        snprintf(name, sizeof name, "%s.dq.absmax2", m);
        float *want_a2 = ref(name, &k);
        assert_int_equal(k, (int64_t)nb2);
        assert_bits(name, a2, want_a2, k);
        vkl_nf4_double_dequant(q, a2, off, (uint64_t)nb, adq);
        snprintf(name, sizeof name, "%s.dq.absmax_dequant", m);
        float *want_adq = ref(name, &k);
        assert_bits(name, adq, want_adq, nb);
        vkl_nf4_dequantize(packed, adq, (uint64_t)n, dq_vals);
        snprintf(name, sizeof name, "%s.dq.dequant", m);
        float *want_dqdq = ref(name, &k);
        assert_bits(name, dq_vals, want_dqdq, n);
        /* the packed tensor layout with double quantisation holds the same values */
        vkl_quant_layout l;
        assert_int_equal(vkl_quant_layout_of(VKL_NF4, (uint64_t)n, &l), 0);
        void *lay = malloc(l.total_bytes);
        assert_int_equal(vkl_nf4_pack(w, (uint64_t)n, 1, lay, &e), 0);
        vkl_nf4_unpack(lay, (uint64_t)n, dq_vals);
        assert_bits("double-quantised layout", dq_vals, want_dqdq, n);
        free(lay);
        /* VKL_NF4_DQ keeps the double quantisation's own parts: the same codes,
         * u8 scale codes, absmax2, offset and map, and the same values */
        assert_int_equal(vkl_quant_layout_of(VKL_NF4_DQ, (uint64_t)n, &l), 0);
        assert_int_equal(l.nblocks2, nb2);
        lay = malloc(l.total_bytes);
        assert_int_equal(vkl_convert_host(w, VKL_F32, lay, VKL_NF4_DQ, (size_t)n, &e), 0);
        assert_memory_equal(lay, packed, (size_t)(n + 1) / 2);
        assert_memory_equal((uint8_t *)lay + l.qcode_offset, q, (size_t)nb);
        float stored[260], d8[256];
        memcpy(stored, (uint8_t *)lay + l.scale_offset, sizeof stored);
        vkl_dynamic8_table(d8);
        assert_bits("nf4dq map", stored, d8, 256);
        assert_bits("nf4dq offset", &stored[256], want_off, 1);
        float *a2s = malloc(sizeof(float) * nb2);
        memcpy(a2s, (uint8_t *)lay + l.absmax2_offset, sizeof(float) * nb2);
        assert_bits("nf4dq absmax2", a2s, want_a2, (int64_t)nb2);
        assert_int_equal(vkl_convert_host(lay, VKL_NF4_DQ, dq_vals, VKL_F32, (size_t)n, &e), 0);
        assert_bits("nf4dq -> f32", dq_vals, want_dqdq, n);
        free(a2s);
        free(lay); free(q); free(a2); free(qf); free(adq); free(want_off); free(want_q); free(want_a2);
        free(want_adq); free(want_dqdq);
    }
    free(w); free(want_absmax); free(packed); free(absmax); free(codes); free(pk); free(dq_vals);
}

static void gate_matrix(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(NF4_FILE);
    one_matrix("gate", 1);
}

static void rand_matrix(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(NF4_FILE);
    one_matrix("rand", 1);
}

static void odd_matrix(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(NF4_FILE);
    one_matrix("odd", 0);
}

/* vkl_convert_host f32 -> NF4 layout -> f32 against the reference dequantised
 * values; sizes; a zero block; refusals. */
static void layout_and_refusals(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(NF4_FILE);
    int64_t n, k;
    float *w = ref("odd.weight", &n), *want = ref("odd.dequant", &k);
    vkl_quant_layout l;
    assert_int_equal(vkl_quant_layout_of(VKL_NF4, (uint64_t)n, &l), 0);
    /* 2343 elements: 1172 code bytes, scales at 1184, 37 of them */
    assert_int_equal(l.code_bytes, 1172);
    assert_int_equal(l.scale_offset, 1184);
    assert_int_equal(l.nblocks, 37);
    assert_int_equal(vkl_dtype_bytes(VKL_NF4, (uint64_t)n), 1184 + 4 * 37);
    assert_int_equal(vkl_dtype_bytes(VKL_F16, 10), 20);
    void *lay = malloc(l.total_bytes);
    float *back = malloc(sizeof(float) * (size_t)n);
    vkl_err e = {{0}};
    assert_int_equal(vkl_convert_host(w, VKL_F32, lay, VKL_NF4, (size_t)n, &e), 0);
    assert_int_equal(vkl_convert_host(lay, VKL_NF4, back, VKL_F32, (size_t)n, &e), 0);
    assert_bits("f32 -> nf4 -> f32", back, want, n);
    assert_int_equal(vkl_convert_host(lay, VKL_NF4, back, VKL_F16, (size_t)n, &e), -1);
    assert_non_null(strstr(e.msg, "nf4"));
    /* a block of zeros stays exact zeros */
    float z[70] = {0};
    z[69] = 0.5f;
    assert_int_equal(vkl_convert_host(z, VKL_F32, lay, VKL_NF4, 70, &e), 0);
    assert_int_equal(vkl_convert_host(lay, VKL_NF4, back, VKL_F32, 70, &e), 0);
    for (int i = 0; i < 69; i++) assert_true(back[i] == 0.0f && !signbit(back[i]));
    assert_true(back[69] == 0.5f);
    /* non-finite weights are refused, naming the element */
    z[3] = NAN;
    assert_int_equal(vkl_convert_host(z, VKL_F32, lay, VKL_NF4, 70, &e), -1);
    assert_non_null(strstr(e.msg, "element 3"));
    /* NF4_DQ: codes 1172 bytes, map at 1184 (+1040), absmax2 at 2224 (one),
     * u8 scale codes at 2240 (37), end rounded to 16 */
    assert_int_equal(vkl_quant_layout_of(VKL_NF4_DQ, (uint64_t)n, &l), 0);
    assert_int_equal(l.scale_offset, 1184);
    assert_int_equal(l.absmax2_offset, 2224);
    assert_int_equal(l.nblocks2, 1);
    assert_int_equal(l.qcode_offset, 2240);
    assert_int_equal(vkl_dtype_bytes(VKL_NF4_DQ, (uint64_t)n), 2288);
    /* a big weight: about 0.516 bytes per element (f16: 2) */
    uint64_t big = 2048ull * 5632;
    assert_true(vkl_dtype_bytes(VKL_NF4_DQ, big) < big / 2 + big / 64 + big / 4096 + 2048);
    /* zeros and refusals as NF4 */
    float zz[70] = {0};
    zz[69] = 0.5f;
    void *lay2 = malloc(vkl_dtype_bytes(VKL_NF4_DQ, 70));
    assert_int_equal(vkl_convert_host(zz, VKL_F32, lay2, VKL_NF4_DQ, 70, &e), 0);
    assert_int_equal(vkl_convert_host(lay2, VKL_NF4_DQ, back, VKL_F32, 70, &e), 0);
    for (int i = 0; i < 69; i++) assert_true(back[i] == 0.0f && !signbit(back[i]));
    print_message("nf4dq of a zero block and 0.5: %.9g\n", back[69]);
    zz[5] = INFINITY;
    assert_int_equal(vkl_convert_host(zz, VKL_F32, lay2, VKL_NF4_DQ, 70, &e), -1);
    assert_non_null(strstr(e.msg, "element 5"));
    free(lay2);
    vkl_dtype dt;
    assert_int_equal(vkl_dtype_parse("nf4dq", &dt), 0);
    assert_int_equal(dt, VKL_NF4_DQ);
    assert_int_equal(vkl_dtype_parse("nf4", &dt), 0);
    assert_int_equal(dt, VKL_NF4);
    assert_int_equal(vkl_dtype_size(VKL_NF4), 0);
    free(lay); free(back); free(w); free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tables),
        cmocka_unit_test(gate_matrix),
        cmocka_unit_test(rand_matrix),
        cmocka_unit_test(odd_matrix),
        cmocka_unit_test(layout_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
