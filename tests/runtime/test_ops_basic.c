/* The first ops (elementwise, unary, reductions, conversion, matmul) against
 * their CPU references on random odd shapes, in every device profile, under
 * validation. */
#include "vkl_test.h"
#include "ops.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void shape4(int nd, const int64_t *shape, int64_t s4[4], int64_t st4[4])
{
    int64_t st = 1;
    for (int i = 3; i >= 0; i--) {
        int k = i - (4 - nd);
        s4[i] = k >= 0 ? shape[k] : 1;
        st4[i] = s4[i] == 1 ? 0 : st;
        st *= s4[i];
    }
}

static void binary_broadcast(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 1);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 12; trial++) {
            int64_t ys[4] = {vkl_test_rng_int(&r, 1, 3), vkl_test_rng_int(&r, 1, 5), vkl_test_rng_int(&r, 1, 37),
                             vkl_test_rng_int(&r, 1, 67)};
            int64_t as[4], bs[4];
            for (int i = 0; i < 4; i++) {
                as[i] = vkl_test_rng_int(&r, 0, 3) ? ys[i] : 1;
                bs[i] = vkl_test_rng_int(&r, 0, 3) ? ys[i] : 1;
                ys[i] = as[i] > bs[i] ? as[i] : bs[i];
            }
            vkl_dtype adt = (vkl_dtype)(trial % 3), bdt = (vkl_dtype)((trial / 3) % 3);
            int64_t na = as[0] * as[1] * as[2] * as[3], nb = bs[0] * bs[1] * bs[2] * bs[3];
            float *a = malloc(sizeof(float) * na), *b = malloc(sizeof(float) * nb);
            vkl_test_fill(&r, a, na, -2, 2);
            vkl_test_fill(&r, b, nb, 0.5f, 2);
            vkl_test_round_to(adt, a, na);
            vkl_test_round_to(bdt, b, nb);
            vkl_tensor *ta = vkl_test_upload(c, adt, 4, as, a), *tb = vkl_test_upload(c, bdt, 4, bs, b);
            int op = trial % 4;
            vkl_graph *g = vkl_graph_new(c);
            vkl_tensor *y = op == 0 ? vkl_add(g, ta, tb) : op == 1 ? vkl_sub(g, ta, tb) : op == 2 ? vkl_mul(g, ta, tb)
                                                                                               : vkl_div(g, ta, tb);
            vkl_graph_keep(g, y);
            vkl_test_run_graph(g);
            float *got = vkl_test_download(c, y);
            int64_t s4[4], ast[4], bst[4];
            shape4(4, as, s4, ast);
            shape4(4, bs, s4, bst);
            int64_t ny = vkl_tensor_nelem(y);
            assert_int_equal(ny, ys[0] * ys[1] * ys[2] * ys[3]);
            float *want = malloc(sizeof(float) * ny);
            vkl_ref_binary(op, a, ast, b, bst, want, ys);
            vkl_test_assert_close("binary", got, want, (size_t)ny, 1e-6f, 1e-6f);
            free(a); free(b); free(got); free(want);
            vkl_graph_free(g);
            vkl_tensor_free(ta);
            vkl_tensor_free(tb);
        }
        vkl_test_ctx_done(c);
    }
}

static void unary_all_ops_strided(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 2);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int op = 0; op < VKL_UNARY_COUNT; op++) {
            int64_t shape[3] = {vkl_test_rng_int(&r, 1, 4), vkl_test_rng_int(&r, 1, 33), vkl_test_rng_int(&r, 1, 45)};
            int64_t n = shape[0] * shape[1] * shape[2];
            float *x = malloc(sizeof(float) * n);
            vkl_test_fill(&r, x, n, op == 9 ? 0.0f : -6.0f, 6.0f);
            vkl_tensor *tx = vkl_test_upload(c, VKL_F32, 3, shape, x);
            vkl_graph *g = vkl_graph_new(c);
            int perm[3] = {0, 2, 1};   /* read through a transposed view */
            vkl_tensor *v = vkl_permute(g, tx, perm);
            float alpha = op == 9 ? 1.0f : 0.75f, beta = op == 9 ? 0.0f : 0.25f;
            vkl_tensor *y = vkl_unary(g, v, (vkl_unary_op)op, alpha, beta);
            vkl_graph_keep(g, y);
            vkl_test_run_graph(g);
            float *got = vkl_test_download(c, y);
            int64_t ys[4] = {1, shape[0], shape[2], shape[1]};
            int64_t xs[4] = {0, shape[1] * shape[2], 1, shape[2]};
            float *want = malloc(sizeof(float) * n);
            vkl_ref_unary(op, alpha, beta, x, xs, want, ys);
            char what[64];
            snprintf(what, sizeof what, "unary %s", vkl_unary_name((vkl_unary_op)op));
            vkl_test_assert_close(what, got, want, (size_t)n, 2e-6f, 2e-6f);
            free(x); free(got); free(want);
            vkl_graph_free(g);
            vkl_tensor_free(tx);
        }
        vkl_test_ctx_done(c);
    }
}

