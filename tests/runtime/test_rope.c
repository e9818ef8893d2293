/* RoPE against its CPU reference (runtime/ref/ref_rope.c) and upstream
 * values: transformers' RoPE tables (inv_freq, cos, sin for positions
 * 0..255) and the tiny LLaMA's q/k after RoPE. Random odd shapes, strided
 * inputs, every device profile and a 64 KiB binding limit; bad shapes and
 * settings refused by name. */
#include "op_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <math.h>
#include <string.h>

/* x logically [B,H,L,D]; stored [B,L,H,D] (the projection layout) and
 * permuted when strided. */
static void check_rope(vkl_ctx *c, vkl_test_rng *r, int64_t B, int64_t H, int64_t L, int64_t D, int pos0, float theta,
                       vkl_dtype dt, int strided, float tol)
{
    int64_t n = B * H * L * D;
    float *x = opc_random(r, dt, (size_t)n, -1, 1), *stored = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t l = 0; l < L; l++)
                for (int64_t d = 0; d < D; d++)
                    stored[strided ? ((b * L + l) * H + h) * D + d : ((b * H + h) * L + l) * D + d] =
                        x[((b * H + h) * L + l) * D + d];
    int64_t shape[4] = {B, H, L, D}, sshape[4] = {B, L, H, D};
    vkl_tensor *X = opc_upload_f32(c, dt, 4, strided ? sshape : shape, stored);
    vkl_graph *g = vkl_graph_new(c);
    int perm[4] = {0, 2, 1, 3};
    vkl_tensor *y = vkl_rope(g, strided ? vkl_permute(g, X, perm) : X, pos0, theta);
    vkl_graph_keep(g, y);
    opc_run(g);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * n);
    int64_t P = pos0 + L;
    float *inv = malloc(sizeof(float) * D / 2), *ct = malloc(sizeof(float) * P * D), *sn = malloc(sizeof(float) * P * D);
    vkl_ref_rope_inv_freq(D, theta, inv);
    vkl_ref_rope_make_tables(P, D, inv, ct, sn);
    vkl_ref_rope_tables(x, B * H, L, D, pos0, ct, sn, want);
    char what[192];
    snprintf(what, sizeof what, "rope [%lld,%lld,%lld,%lld] pos0 %d theta %g %s strided %d (%s)", (long long)B,
             (long long)H, (long long)L, (long long)D, pos0, (double)theta, vkl_dtype_name(dt), strided,
             vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)n, tol, 0);
    free(x); free(stored); free(got); free(want); free(inv); free(ct); free(sn);
    vkl_graph_free(g);
    vkl_tensor_free(X);
}

static void rope_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 304);
    static const int64_t dims[] = {2, 16, 64, 128, 6};
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 10; trial++) {
            int pos0 = trial % 2 ? vkl_test_rng_int(&r, 0, 4000) : 0;
            /* as for timesteps: a rare one-ulp frequency difference moves an angle below
             * 4096 by at most ulp(4096) = 4.9e-4, below 64 by 7.6e-6 */
            check_rope(c, &r, vkl_test_rng_int(&r, 1, 2), vkl_test_rng_int(&r, 1, 5), vkl_test_rng_int(&r, 1, 37),
                       dims[trial % 5], pos0, trial % 3 ? 10000.0f : 500000.0f, (vkl_dtype)(trial % 3), (trial / 2) & 1,
                       pos0 ? 5e-4f : 8e-6f);
        }
        vkl_test_ctx_done(c);
    }
}

static void rope_under_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 305);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    check_rope(c, &r, 2, 3, 101, 64, 7, 10000, VKL_F32, 0, 3e-5f);   /* 155 KB */
    check_rope(c, &r, 1, 5, 99, 48, 0, 10000, VKL_F16, 0, 3e-5f);
    vkl_test_ctx_done(c);
}

/* transformers' tables (head dim 16, theta 10000, positions 0..255): our
 * float32 steps reproduce inv_freq and cos/sin, and the device rope equals
 * q*cos + rotate_half(q)*sin with transformers' own cos/sin. */
