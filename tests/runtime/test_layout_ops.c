/* contiguous, upsample_nearest2x and concat against their CPU references:
 * odd shapes, permuted (strided) inputs, f32/f16/bf16, every device profile,
 * and windows under a 64 KiB binding limit. Copies are exact. */
#include "vkl_test.h"
#include "ops.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

static void plan_run(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
}

static float *rand_array(vkl_test_rng *r, int64_t n, vkl_dtype dt)
{
    float *a = malloc(sizeof(float) * (size_t)n);
    vkl_test_fill(r, a, (size_t)n, -100, 100);
    for (int64_t i = 0; i < n; i++) {
        if (dt == VKL_F16) a[i] = vkl_f16_to_f32(vkl_f32_to_f16(a[i]));
        if (dt == VKL_BF16) a[i] = vkl_bf16_to_f32(vkl_f32_to_bf16(a[i]));
    }
    return a;
}

/* the view of a contiguous `stored` tensor under perm, as 4-D shape/strides */
static void permuted(const int64_t stored[4], const int perm[4], int64_t vs[4], int64_t vst[4])
{
    int64_t st[4] = {stored[1] * stored[2] * stored[3], stored[2] * stored[3], stored[3], 1};
    for (int i = 0; i < 4; i++) {
        vs[i] = stored[perm[i]];
        vst[i] = st[perm[i]];
    }
}

static void random_perm(vkl_test_rng *r, int perm[4])
{
    for (int i = 0; i < 4; i++) perm[i] = i;
    for (int i = 3; i > 0; i--) {
        int j = vkl_test_rng_int(r, 0, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static void check_contiguous(vkl_ctx *c, vkl_test_rng *r, const int64_t stored[4], vkl_dtype dt, const int perm[4])
{
    int64_t n = stored[0] * stored[1] * stored[2] * stored[3];
    float *x = rand_array(r, n, dt);
    vkl_tensor *tx = vkl_test_upload(c, dt, 4, stored, x);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_contiguous(g, vkl_permute(g, tx, perm));
    assert_non_null(y);
    assert_int_equal(y->dtype, dt);
    vkl_graph_keep(g, y);
    plan_run(g);
    if (n * 4 > 65536) assert_true(vkl_graph_dispatch_count(g) > 1); /* only under binding=64K */
    float *got = vkl_test_download(c, y);
    int64_t vs[4], vst[4];
    permuted(stored, perm, vs, vst);
    float *want = malloc(sizeof(float) * (size_t)n);
    vkl_ref_contiguous(x, vs, vst, want);
    vkl_test_assert_close("contiguous", got, want, (size_t)n, 0, 0);
    free(x); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(tx);
}

static void contiguous_permuted(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 31);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 9; trial++) {
            int64_t s[4] = {vkl_test_rng_int(&r, 1, 3), vkl_test_rng_int(&r, 1, 7), vkl_test_rng_int(&r, 1, 19),
                            vkl_test_rng_int(&r, 1, 23) | 1};
            int perm[4];
            random_perm(&r, perm);
            check_contiguous(c, &r, s, (vkl_dtype)(trial % 3), perm);
        }
        vkl_test_ctx_done(c);
    }
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    int64_t big[4] = {3, 37, 41, 29};
    int perm[4] = {2, 0, 3, 1};
    check_contiguous(c, &r, big, VKL_F32, perm);
    int64_t half[4] = {5, 7, 31, 29};   /* 16-bit y: flat windows of whole words */
    int perm2[4] = {0, 3, 2, 1};
    check_contiguous(c, &r, half, VKL_BF16, perm2);
    vkl_test_ctx_done(c);
}

static void check_upsample(vkl_ctx *c, vkl_test_rng *r, const int64_t s[4], vkl_dtype dt, int transposed)
{
    int64_t n = s[0] * s[1] * s[2] * s[3];
    float *x = rand_array(r, n, dt);
    /* transposed: stored as [N,C,W,H] and viewed back as [N,C,H,W] */
    int64_t stored[4] = {s[0], s[1], transposed ? s[3] : s[2], transposed ? s[2] : s[3]};
    vkl_tensor *tx = vkl_test_upload(c, dt, 4, stored, x);
    vkl_graph *g = vkl_graph_new(c);
    int perm[4] = {0, 1, 3, 2};
    vkl_tensor *y = vkl_upsample_nearest2x(g, transposed ? vkl_permute(g, tx, perm) : tx);
    assert_non_null(y);
    vkl_graph_keep(g, y);
    plan_run(g);
    if (n * 16 > 65536) assert_true(vkl_graph_dispatch_count(g) > 2);
    float *got = vkl_test_download(c, y);
    float *xc = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)(4 * n));
    if (transposed) {
        int64_t vs[4], vst[4];
        permuted(stored, perm, vs, vst);
        vkl_ref_contiguous(x, vs, vst, xc);
    } else {
        memcpy(xc, x, sizeof(float) * (size_t)n);
    }
    vkl_ref_upsample_nearest2x(xc, s[0], s[1], s[2], s[3], want);
    assert_int_equal(vkl_tensor_nelem(y), 4 * n);
    vkl_test_assert_close("upsample_nearest2x", got, want, (size_t)(4 * n), 0, 0);
    free(x); free(xc); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(tx);
}