static void reduce_rows_sum_max(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 3);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 8; trial++) {
            int64_t shape[2] = {vkl_test_rng_int(&r, 1, 70), trial == 7 ? 4099 : vkl_test_rng_int(&r, 1, 300)};
            int64_t n = shape[0] * shape[1];
            float *x = malloc(sizeof(float) * n);
            vkl_test_fill(&r, x, n, -3, 3);
            vkl_tensor *tx = vkl_test_upload(c, VKL_F32, 2, shape, x);
            vkl_graph *g = vkl_graph_new(c);
            vkl_tensor *s = vkl_sum_rows(g, tx), *m = vkl_max_rows(g, tx);
            vkl_graph_keep(g, s);
            vkl_graph_keep(g, m);
            vkl_test_run_graph(g);
            float *gs = vkl_test_download(c, s), *gm = vkl_test_download(c, m);
            float *ws = malloc(sizeof(float) * shape[0]), *wm = malloc(sizeof(float) * shape[0]);
            vkl_ref_reduce_rows(0, x, shape[0], shape[1], ws);
            vkl_ref_reduce_rows(1, x, shape[0], shape[1], wm);
            vkl_test_assert_close("sum_rows", gs, ws, (size_t)shape[0], 1e-4f, 1e-5f);
            vkl_test_assert_close("max_rows", gm, wm, (size_t)shape[0], 0, 0);
            free(x); free(gs); free(gm); free(ws); free(wm);
            vkl_graph_free(g);
            vkl_tensor_free(tx);
        }
        vkl_test_ctx_done(c);
    }
}

static void convert_roundtrip(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 4);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int to = VKL_F32; to <= VKL_BF16; to++) {
            int64_t shape[2] = {vkl_test_rng_int(&r, 1, 17), vkl_test_rng_int(&r, 1, 61) | 1}; /* odd count */
            int64_t n = shape[0] * shape[1];
            float *x = malloc(sizeof(float) * n);
            vkl_test_fill(&r, x, n, -70000, 70000);
            x[0] = 1.0f + 1.0f / 2048; /* ties */
            vkl_tensor *tx = vkl_test_upload(c, VKL_F32, 2, shape, x);
            vkl_graph *g = vkl_graph_new(c);
            vkl_tensor *h = vkl_convert(g, tx, (vkl_dtype)to);
            vkl_graph_keep(g, h);
            vkl_test_run_graph(g);
            uint16_t *raw = malloc(sizeof(float) * n);
            vkl_err e = {{0}};
            assert_int_equal(vkl_tensor_download(c, h, raw, (vkl_dtype)to, &e), 0);
            for (int64_t i = 0; i < n; i++) {
                if (to == VKL_F16) assert_int_equal(raw[i], vkl_f32_to_f16(x[i]));
                if (to == VKL_BF16) assert_int_equal(raw[i], vkl_f32_to_bf16(x[i]));
                if (to == VKL_F32) assert_true(((float *)raw)[i] == x[i]);
            }
            free(x); free(raw);
            vkl_graph_free(g);
            vkl_tensor_free(tx);
        }
        vkl_test_ctx_done(c);
    }
}

/* any m/n/k (primes and 1), batches with broadcasting, transposed operands
 * through permuted views, f32/f16/bf16 storage, with and without bias */
