/* Timestep embedding, embedding lookup and RoPE against their CPU references
 * (runtime/ref/ref_embed.c) and against upstream values: the UNet's time_proj
 * output recorded by diffusers, transformers' RoPE tables (inv_freq, cos, sin
 * for positions 0..255) and the tiny LLaMA's q/k after RoPE. Random odd
 * shapes, strided inputs, out-of-range ids, every device profile and a
 * 64 KiB binding limit; NF4 and NF4_DQ tables (runtime/quant.h) against the
 * host's dequantisation, and their refusals. */
#include "op_check.h"
#include "ops.h"
#include "quant.h"
#include "ref/vkl_ref.h"

#include <math.h>
#include <string.h>

/* ---- timestep embedding */

static void check_temb(vkl_ctx *c, const float *t, int64_t N, int dim, int flip, float shift, float period, float tol)
{
    vkl_tensor *T = opc_upload_f32(c, VKL_F32, 1, &N, t);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_timestep_embedding(g, T, dim, flip, shift, period);
    vkl_graph_keep(g, y);
    opc_run(g);
    assert_int_equal(y->shape[0], N);
    assert_int_equal(y->shape[1], dim);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * N * dim);
    vkl_ref_timestep_embedding(t, N, dim, flip, shift, period, want);
    char what[192];
    snprintf(what, sizeof what, "timestep_embedding N %lld dim %d flip %d shift %g (%s)", (long long)N, dim, flip,
             (double)shift, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)(N * dim), tol, 0);
    if (dim % 2)
        for (int64_t n = 0; n < N; n++) assert_true(got[n * dim + dim - 1] == 0.0f);
    free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(T);
}

static void timestep_embedding_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 301);
    static const int dims[] = {32, 320, 33, 2, 1281};
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 5; trial++) {
            float t[9] = {0, 1, 999, 500, 856.2857f, 71.3571f};
            for (int i = 6; i < 9; i++) t[i] = vkl_test_rng_uniform(&r, 0, 1000);
            /* frequencies are correctly rounded except near a rounding midpoint, where a
             * one-ulp difference moves an angle below 1000 by at most ulp(1000) = 6.1e-5 */
            check_temb(c, t, 9, dims[trial], trial & 1, trial == 2 ? 1.0f : 0.0f, 10000, 6.2e-5f);
        }
        vkl_test_ctx_done(c);
    }
}

/* diffusers UNet time_proj at t=500 for both batch entries: dim 32,
 * flip_sin_to_cos, shift 0 (refkit/sd/README.md). */
static void timestep_embedding_matches_diffusers(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/unet.safetensors");
    float *want = opc_ref("refkit/sd/vectors/unet.safetensors", "act_t500.time_proj", 64), t[2] = {500, 500}, ref[64];
    vkl_ref_timestep_embedding(t, 2, 32, 1, 0, 10000, ref);
    vkl_test_assert_close("CPU reference vs diffusers time_proj", ref, want, 64, 1e-6f, 0);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        int64_t n = 2;
        vkl_tensor *T = opc_upload_f32(c, VKL_F32, 1, &n, t);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = vkl_timestep_embedding(g, T, 32, 1, 0, 10000);
        vkl_graph_keep(g, y);
        opc_run(g);
        float *got = opc_download(c, y);
        vkl_test_assert_close("timestep_embedding vs diffusers time_proj", got, want, 64, 2e-6f, 0);
        free(got);
        vkl_graph_free(g);
        vkl_tensor_free(T);
        vkl_test_ctx_done(c);
    }
    free(want);
}

/* ---- embedding */

