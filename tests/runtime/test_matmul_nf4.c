/* The matmul family with an NF4 or NF4_DQ (double-quantised scales on the
 * device) weight as its right operand (runtime/quant.h):
 * a linear layer x W^T and, through autograd, its input gradient dy W, for
 * every matmul variant and device profile, on odd shapes (partial last block,
 * odd element count, K not a multiple of 4) and aligned ones (the vector-load
 * paths), against the CPU reference that decodes the codes
 * (runtime/ref/ref_quant.c) and against the f32 product with the weights
 * dequantised on the host; LoRA's fused second product on an NF4 base; and
 * the refusals (a quantised left operand, a partial view, a weight gradient). */
#define _POSIX_C_SOURCE 200809L
#include "vkl_test.h"
#include "op_check.h"
#include "ops.h"
#include "quant.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

static const char *const variants[] = {"reg", "scalar", "tiled"};
static const char *const profiles[] = {"default", "portable"};

static float *run_get(vkl_ctx *c, vkl_graph *g, vkl_tensor *y)
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

typedef struct {
    int64_t B, T, N, K;
} shape;

static void one_linear(vkl_ctx *c, vkl_test_rng *r, const char *variant, shape s, vkl_dtype wdt)
{
    int64_t M = s.B * s.T, N = s.N, K = s.K, nw = N * K;
    float *x = malloc(sizeof(float) * M * K), *w = malloc(sizeof(float) * nw), *dy = malloc(sizeof(float) * M * N);
    vkl_test_fill(r, x, (size_t)(M * K), -1, 1);
    vkl_test_fill(r, w, (size_t)nw, -0.2f, 0.2f);
    vkl_test_fill(r, dy, (size_t)(M * N), -1, 1);
    /* the reference's own quantisation: codes and absmax as the host makes them */
    uint8_t *packed = malloc((size_t)(nw + 1) / 2);
    float *absmax = malloc(sizeof(float) * (size_t)((nw + 63) / 64)), *wdq = malloc(sizeof(float) * nw);
    vkl_err e = {{0}};
    assert_int_equal(vkl_nf4_quantize(w, (uint64_t)nw, packed, absmax, &e), 0);
    if (wdt == VKL_NF4_DQ) {
        /* QLoRA's double quantisation of the absmax, dequantised on the host */
        uint64_t nb = (uint64_t)(nw + 63) / 64;
        uint8_t *q = malloc(nb);
        float *a2 = malloc(sizeof(float) * ((nb + 255) / 256)), off;
        vkl_nf4_double_quant(absmax, nb, &off, q, a2);
        vkl_nf4_double_dequant(q, a2, off, nb, absmax);
        free(q);
        free(a2);
    }
    vkl_nf4_dequantize(packed, absmax, (uint64_t)nw, wdq);

    int64_t xs[3] = {s.B, s.T, K}, ws[2] = {N, K}, ys[3] = {s.B, s.T, N};
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 3, xs, x), *DY = vkl_test_upload(c, VKL_F32, 3, ys, dy);
    vkl_tensor *W = vkl_tensor_new(c, wdt, 2, ws, &e);
    assert_non_null(W);
    assert_int_equal(vkl_tensor_upload(c, W, w, VKL_F32, &e), 0); /* quantised on upload */
    assert_int_equal(vkl_tensor_nbytes(W), (vkl_dtype_bytes(wdt, (uint64_t)nw) + 3) & ~3ull);

    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear(g, X, W, NULL);
    vkl_tensor *wrt[1] = {X}, *grads[1] = {NULL};
    assert_int_equal(vkl_graph_backward(g, y, DY, wrt, 1, grads, &e), 0);
    assert_non_null(grads[0]);
    vkl_graph_keep(g, y);
    vkl_graph_keep(g, grads[0]);
    float *got = run_get(c, g, y), *gdx = malloc(sizeof(float) * M * K);
    assert_int_equal(vkl_tensor_download(c, grads[0], gdx, VKL_F32, &e), 0);

    float *want = malloc(sizeof(float) * M * N), *want2 = malloc(sizeof(float) * M * N);
    float *wdx = malloc(sizeof(float) * M * K), *wdx2 = malloc(sizeof(float) * M * K);
    vkl_ref_linear_nf4(x, packed, absmax, want, M, N, K);
    vkl_ref_linear_nf4_grad_input(dy, packed, absmax, wdx, M, N, K);
    /* the same products with the host-dequantised f32 weights */
    int64_t ast[4] = {0, 0, K, 1}, bst[4] = {0, 0, 1, K}, dst[4] = {0, 0, N, 1}, wst[4] = {0, 0, K, 1};
    vkl_ref_matmul(x, ast, wdq, bst, NULL, want2, 1, 1, M, N, K);
    vkl_ref_matmul(dy, dst, wdq, wst, NULL, wdx2, 1, 1, M, K, N);
    char what[160];
    snprintf(what, sizeof what, "%s %s linear [%lld,%lld,%lld] x [%lld,%lld]^T (%s)", variant, vkl_dtype_name(wdt),
             (long long)s.B,
             (long long)s.T, (long long)K, (long long)N, (long long)K, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)(M * N), 2e-5f, 1e-5f);
    vkl_test_assert_close(what, got, want2, (size_t)(M * N), 2e-5f, 1e-5f);
    snprintf(what, sizeof what, "%s %s input gradient [%lld,%lld] x [%lld,%lld] (%s)", variant, vkl_dtype_name(wdt),
             (long long)M,
             (long long)N, (long long)N, (long long)K, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, gdx, wdx, (size_t)(M * K), 2e-5f, 1e-5f);
    vkl_test_assert_close(what, gdx, wdx2, (size_t)(M * K), 2e-5f, 1e-5f);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(DY);
    vkl_tensor_free(W);
    free(x); free(w); free(dy); free(packed); free(absmax); free(wdq); free(got); free(gdx);
    free(want); free(want2); free(wdx); free(wdx2);
}