static void upsample(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 32);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 6; trial++) {
            int64_t s[4] = {vkl_test_rng_int(&r, 1, 2), vkl_test_rng_int(&r, 1, 5), vkl_test_rng_int(&r, 1, 13),
                            vkl_test_rng_int(&r, 1, 11)};
            check_upsample(c, &r, s, (vkl_dtype)(trial % 3), trial % 2);
        }
        vkl_test_ctx_done(c);
    }
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    int64_t planes[4] = {2, 9, 37, 41};   /* windows of whole channel planes */
    check_upsample(c, &r, planes, VKL_F32, 0);
    int64_t rows[4] = {1, 2, 67, 69};     /* a plane is split at row 67: odd phase */
    check_upsample(c, &r, rows, VKL_F16, 1);
    vkl_test_ctx_done(c);
}

static void check_concat(vkl_ctx *c, vkl_test_rng *r, const int64_t as[4], const int64_t bs[4], int d, vkl_dtype dt,
                         int transposed)
{
    int64_t na = as[0] * as[1] * as[2] * as[3], nb = bs[0] * bs[1] * bs[2] * bs[3];
    float *a = rand_array(r, na, dt), *b = rand_array(r, nb, dt);
    vkl_tensor *ta = vkl_test_upload(c, dt, 4, as, a), *tb;
    vkl_graph *g = vkl_graph_new(c);
    float *bc = malloc(sizeof(float) * (size_t)nb);
    int perm[4] = {0, 1, 3, 2};
    if (transposed) {
        /* b read through a permuted view of a [.., W, H] tensor */
        int64_t stored[4] = {bs[0], bs[1], bs[3], bs[2]};
        tb = vkl_test_upload(c, dt, 4, stored, b);
        int64_t vs[4], vst[4];
        permuted(stored, perm, vs, vst);
        vkl_ref_contiguous(b, vs, vst, bc);
    } else {
        tb = vkl_test_upload(c, dt, 4, bs, b);
        memcpy(bc, b, sizeof(float) * (size_t)nb);
    }
    vkl_tensor *y = vkl_concat(g, ta, transposed ? vkl_permute(g, tb, perm) : tb, d);
    if (!y) {
        print_error("concat: %s\n", vkl_graph_error(g));
        fail();
    }
    vkl_graph_keep(g, y);
    plan_run(g);
    if ((na + nb) * 4 > 65536) assert_true(vkl_graph_dispatch_count(g) > 2);
    float *got = vkl_test_download(c, y), *want = malloc(sizeof(float) * (size_t)(na + nb));
    vkl_ref_concat(a, as, bc, bs, d, want);
    vkl_test_assert_close("concat", got, want, (size_t)(na + nb), 0, 0);
    free(a); free(b); free(bc); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(ta);
    vkl_tensor_free(tb);
}

static void concat(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 33);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 8; trial++) {
            int d = trial % 4;
            int64_t as[4] = {vkl_test_rng_int(&r, 1, 3), vkl_test_rng_int(&r, 1, 6), vkl_test_rng_int(&r, 1, 9),
                             vkl_test_rng_int(&r, 1, 11)};
            int64_t bs[4] = {as[0], as[1], as[2], as[3]};
            bs[d] = vkl_test_rng_int(&r, 1, 7);
            check_concat(c, &r, as, bs, d, (vkl_dtype)(trial % 3), trial >= 4);
        }
        vkl_test_ctx_done(c);
    }
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    int64_t as[4] = {2, 40, 17, 19}, bs[4] = {2, 33, 17, 19};   /* UNet skip: channels */
    check_concat(c, &r, as, bs, 1, VKL_F32, 1);
    int64_t as0[4] = {3, 5, 31, 37}, bs0[4] = {2, 5, 31, 37};
    check_concat(c, &r, as0, bs0, 0, VKL_F16, 0);
    vkl_test_ctx_done(c);
}

static void layout_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t as[4] = {1, 2, 3, 4}, bs[4] = {1, 2, 5, 5}, xs[2] = {3, 4};
    vkl_tensor *a = vkl_tensor_new(c, VKL_F32, 4, as, &e), *b = vkl_tensor_new(c, VKL_F32, 4, bs, &e);
    vkl_tensor *h = vkl_tensor_new(c, VKL_F16, 4, as, &e), *x2 = vkl_tensor_new(c, VKL_F32, 2, xs, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_concat(g, a, b, 2));
    assert_non_null(strstr(vkl_graph_error(g), "differ in dimension 3"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_concat(g, a, h, 1));
    assert_non_null(strstr(vkl_graph_error(g), "same dtype"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_concat(g, a, a, 4));
    assert_non_null(strstr(vkl_graph_error(g), "out of range"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_upsample_nearest2x(g, x2));
    assert_non_null(strstr(vkl_graph_error(g), "[N, C, H, W]"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);   /* negative dim counts from the end */
    vkl_tensor *y = vkl_concat(g, a, a, -1);
    assert_non_null(y);
    assert_int_equal(y->shape[3], 8);
    vkl_graph_free(g);
    vkl_tensor_free(a); vkl_tensor_free(b); vkl_tensor_free(h); vkl_tensor_free(x2);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(contiguous_permuted),
        cmocka_unit_test(upsample),
        cmocka_unit_test(concat),
        cmocka_unit_test(layout_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