static void check_embedding(vkl_ctx *c, vkl_test_rng *r, int64_t V, int64_t D, vkl_dtype dt, int strided)
{
    float *table = opc_random(r, dt, (size_t)(V * D), -1, 1), *stored = malloc(sizeof(float) * V * D);
    for (int64_t v = 0; v < V; v++)
        for (int64_t d = 0; d < D; d++) stored[strided ? d * V + v : v * D + d] = table[v * D + d];
    int64_t ishape[2] = {3, 29}, n = 3 * 29;
    int32_t ids[3 * 29];
    for (int64_t i = 0; i < n; i++) ids[i] = vkl_test_rng_int(r, 0, (int)V - 1);
    ids[0] = -1;
    ids[5] = (int32_t)V;
    ids[7] = INT32_MAX;
    ids[11] = INT32_MIN;
    ids[13] = (int32_t)V - 1;
    ids[17] = 0;
    int64_t tshape[2] = {V, D}, sshape[2] = {D, V};
    vkl_tensor *T = opc_upload_f32(c, dt, 2, strided ? sshape : tshape, stored);
    vkl_tensor *I = opc_upload(c, VKL_I32, 2, ishape, ids, VKL_I32);
    vkl_graph *g = vkl_graph_new(c);
    int perm[2] = {1, 0};
    vkl_tensor *y = vkl_embedding(g, strided ? vkl_permute(g, T, perm) : T, I);
    vkl_graph_keep(g, y);
    opc_run(g);
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], D);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * n * D);
    vkl_ref_embedding(table, V, D, ids, n, want);
    char what[192];
    snprintf(what, sizeof what, "embedding [%lld,%lld] %s strided %d (%s)", (long long)V, (long long)D,
             vkl_dtype_name(dt), strided, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)(n * D), 0, 0);
    free(table); free(stored); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(T);
    vkl_tensor_free(I);
}

static void embedding_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 302);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 6; trial++)
            check_embedding(c, &r, vkl_test_rng_int(&r, 1, 1000), vkl_test_rng_int(&r, 1, 77), (vkl_dtype)(trial % 3),
                            trial >= 3);
        vkl_test_ctx_done(c);
    }
}

/* A table over several 64 KiB bindings (each id picks its window), and one
 * that would need more windows than a dispatch binds: a clear error. */
static void embedding_under_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 303);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    check_embedding(c, &r, 1000, 61, VKL_F32, 0);   /* 244 KB: 4 windows */
    check_embedding(c, &r, 1500, 77, VKL_F16, 0);   /* 231 KB: 4 windows */
    int64_t tshape[2] = {3001, 67}, ishape[1] = {5};   /* 402 KB: 7 windows: too many */
    vkl_err e = {{0}};
    vkl_tensor *T = vkl_tensor_new(c, VKL_BF16, 2, tshape, &e), *I = vkl_tensor_new(c, VKL_I32, 1, ishape, &e);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_embedding(g, T, I);
    vkl_graph_keep(g, y);
    assert_int_not_equal(vkl_graph_plan(g, &e), 0);
    assert_non_null(strstr(e.msg, "maxStorageBufferRange"));
    vkl_graph_free(g);
    vkl_tensor_free(T);
    vkl_tensor_free(I);
    vkl_test_ctx_done(c);
}

/* A quantised table: rows read through the shader's dequantisation equal the
 * host's dequantised table's rows exactly (the host values are checked bit
 * for bit against the reference kit in test_nf4). */
