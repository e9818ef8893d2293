/* Every matmul variant (register tiles with vector loads, the same with
 * scalar loads, shared-memory tiles; forced on lavapipe through
 * VKLORA_MATMUL_VARIANT) against the CPU reference: odd and aligned shapes,
 * batches (folded into M or not), broadcasting, transposed operands, 16-bit
 * storage, split bindings, and the epilogue (alpha, column scale, bias, a
 * second product) that the LoRA ops use. */
#define _POSIX_C_SOURCE 200809L
#include "vkl_test.h"
#include "ops.h"
#include "ops/matmul_internal.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

static const char *const variants[] = {"reg", "scalar", "tiled"};
static const char *const profiles[] = {"default", "portable", "binding=64K"};

static float *run_and_download(vkl_ctx *c, vkl_graph *g, vkl_tensor *y)
{
    vkl_err e = {{0}};
    if (!y || vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s %s\n", e.msg, vkl_graph_error(g));
        fail();
    }
    float *out = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(y));
    if (vkl_tensor_download(c, y, out, VKL_F32, &e)) {
        print_error("download: %s\n", e.msg);
        fail();
    }
    return out;
}

static void one_product(vkl_ctx *c, vkl_test_rng *r, const char *variant, int trial)
{
    static const int odd[] = {1, 2, 3, 5, 7, 13, 17, 31, 67, 97};
    static const int even[] = {4, 8, 12, 16, 20, 36, 64, 68, 100, 128};
    int aligned = trial % 3 != 0; /* two trials in three take the vector-load paths */
    const int *dims = aligned ? even : odd;
    int64_t M = dims[vkl_test_rng_int(r, 0, 9)], N = dims[vkl_test_rng_int(r, 0, 9)], K = dims[vkl_test_rng_int(r, 0, 9)];
    if (trial % 7 == 3) M = odd[vkl_test_rng_int(r, 0, 9)]; /* mixed */
    int64_t nb0 = vkl_test_rng_int(r, 1, 2), nb1 = vkl_test_rng_int(r, 1, 3);
    /* b broadcast over batches half the time: a linear layer, folded into M */
    int b_bcast = trial % 2 == 0, a_bcast = !b_bcast && vkl_test_rng_int(r, 0, 3) == 0;
    int ta = (trial >> 1) & 1, tb = (trial >> 2) & 1, bias = (trial >> 3) & 1;
    vkl_dtype adt = trial % 5 == 4 ? VKL_F16 : VKL_F32;
    vkl_dtype bdt = (vkl_dtype)((trial / 2) % 3);
    int64_t sa[4] = {a_bcast ? 1 : nb0, a_bcast ? 1 : nb1, ta ? K : M, ta ? M : K};
    int64_t sb[4] = {b_bcast ? 1 : nb0, b_bcast ? 1 : nb1, tb ? N : K, tb ? K : N};
    int64_t na = sa[0] * sa[1] * sa[2] * sa[3], nbb = sb[0] * sb[1] * sb[2] * sb[3];
    float *a = malloc(sizeof(float) * na), *b = malloc(sizeof(float) * nbb), *bv = malloc(sizeof(float) * N);
    vkl_test_fill(r, a, na, -1, 1);
    vkl_test_fill(r, b, nbb, -1, 1);
    vkl_test_fill(r, bv, N, -1, 1);
    vkl_test_round_to(adt, a, na);
    vkl_test_round_to(bdt, b, nbb);
    /* a broadcast b is stored 2-D, as a weight is */
    vkl_tensor *A = vkl_test_upload(c, adt, 4, sa, a), *B = vkl_test_upload(c, bdt, b_bcast ? 2 : 4, b_bcast ? sb + 2 : sb, b);
    int64_t nshape[1] = {N};
    vkl_tensor *BV = vkl_test_upload(c, VKL_F32, 1, nshape, bv);
    vkl_graph *g = vkl_graph_new(c);
    int perm4[4] = {0, 1, 3, 2}, perm2[2] = {1, 0};
    vkl_tensor *av = ta ? vkl_permute(g, A, perm4) : A;
    vkl_tensor *bw = tb ? vkl_permute(g, B, b_bcast ? perm2 : perm4) : B;
    vkl_tensor *y = vkl_matmul_bias(g, av, bw, bias ? BV : NULL);
    vkl_graph_keep(g, y);
    float *got = run_and_download(c, g, y);
    int64_t ast[4] = {a_bcast ? 0 : sa[1] * sa[2] * sa[3], a_bcast ? 0 : sa[2] * sa[3], ta ? 1 : K, ta ? M : 1};
    int64_t bst[4] = {b_bcast ? 0 : sb[1] * sb[2] * sb[3], b_bcast ? 0 : sb[2] * sb[3], tb ? 1 : N, tb ? K : 1};
    float *want = malloc(sizeof(float) * nb0 * nb1 * M * N);
    vkl_ref_matmul(a, ast, b, bst, bias ? bv : NULL, want, nb0, nb1, M, N, K);
    char what[160];
    snprintf(what, sizeof what, "%s matmul %lldx%lldx%lld batch %lldx%lld ta%d tb%d bb%d %s x %s (%s)", variant,
             (long long)M, (long long)N, (long long)K, (long long)nb0, (long long)nb1, ta, tb, b_bcast,
             vkl_dtype_name(adt), vkl_dtype_name(bdt), vkl_ctx_caps(c)->profile);
    assert_int_equal(vkl_tensor_nelem(y), nb0 * nb1 * M * N);
    vkl_test_assert_close(what, got, want, (size_t)(nb0 * nb1 * M * N), 2e-5f, 1e-5f);
    free(a); free(b); free(bv); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(A);
    vkl_tensor_free(B);
    vkl_tensor_free(BV);
}