static void matmul_shapes(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 5);
    static const int dims[] = {1, 2, 3, 5, 7, 13, 17, 31, 64, 67, 97, 128};
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 24; trial++) {
            int64_t M = dims[vkl_test_rng_int(&r, 0, 11)], N = dims[vkl_test_rng_int(&r, 0, 11)],
                    K = dims[vkl_test_rng_int(&r, 0, 11)];
            int64_t nb0 = vkl_test_rng_int(&r, 1, 2), nb1 = vkl_test_rng_int(&r, 1, 3);
            int a_bcast = vkl_test_rng_int(&r, 0, 3) == 0, b_bcast = !a_bcast && vkl_test_rng_int(&r, 0, 2) == 0;
            int ta = trial & 1, tb = (trial >> 1) & 1, bias = (trial >> 2) & 1;
            vkl_dtype adt = trial % 3 == 2 ? VKL_F16 : VKL_F32;
            vkl_dtype bdt = (vkl_dtype)((trial / 3) % 3);
            /* storage shapes: transposed operands are stored [.., K, M] / [.., N, K] */
            int64_t sa[4] = {a_bcast ? 1 : nb0, a_bcast ? 1 : nb1, ta ? K : M, ta ? M : K};
            int64_t sb[4] = {b_bcast ? 1 : nb0, b_bcast ? 1 : nb1, tb ? N : K, tb ? K : N};
            int64_t na = sa[0] * sa[1] * sa[2] * sa[3], nbb = sb[0] * sb[1] * sb[2] * sb[3];
            float *a = malloc(sizeof(float) * na), *b = malloc(sizeof(float) * nbb), *bv = malloc(sizeof(float) * N);
            vkl_test_fill(&r, a, na, -1, 1);
            vkl_test_fill(&r, b, nbb, -1, 1);
            vkl_test_fill(&r, bv, N, -1, 1);
            vkl_test_round_to(adt, a, na);
            vkl_test_round_to(bdt, b, nbb);
            vkl_tensor *A = vkl_test_upload(c, adt, 4, sa, a), *B = vkl_test_upload(c, bdt, 4, sb, b);
            int64_t nshape[1] = {N};
            vkl_tensor *BV = vkl_test_upload(c, VKL_F32, 1, nshape, bv);
            vkl_graph *g = vkl_graph_new(c);
            int perm[4] = {0, 1, 3, 2};
            vkl_tensor *av = ta ? vkl_permute(g, A, perm) : A, *bw = tb ? vkl_permute(g, B, perm) : B;
            vkl_tensor *y = vkl_matmul_bias(g, av, bw, bias ? BV : NULL);
            vkl_graph_keep(g, y);
            vkl_test_run_graph(g);
            float *got = vkl_test_download(c, y);
            int64_t ast[4] = {a_bcast ? 0 : sa[1] * sa[2] * sa[3], a_bcast ? 0 : sa[2] * sa[3], ta ? 1 : K, ta ? M : 1};
            int64_t bst[4] = {b_bcast ? 0 : sb[1] * sb[2] * sb[3], b_bcast ? 0 : sb[2] * sb[3], tb ? 1 : N, tb ? K : 1};
            float *want = malloc(sizeof(float) * nb0 * nb1 * M * N);
            vkl_ref_matmul(a, ast, b, bst, bias ? bv : NULL, want, nb0, nb1, M, N, K);
            char what[128];
            snprintf(what, sizeof what, "matmul %lldx%lldx%lld batch %lldx%lld ta%d tb%d %s x %s", (long long)M,
                     (long long)N, (long long)K, (long long)nb0, (long long)nb1, ta, tb, vkl_dtype_name(adt),
                     vkl_dtype_name(bdt));
            assert_int_equal(vkl_tensor_nelem(y), nb0 * nb1 * M * N);
            vkl_test_assert_close(what, got, want, (size_t)(nb0 * nb1 * M * N), 1e-5f, 1e-5f);
            free(a); free(b); free(bv); free(got); free(want);
            vkl_graph_free(g);
            vkl_tensor_free(A);
            vkl_tensor_free(B);
            vkl_tensor_free(BV);
        }
        vkl_test_ctx_done(c);
    }
}

static void linear_matches_reference(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 6);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t xs[3] = {2, 77, 37}, ws[2] = {29, 37}, bs[1] = {29};
    float x[2 * 77 * 37], w[29 * 37], b[29];
    vkl_test_fill(&r, x, 2 * 77 * 37, -1, 1);
    vkl_test_fill(&r, w, 29 * 37, -1, 1);
    vkl_test_fill(&r, b, 29, -1, 1);
    vkl_test_round_to(VKL_F16, w, 29 * 37);
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 3, xs, x), *W = vkl_test_upload(c, VKL_F16, 2, ws, w), *B = vkl_test_upload(c, VKL_F32, 1, bs, b);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear(g, X, W, B);
    vkl_graph_keep(g, y);
    vkl_test_run_graph(g);
    float *got = vkl_test_download(c, y);
    static float want[2 * 77 * 29];
    int64_t ast[4] = {0, 77 * 37, 37, 1}, bst[4] = {0, 0, 1, 37};
    vkl_ref_matmul(x, ast, w, bst, b, want, 1, 2, 77, 29, 37);
    vkl_test_assert_close("linear", got, want, 2 * 77 * 29, 1e-5f, 1e-5f);
    free(got);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(W);
    vkl_tensor_free(B);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(binary_broadcast),
        cmocka_unit_test(unary_all_ops_strided),
        cmocka_unit_test(reduce_rows_sum_max),
        cmocka_unit_test(convert_roundtrip),
        cmocka_unit_test(matmul_shapes),
        cmocka_unit_test(linear_matches_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