static void check_quant_embedding(vkl_ctx *c, vkl_test_rng *r, int64_t V, int64_t D, vkl_dtype dt)
{
    int64_t nt = V * D, n = 3 * 29;
    float *table = malloc(sizeof(float) * (size_t)nt), *deq = malloc(sizeof(float) * (size_t)nt);
    vkl_test_fill(r, table, (size_t)nt, -0.5f, 0.5f);
    void *packed = malloc((size_t)vkl_dtype_bytes(dt, (uint64_t)nt));
    vkl_err e = {{0}};
    assert_int_equal(vkl_convert_host(table, VKL_F32, packed, dt, (size_t)nt, &e), 0);
    assert_int_equal(vkl_convert_host(packed, dt, deq, VKL_F32, (size_t)nt, &e), 0);
    int32_t ids[3 * 29];
    for (int64_t i = 0; i < n; i++) ids[i] = vkl_test_rng_int(r, 0, (int)V - 1);
    ids[0] = -1;
    ids[5] = (int32_t)V;
    ids[13] = (int32_t)V - 1;
    int64_t tshape[2] = {V, D}, ishape[2] = {3, 29};
    vkl_tensor *T = vkl_tensor_new(c, dt, 2, tshape, &e);
    assert_non_null(T);
    assert_int_equal(vkl_tensor_upload(c, T, table, VKL_F32, &e), 0);
    vkl_tensor *I = opc_upload(c, VKL_I32, 2, ishape, ids, VKL_I32);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_embedding(g, T, I);
    vkl_graph_keep(g, y);
    opc_run(g);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * (size_t)(n * D));
    vkl_ref_embedding(deq, V, D, ids, n, want);
    char what[160];
    snprintf(what, sizeof what, "embedding [%lld,%lld] %s (%s)", (long long)V, (long long)D, vkl_dtype_name(dt),
             vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)(n * D), 0, 0);
    vkl_graph_free(g);
    /* refusals: a transposed table, a gradient for the table */
    g = vkl_graph_new(c);
    assert_null(vkl_embedding(g, vkl_permute(g, T, (const int[]){1, 0}), I));
    assert_non_null(strstr(vkl_graph_error(g), "whole 2-D weight"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    y = vkl_embedding(g, T, I);
    vkl_tensor *wrt[1] = {T}, *gr[1] = {NULL};
    assert_int_equal(vkl_graph_backward(g, y, NULL, wrt, 1, gr, &e), -1);
    assert_non_null(strstr(vkl_graph_error(g), "frozen"));
    vkl_graph_free(g);
    vkl_tensor_free(T);
    vkl_tensor_free(I);
    free(table); free(deq); free(packed); free(got); free(want);
}

static void embedding_quantised(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 304);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        /* odd element count (partial last block, blocks across rows); past
         * 256 blocks (NF4_DQ's second-level scales) */
        check_quant_embedding(c, &r, 37, 33, VKL_NF4);
        check_quant_embedding(c, &r, 37, 33, VKL_NF4_DQ);
        check_quant_embedding(c, &r, 300, 70, VKL_NF4);
        check_quant_embedding(c, &r, 300, 70, VKL_NF4_DQ);
        vkl_test_ctx_done(c);
    }
    /* a quantised table is bound whole: one past the binding limit is refused */
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    vkl_err e = {{0}};
    int64_t big[2] = {2000, 128}, is[1] = {4};
    vkl_tensor *T = vkl_tensor_new(c, VKL_NF4_DQ, 2, big, &e), *I = vkl_tensor_new(c, VKL_I32, 1, is, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_embedding(g, T, I));
    assert_non_null(strstr(vkl_graph_error(g), "storage binding limit"));
    vkl_graph_free(g);
    vkl_tensor_free(T);
    vkl_tensor_free(I);
    vkl_test_ctx_done(c);
}

/* ---- rope */

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

static void embed_build_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t s1[1] = {4}, s2[2] = {10, 6}, s3[4] = {1, 2, 3, 5};
    vkl_tensor *T = vkl_tensor_new(c, VKL_F32, 1, s1, &e), *W = vkl_tensor_new(c, VKL_F32, 2, s2, &e);
    vkl_tensor *I = vkl_tensor_new(c, VKL_I32, 1, s1, &e), *X = vkl_tensor_new(c, VKL_F32, 4, s3, &e);
    struct { const char *want; int which; } cases[] = {
        {"shift", 0}, {"dim", 1}, {"i32", 2}, {"2-D", 3}, {"even", 4}, {"theta", 5}, {"positions", 6},
    };
    for (int i = 0; i < 7; i++) {
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = NULL;
        switch (cases[i].which) {
        case 0: y = vkl_timestep_embedding(g, T, 2, 0, 1.0f, 10000); break;
        case 1: y = vkl_timestep_embedding(g, T, 1, 0, 0, 10000); break;
        case 2: y = vkl_embedding(g, W, T); break;
        case 3: y = vkl_embedding(g, T, I); break;
        case 4: y = vkl_rope(g, X, 0, 10000); break;
        case 5: y = vkl_rope(g, W, 0, 0.5f); break;
        case 6: y = vkl_rope(g, W, -3, 10000); break;
        }
        assert_null(y);
        if (!strstr(vkl_graph_error(g), cases[i].want)) {
            print_error("case %d: error '%s' does not mention '%s'\n", i, vkl_graph_error(g), cases[i].want);
            fail();
        }
        vkl_graph_free(g);
    }
    vkl_tensor_free(T);
    vkl_tensor_free(W);
    vkl_tensor_free(I);
    vkl_tensor_free(X);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timestep_embedding_random),
        cmocka_unit_test(timestep_embedding_matches_diffusers),
        cmocka_unit_test(embedding_random),
        cmocka_unit_test(embedding_under_small_binding),
        cmocka_unit_test(embedding_quantised),
        cmocka_unit_test(rope_random),
        cmocka_unit_test(rope_under_small_binding),
        cmocka_unit_test(rope_matches_transformers_tables),
        cmocka_unit_test(rope_matches_llama_attention),
        cmocka_unit_test(embed_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