static void matmul_every_variant(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 11);
    for (int v = 0; v < 3; v++) {
        setenv("VKLORA_MATMUL_VARIANT", variants[v], 1);
        for (int p = 0; p < 3; p++) {
            vkl_ctx *c = vkl_test_ctx(profiles[p]);
            for (int trial = 0; trial < (p == 2 ? 6 : 11); trial++) one_product(c, &r, variants[v], trial);
            vkl_test_ctx_done(c);
        }
    }
    unsetenv("VKLORA_MATMUL_VARIANT");
}

/* A linear layer of SD size on f16 weights (the vector-load path over many
 * tiles, K a multiple of 4 but not of the tile). */
static void matmul_linear_sd_size(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 12);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t T = 77, IN = 324, OUT = 200;
    int64_t xs[3] = {2, T, IN}, ws[2] = {OUT, IN};
    float *x = malloc(sizeof(float) * 2 * T * IN), *w = malloc(sizeof(float) * OUT * IN);
    vkl_test_fill(&r, x, (size_t)(2 * T * IN), -1, 1);
    vkl_test_fill(&r, w, (size_t)(OUT * IN), -0.1f, 0.1f);
    vkl_test_round_to(VKL_F16, w, (size_t)(OUT * IN));
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 3, xs, x), *W = vkl_test_upload(c, VKL_F16, 2, ws, w);
    int64_t ast[4] = {0, T * IN, IN, 1}, bst[4] = {0, 0, 1, IN};
    float *want = malloc(sizeof(float) * 2 * T * OUT);
    vkl_ref_matmul(x, ast, w, bst, NULL, want, 1, 2, T, OUT, IN);
    for (int v = 0; v < 3; v++) {
        setenv("VKLORA_MATMUL_VARIANT", variants[v], 1);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = vkl_linear(g, X, W, NULL);
        vkl_graph_keep(g, y);
        float *got = run_and_download(c, g, y);
        vkl_test_assert_close(variants[v], got, want, (size_t)(2 * T * OUT), 2e-5f, 1e-5f);
        free(got);
        vkl_graph_free(g);
    }
    unsetenv("VKLORA_MATMUL_VARIANT");
    free(x); free(w); free(want);
    vkl_tensor_free(X);
    vkl_tensor_free(W);
    vkl_test_ctx_done(c);
}

