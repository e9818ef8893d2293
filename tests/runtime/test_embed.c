/* Timestep embedding and embedding lookup against their CPU references
 * (runtime/ref/ref_embed.c) and against upstream values: the UNet's time_proj
 * output recorded by diffusers (RoPE: test_rope.c). Random odd
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

static void embed_build_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t s1[1] = {4}, s2[2] = {10, 6};
    vkl_tensor *T = vkl_tensor_new(c, VKL_F32, 1, s1, &e), *W = vkl_tensor_new(c, VKL_F32, 2, s2, &e);
    vkl_tensor *I = vkl_tensor_new(c, VKL_I32, 1, s1, &e);
    struct { const char *want; int which; } cases[] = {
        {"shift", 0}, {"dim", 1}, {"i32", 2}, {"2-D", 3},
    };
    for (int i = 0; i < 4; i++) {
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = NULL;
        switch (cases[i].which) {
        case 0: y = vkl_timestep_embedding(g, T, 2, 0, 1.0f, 10000); break;
        case 1: y = vkl_timestep_embedding(g, T, 1, 0, 0, 10000); break;
        case 2: y = vkl_embedding(g, W, T); break;
        case 3: y = vkl_embedding(g, T, I); break;
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
        cmocka_unit_test(embed_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