static void linear_every_variant(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 20);
    /* odd: 33 x 71 = 2343 elements (odd count, partial last block); K odd;
     * aligned: vector loads along K (forward) and along N (gradient);
     * 172 x 64 is the tiny LLaMA's gate projection; 65 x 36 puts blocks across rows */
    const shape shapes[] = {{1, 5, 33, 71}, {2, 3, 172, 64}, {1, 7, 65, 36}, {2, 9, 64, 172}, {1, 1, 3, 5}};
    /* NF4_DQ also past 256 blocks (its second-level scales): 130 x 260 = 529 blocks, 3 absmax2 */
    const shape dq_shapes[] = {{1, 5, 33, 71}, {1, 3, 130, 260}, {1, 2, 260, 131}};
    for (int v = 0; v < 3; v++) {
        setenv("VKLORA_MATMUL_VARIANT", variants[v], 1);
        for (int p = 0; p < (v == 0 ? 2 : 1); p++) { /* the portable profile changes nothing NF4 reads but A's loads */
            vkl_ctx *c = vkl_test_ctx(profiles[p]);
            for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) one_linear(c, &r, variants[v], shapes[i], VKL_NF4);
            for (size_t i = 0; i < sizeof dq_shapes / sizeof *dq_shapes; i++)
                one_linear(c, &r, variants[v], dq_shapes[i], VKL_NF4_DQ);
            vkl_test_ctx_done(c);
        }
    }
    unsetenv("VKLORA_MATMUL_VARIANT");
}