/* y = alpha * (x . w^T) * scale + bias + h . u^T, as the LoRA ops build it. */
static void matmul_epilogue(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 13);
    for (int v = 0; v < 3; v++) {
        setenv("VKLORA_MATMUL_VARIANT", variants[v], 1);
        for (int p = 0; p < 3; p++) {
            vkl_ctx *c = vkl_test_ctx(profiles[p]);
            for (int trial = 0; trial < 4; trial++) {
                int64_t B = 1 + trial % 2, T = trial < 2 ? 37 : 160, IN = trial % 2 ? 20 : 23, OUT = 3 + 8 * trial,
                        R = 1 + 5 * trial;
                vkl_dtype wdt = trial % 2 ? VKL_F16 : VKL_F32;
                int64_t xs[3] = {B, T, IN}, ws[2] = {OUT, IN}, hs[3] = {B, T, R}, us[2] = {OUT, R}, ns[1] = {OUT};
                size_t nx = (size_t)(B * T * IN), nw = (size_t)(OUT * IN), nh = (size_t)(B * T * R), nu = (size_t)(OUT * R);
                float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw), *h = malloc(sizeof(float) * nh),
                      *u = malloc(sizeof(float) * nu), *sc = malloc(sizeof(float) * OUT), *bi = malloc(sizeof(float) * OUT);
                vkl_test_fill(&r, x, nx, -1, 1);
                vkl_test_fill(&r, w, nw, -1, 1);
                vkl_test_fill(&r, h, nh, -1, 1);
                vkl_test_fill(&r, u, nu, -1, 1);
                vkl_test_fill(&r, sc, (size_t)OUT, -2, 2);
                vkl_test_fill(&r, bi, (size_t)OUT, -1, 1);
                vkl_test_round_to(wdt, w, nw);
                vkl_test_round_to(wdt, u, nu);
                vkl_tensor *X = vkl_test_upload(c, VKL_F32, 3, xs, x), *W = vkl_test_upload(c, wdt, 2, ws, w), *H = vkl_test_upload(c, VKL_F32, 3, hs, h),
                           *U = vkl_test_upload(c, wdt, 2, us, u), *S = vkl_test_upload(c, VKL_F32, 1, ns, sc), *BI = vkl_test_upload(c, VKL_F32, 1, ns, bi);
                vkl_graph *g = vkl_graph_new(c);
                int perm[2] = {1, 0};
                float alpha = 0.5f + trial;
                vkl_matmul_extra ex = {.bias = BI, .col_scale = S, .alpha = alpha, .a2 = H,
                                       .b2 = vkl_permute(g, U, perm)};
                vkl_tensor *y = vkl_matmul_general(g, "test", X, vkl_permute(g, W, perm), &ex);
                vkl_graph_keep(g, y);
                float *got = run_and_download(c, g, y);
                float *want = malloc(sizeof(float) * B * T * OUT), *two = malloc(sizeof(float) * B * T * OUT);
                int64_t ast[4] = {0, T * IN, IN, 1}, bst[4] = {0, 0, 1, IN};
                int64_t hst[4] = {0, T * R, R, 1}, ust[4] = {0, 0, 1, R};
                vkl_ref_matmul(x, ast, w, bst, NULL, want, 1, B, T, OUT, IN);
                vkl_ref_matmul(h, hst, u, ust, NULL, two, 1, B, T, OUT, R);
                for (int64_t i = 0; i < B * T * OUT; i++)
                    want[i] = alpha * want[i] * sc[i % OUT] + bi[i % OUT] + two[i];
                vkl_test_assert_close("matmul epilogue", got, want, (size_t)(B * T * OUT), 1e-4f, 1e-5f);
                free(x); free(w); free(h); free(u); free(sc); free(bi); free(got); free(want); free(two);
                vkl_graph_free(g);
                vkl_tensor_free(X); vkl_tensor_free(W); vkl_tensor_free(H);
                vkl_tensor_free(U); vkl_tensor_free(S); vkl_tensor_free(BI);
            }
            vkl_test_ctx_done(c);
        }
    }
    unsetenv("VKLORA_MATMUL_VARIANT");
}

static void matmul_bad_shapes(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t as[2] = {3, 4}, bs[2] = {5, 6}, ss[1] = {6};
    vkl_tensor *A = vkl_tensor_new(c, VKL_F32, 2, as, &e), *B = vkl_tensor_new(c, VKL_F32, 2, bs, &e);
    vkl_tensor *S = vkl_tensor_new(c, VKL_F16, 1, ss, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_matmul(g, A, B));
    assert_non_null(strstr(vkl_graph_error(g), "inner dimensions"));
    vkl_graph_free(g);
    vkl_matmul_extra ex = {.col_scale = S, .alpha = 1};
    int64_t cs[2] = {4, 6};
    vkl_tensor *C = vkl_tensor_new(c, VKL_F32, 2, cs, &e);
    g = vkl_graph_new(c);
    assert_null(vkl_matmul_general(g, "test", A, C, &ex));
    assert_non_null(strstr(vkl_graph_error(g), "column scale"));
    vkl_graph_free(g);
    vkl_tensor_free(A);
    vkl_tensor_free(B);
    vkl_tensor_free(C);
    vkl_tensor_free(S);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matmul_every_variant),
        cmocka_unit_test(matmul_linear_sd_size),
        cmocka_unit_test(matmul_epilogue),
        cmocka_unit_test(matmul_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