static void rope_matches_transformers_tables(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/vectors/rope.safetensors");
    const char *f = "refkit/lm/vectors/rope.safetensors";
    const int64_t D = 16, P = 256;
    float *inv = opc_ref(f, "inv_freq", D / 2), *ct = opc_ref(f, "cos", P * D), *sn = opc_ref(f, "sin", P * D);
    float my_inv[8], *my_c = malloc(sizeof(float) * P * D), *my_s = malloc(sizeof(float) * P * D);
    vkl_ref_rope_inv_freq(D, 10000, my_inv);
    vkl_test_assert_close("inv_freq vs transformers", my_inv, inv, 8, 0, 1.2e-7f);
    vkl_ref_rope_make_tables(P, D, inv, my_c, my_s);
    vkl_test_assert_close("cos table vs transformers", my_c, ct, (size_t)(P * D), 1e-6f, 0);
    vkl_test_assert_close("sin table vs transformers", my_s, sn, (size_t)(P * D), 1e-6f, 0);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 306);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int k = 0; k < 2; k++) {
            int pos0 = k ? 100 : 0;
            int64_t L = P - pos0, shape[4] = {1, 3, L, D}, n = 3 * L * D;
            float *x = opc_random(&r, VKL_F32, (size_t)n, -2, 2), *want = malloc(sizeof(float) * n);
            vkl_tensor *X = opc_upload_f32(c, VKL_F32, 4, shape, x);
            vkl_graph *g = vkl_graph_new(c);
            vkl_tensor *y = vkl_rope(g, X, pos0, 10000);
            vkl_graph_keep(g, y);
            opc_run(g);
            float *got = opc_download(c, y);
            vkl_ref_rope_tables(x, 3, L, D, pos0, ct, sn, want);
            vkl_test_assert_close(k ? "rope pos0 100 vs transformers cos/sin" : "rope vs transformers cos/sin", got,
                                  want, (size_t)n, 4e-6f, 0);
            free(x); free(want); free(got);
            vkl_graph_free(g);
            vkl_tensor_free(X);
        }
        vkl_test_ctx_done(c);
    }
    free(inv); free(ct); free(sn); free(my_c); free(my_s);
}

/* The tiny LLaMA's q/k projections (token-major [1,33,H*16]) viewed as
 * [1,H,33,16] through a permutation, roped, against transformers' q/k. */
static void rope_matches_llama_attention(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/vectors/hidden_states.safetensors");
    const char *f = "refkit/lm/vectors/hidden_states.safetensors";
    vkl_ctx *c = vkl_test_ctx(NULL);
    for (int layer = 0; layer < 3; layer++)
        for (int which = 0; which < 2; which++) {
            int64_t H = which ? 2 : 4, L = 33, D = 16, n = H * L * D;
            char in[64], out[64];
            snprintf(in, sizeof in, "layers.%d.%s_proj_out", layer, which ? "k" : "q");
            snprintf(out, sizeof out, "layers.%d.%s_rope", layer, which ? "k" : "q");
            float *x = opc_ref(f, in, n), *want = opc_ref(f, out, n);
            int64_t sshape[4] = {1, L, H, D};
            vkl_tensor *X = opc_upload_f32(c, VKL_F32, 4, sshape, x);
            vkl_graph *g = vkl_graph_new(c);
            int perm[4] = {0, 2, 1, 3};
            vkl_tensor *y = vkl_rope(g, vkl_permute(g, X, perm), 0, 10000);
            vkl_graph_keep(g, y);
            opc_run(g);
            float *got = opc_download(c, y);
            vkl_test_assert_close(out, got, want, (size_t)n, 1e-5f, 1e-5f);
            free(x); free(want); free(got);
            vkl_graph_free(g);
            vkl_tensor_free(X);
        }
    vkl_test_ctx_done(c);
}

static void rope_build_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t s2[2] = {10, 6}, s3[4] = {1, 2, 3, 5};
    vkl_tensor *W = vkl_tensor_new(c, VKL_F32, 2, s2, &e), *X = vkl_tensor_new(c, VKL_F32, 4, s3, &e);
    struct { const char *want; int which; } cases[] = {{"even", 0}, {"theta", 1}, {"positions", 2}};
    for (int i = 0; i < 3; i++) {
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = NULL;
        switch (cases[i].which) {
        case 0: y = vkl_rope(g, X, 0, 10000); break;
        case 1: y = vkl_rope(g, W, 0, 0.5f); break;
        case 2: y = vkl_rope(g, W, -3, 10000); break;
        }
        assert_null(y);
        if (!strstr(vkl_graph_error(g), cases[i].want)) {
            print_error("case %d: error '%s' does not mention '%s'\n", i, vkl_graph_error(g), cases[i].want);
            fail();
        }
        vkl_graph_free(g);
    }
    vkl_tensor_free(W);
    vkl_tensor_free(X);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rope_random),
        cmocka_unit_test(rope_under_small_binding),
        cmocka_unit_test(rope_matches_transformers_tables),
        cmocka_unit_test(rope_matches_llama_attention),
        cmocka_unit_test(rope_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
