/* GEGLU and SwiGLU against their CPU references (runtime/ref/ref_glu.c) on
 * random odd shapes, f32/f16/bf16, strided inputs, in every device profile
 * and under a 64 KiB binding limit; SwiGLU also against the tiny LLaMA's
 * recorded MLP activations (transformers). */
#include "op_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

/* x logically [B, R, 2F]; stored transposed as [B, 2F, R] when strided. */
static void check_geglu(vkl_ctx *c, vkl_test_rng *r, int64_t B, int64_t R, int64_t F, vkl_dtype dt, int strided)
{
    int64_t n = B * R * 2 * F, ny = B * R * F;
    float *x = opc_random(r, dt, (size_t)n, -4, 4), *stored = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < R; i++)
            for (int64_t k = 0; k < 2 * F; k++)
                stored[strided ? (b * 2 * F + k) * R + i : (b * R + i) * 2 * F + k] = x[(b * R + i) * 2 * F + k];
    int64_t shape[3] = {B, R, 2 * F}, tshape[3] = {B, 2 * F, R};
    vkl_tensor *X = opc_upload_f32(c, dt, 3, strided ? tshape : shape, stored);
    vkl_graph *g = vkl_graph_new(c);
    int perm[3] = {0, 2, 1};
    vkl_tensor *y = vkl_geglu(g, strided ? vkl_permute(g, X, perm) : X);
    vkl_graph_keep(g, y);
    opc_run(g);
    assert_int_equal(y->shape[2], F);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * ny);
    vkl_ref_geglu(x, B * R, F, want);
    char what[128];
    snprintf(what, sizeof what, "geglu [%lld,%lld,%lld] %s strided %d (%s)", (long long)B, (long long)R,
             (long long)(2 * F), vkl_dtype_name(dt), strided, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)ny, 2e-6f, 2e-6f);
    free(x); free(stored); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(X);
}

/* gate logically [R, D], stored transposed when strided; up contiguous. */
static void check_swiglu(vkl_ctx *c, vkl_test_rng *r, int64_t R, int64_t D, vkl_dtype gdt, vkl_dtype udt, int strided)
{
    int64_t n = R * D;
    float *gate = opc_random(r, gdt, (size_t)n, -6, 6), *up = opc_random(r, udt, (size_t)n, -2, 2);
    float *stored = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < R; i++)
        for (int64_t d = 0; d < D; d++) stored[strided ? d * R + i : i * D + d] = gate[i * D + d];
    int64_t shape[2] = {R, D}, tshape[2] = {D, R};
    vkl_tensor *G = opc_upload_f32(c, gdt, 2, strided ? tshape : shape, stored), *U = opc_upload_f32(c, udt, 2, shape, up);
    vkl_graph *g = vkl_graph_new(c);
    int perm[2] = {1, 0};
    vkl_tensor *y = vkl_swiglu(g, strided ? vkl_permute(g, G, perm) : G, U);
    vkl_graph_keep(g, y);
    opc_run(g);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * n);
    vkl_ref_swiglu(gate, up, n, want);
    char what[128];
    snprintf(what, sizeof what, "swiglu [%lld,%lld] %s x %s strided %d (%s)", (long long)R, (long long)D,
             vkl_dtype_name(gdt), vkl_dtype_name(udt), strided, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)n, 2e-6f, 2e-6f);
    free(gate); free(up); free(stored); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(G);
    vkl_tensor_free(U);
}

static void glu_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 201);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 9; trial++) {
            check_geglu(c, &r, vkl_test_rng_int(&r, 1, 3), vkl_test_rng_int(&r, 1, 40), vkl_test_rng_int(&r, 1, 300),
                        (vkl_dtype)(trial % 3), (trial / 3) & 1);
            check_swiglu(c, &r, vkl_test_rng_int(&r, 1, 40), vkl_test_rng_int(&r, 1, 300), (vkl_dtype)(trial % 3),
                         (vkl_dtype)((trial / 3) % 3), trial & 1);
        }
        vkl_test_ctx_done(c);
    }
}

static void glu_under_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 202);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    check_geglu(c, &r, 2, 97, 160, VKL_F32, 0);     /* 248 KB of x, windows of whole rows */
    check_geglu(c, &r, 3, 101, 163, VKL_BF16, 0);
    check_swiglu(c, &r, 123, 301, VKL_F32, VKL_F16, 0);
    vkl_test_ctx_done(c);
}

/* LLaMA MLP: silu(gate_proj(x)) * up_proj(x) recorded by transformers. */
static void swiglu_matches_transformers(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/vectors/hidden_states.safetensors");
    const char *f = "refkit/lm/vectors/hidden_states.safetensors";
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t shape[3] = {1, 33, 172}, n = 33 * 172;
    for (int layer = 0; layer < 3; layer++) {
        char ng[64], nu[64], nw[64];
        snprintf(ng, sizeof ng, "layers.%d.gate_proj_out", layer);
        snprintf(nu, sizeof nu, "layers.%d.up_proj_out", layer);
        snprintf(nw, sizeof nw, "layers.%d.ffn_act_mul", layer);
        float *gate = opc_ref(f, ng, n), *up = opc_ref(f, nu, n), *want = opc_ref(f, nw, n);
        vkl_tensor *G = opc_upload_f32(c, VKL_F32, 3, shape, gate);
        vkl_tensor *U = opc_upload_f32(c, VKL_F32, 3, shape, up);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = vkl_swiglu(g, G, U);
        vkl_graph_keep(g, y);
        opc_run(g);
        float *got = opc_download(c, y);
        vkl_test_assert_close(nw, got, want, (size_t)n, 1e-6f, 1e-5f);
        free(gate); free(up); free(want); free(got);
        vkl_graph_free(g);
        vkl_tensor_free(G);
        vkl_tensor_free(U);
    }
    vkl_test_ctx_done(c);
}

static void glu_build_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t s1[2] = {3, 5}, s2[2] = {3, 4};
    vkl_tensor *A = vkl_tensor_new(c, VKL_F32, 2, s1, &e), *B = vkl_tensor_new(c, VKL_F32, 2, s2, &e);
    vkl_tensor *I = vkl_tensor_new(c, VKL_I32, 2, s2, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_geglu(g, A));
    assert_non_null(strstr(vkl_graph_error(g), "even"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_swiglu(g, A, B));
    assert_non_null(strstr(vkl_graph_error(g), "same shape"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_geglu(g, I));
    assert_non_null(strstr(vkl_graph_error(g), "f32, f16 or bf16"));
    vkl_graph_free(g);
    vkl_tensor_free(A);
    vkl_tensor_free(B);
    vkl_tensor_free(I);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(glu_random),
        cmocka_unit_test(glu_under_small_binding),
        cmocka_unit_test(swiglu_matches_transformers),
        cmocka_unit_test(glu_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