/* y = x W^T + s * (x A^T) B^T with W NF4 (LoRA's fused second product on a quantised base). */
static void lora_on_nf4(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 21);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t M = 6, N = 40, K = 24, R = 3, nw = N * K;
    float x[6 * 24], w[40 * 24], a[3 * 24], b[40 * 3], sc[3] = {0.5f, 0.5f, 0.5f}, wdq[40 * 24];
    vkl_test_fill(&r, x, sizeof x / 4, -1, 1);
    vkl_test_fill(&r, w, sizeof w / 4, -0.3f, 0.3f);
    vkl_test_fill(&r, a, sizeof a / 4, -1, 1);
    vkl_test_fill(&r, b, sizeof b / 4, -1, 1);
    vkl_err e = {{0}};
    uint8_t packed[40 * 24 / 2];
    float absmax[15];
    assert_int_equal(vkl_nf4_quantize(w, (uint64_t)nw, packed, absmax, &e), 0);
    vkl_nf4_dequantize(packed, absmax, (uint64_t)nw, wdq);
    int64_t xs[2] = {M, K}, ws[2] = {N, K}, as[2] = {R, K}, bs[2] = {N, R}, ss[1] = {R};
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 2, xs, x), *A = vkl_test_upload(c, VKL_F32, 2, as, a);
    vkl_tensor *B = vkl_test_upload(c, VKL_F32, 2, bs, b), *S = vkl_test_upload(c, VKL_F32, 1, ss, sc);
    vkl_tensor *W = vkl_test_upload(c, VKL_NF4, 2, ws, w);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear_lora(g, X, W, NULL, A, B, S);
    vkl_graph_keep(g, y);
    float *got = run_get(c, g, y), want[6 * 40];
    opc_ref_linear_lora(x, wdq, a, b, sc, M, N, K, R, want);
    vkl_test_assert_close("LoRA on an NF4 base", got, want, (size_t)(M * N), 2e-5f, 1e-5f);
    free(got);
    vkl_graph_free(g);

    /* refusals: quantised left operand, a part of the weight, a gradient for the weight */
    g = vkl_graph_new(c);
    assert_null(vkl_matmul(g, W, vkl_permute(g, X, (const int[]){1, 0})));
    assert_non_null(strstr(vkl_graph_error(g), "f32, f16 or bf16"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    vkl_tensor *part = vkl_view(g, W, 2, (int64_t[]){N - 1, K}, (int64_t[]){K, 1}, K);
    assert_null(vkl_linear(g, X, part, NULL));
    assert_non_null(strstr(vkl_graph_error(g), "whole 2-D weight"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    y = vkl_linear(g, X, W, NULL);
    vkl_tensor *wrt[1] = {W}, *gr[1] = {NULL};
    assert_int_equal(vkl_graph_backward(g, y, NULL, wrt, 1, gr, &e), -1);
    print_message("weight gradient refused: %s | %s\n", e.msg, vkl_graph_error(g));
    vkl_graph_free(g);

    vkl_tensor_free(X); vkl_tensor_free(A); vkl_tensor_free(B); vkl_tensor_free(S); vkl_tensor_free(W);
    vkl_test_ctx_done(c);
}

/* A quantised weight is bound whole: one larger than a storage binding is
 * refused when the graph is built, naming the limit; A split across
 * bindings still works against it. */
static void binding_limit(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    vkl_err e = {{0}};
    int64_t big[2] = {512, 512}, small[2] = {40, 256}, xs[2] = {300, 256};
    vkl_tensor *W = vkl_tensor_new(c, VKL_NF4, 2, big, &e); /* 147 KiB */
    assert_non_null(W);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *X = vkl_graph_tensor(g, VKL_F32, 2, (int64_t[]){3, 512});
    assert_null(vkl_linear(g, X, W, NULL));
    print_message("refused: %s\n", vkl_graph_error(g));
    assert_non_null(strstr(vkl_graph_error(g), "storage binding limit"));
    vkl_graph_free(g);
    vkl_tensor_free(W);
    /* x of 300 KiB is split into row windows; the 5.8 KiB weight is bound whole each time */
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 22);
    float *x = malloc(sizeof(float) * 300 * 256), *w = malloc(sizeof(float) * 40 * 256);
    vkl_test_fill(&r, x, 300 * 256, -1, 1);
    vkl_test_fill(&r, w, 40 * 256, -0.2f, 0.2f);
    uint8_t *packed = malloc(40 * 256 / 2);
    float absmax[160], *want = malloc(sizeof(float) * 300 * 40);
    assert_int_equal(vkl_nf4_quantize(w, 40 * 256, packed, absmax, &e), 0);
    vkl_ref_linear_nf4(x, packed, absmax, want, 300, 40, 256);
    vkl_tensor *XT = vkl_test_upload(c, VKL_F32, 2, xs, x), *WT = vkl_test_upload(c, VKL_NF4, 2, small, w);
    g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear(g, XT, WT, NULL);
    vkl_graph_keep(g, y);
    float *got = run_get(c, g, y);
    vkl_test_assert_close("nf4 linear with A split across bindings", got, want, 300 * 40, 2e-5f, 1e-5f);
    vkl_graph_free(g);
    vkl_tensor_free(XT);
    vkl_tensor_free(WT);
    free(x); free(w); free(packed); free(want); free(got);
    vkl_test_ctx_done(c);
}

/* Ops other than the matmul refuse a quantised tensor with a message (when
 * the graph is built or planned), never crash. */
static void other_ops_refuse(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    float w[8 * 64];
    for (int i = 0; i < 8 * 64; i++) w[i] = (float)(i % 7) - 3.0f;
    int64_t ws[2] = {8, 64};
    vkl_tensor *W = vkl_test_upload(c, VKL_NF4, 2, ws, w);
    int32_t id[2] = {1, 2};
    vkl_tensor *ids = vkl_tensor_new(c, VKL_I32, 1, (int64_t[]){2}, &e);
    assert_int_equal(vkl_tensor_upload(c, ids, id, VKL_I32, &e), 0);
    for (int k = 0; k < 7; k++) {
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = k == 0 ? vkl_scale(g, W, 2.0f) : k == 1 ? vkl_contiguous(g, W) : k == 2 ? vkl_add(g, W, W)
                      : k == 3 ? vkl_silu(g, W) : k == 4 ? vkl_sum_rows(g, W) : k == 5 ? vkl_embedding(g, vkl_permute(g, W, (const int[]){1, 0}), ids)
                      : vkl_contiguous(g, vkl_permute(g, W, (const int[]){1, 0}));
        int planned = y && !vkl_graph_failed(g) && (vkl_graph_keep(g, y), vkl_graph_plan(g, &e) == 0);
        print_message("op %d on nf4: %s\n", k, vkl_graph_failed(g) ? vkl_graph_error(g) : e.msg);
        assert_false(planned);
        vkl_graph_free(g);
        e.msg[0] = 0;
    }
    vkl_tensor_free(W);
    vkl_tensor_free(ids);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_every_variant),
        cmocka_unit_test(lora_on_nf4),
        cmocka_unit_test(binding_limit),
        cmocka_unit_test(other_ops_refuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
