/* The matmul family with a GGUF block-type weight (Q4_0, Q4_1, Q5_0, Q5_1,
 * Q8_0, Q4_K, Q5_K, Q6_K: runtime/quant.h) as its right operand, read in the
 * file's blocks and dequantised in the shader (shaders/gguf_blocks.glsl):
 *  - the in-shader values bit for bit those of the CPU reference
 *    dequantisation (runtime/ref/ref_gguf.c): x = I makes x W^T = W^T exactly;
 *  - a linear layer x W^T and, through autograd, its input gradient dy W,
 *    for every matmul variant, M = 1 and M > 1, K not a multiple of the
 *    tiles, against the CPU reference product (ref_matmul.c) on the weights
 *    dequantised by the reference;
 *  - LoRA's fused second product on a GGUF base;
 *  - refusals: rows that are not whole blocks, an embedding table, a weight
 *    gradient. */
#define _POSIX_C_SOURCE 200809L
#include "vkl_test.h"
#include "op_check.h"
#include "io/gguf.h"
#include "ops.h"
#include "quant.h"
#include "ref/ref_gguf.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

static const char *const variants[] = {"reg", "scalar", "tiled"};
static const vkl_dtype types[] = {VKL_Q4_0, VKL_Q4_1, VKL_Q5_0, VKL_Q5_1, VKL_Q8_0, VKL_Q4_K, VKL_Q5_K, VKL_Q6_K};
#define NTYPES (int)(sizeof types / sizeof *types)

/* A [n, k] weight of block dtype dt: random values quantised by the
 * project's GGUF quantiser, uploaded as the raw blocks; *wdq the reference
 * dequantisation of those blocks. */
static vkl_tensor *gguf_weight(vkl_ctx *c, vkl_test_rng *r, vkl_dtype dt, int64_t n, int64_t k, float **wdq)
{
    int type = vkl_dtype_gguf_type(dt);
    uint64_t nw = (uint64_t)(n * k), bytes = nw / (uint64_t)vkl_gguf_type_block(type) * (uint64_t)vkl_gguf_type_bytes(type);
    float *w = malloc(sizeof(float) * nw);
    uint8_t *blocks = malloc(bytes);
    vkl_test_fill(r, w, nw, -0.2f, 0.2f);
    vkl_err e = {{0}};
    assert_int_equal(vkl_gguf_quantize(type, w, nw, blocks, &e), 0);
    *wdq = malloc(sizeof(float) * nw);
    assert_int_equal(vkl_ref_gguf_dequant(type, blocks, nw, *wdq), 0);
    int64_t ws[2] = {n, k};
    vkl_tensor *W = vkl_tensor_new(c, dt, 2, ws, &e);
    assert_non_null(W);
    assert_int_equal(vkl_dtype_bytes(dt, nw), bytes); /* the file's blocks, nothing else */
    assert_int_equal(vkl_tensor_upload(c, W, blocks, dt, &e), 0);
    free(w);
    free(blocks);
    return W;
}

/* x = I [k, k]: y = I W^T = W^T exactly (every other term is 0 * w added to
 * an exact sum), so the shader's dequantised values are compared bit for bit
 * (zeros by value: the sum of a -0 weight is +0). */
static void exact_values(vkl_ctx *c, vkl_test_rng *r, const char *variant, vkl_dtype dt)
{
    int64_t k = vkl_gguf_type_block(vkl_dtype_gguf_type(dt)) == 256 ? 256 : 64, n = 6;
    float *wdq, *eye = calloc((size_t)(k * k), sizeof(float));
    vkl_tensor *W = gguf_weight(c, r, dt, n, k, &wdq);
    for (int64_t i = 0; i < k; i++) eye[i * k + i] = 1.0f;
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){k, k}, eye);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear(g, X, W, NULL);
    vkl_graph_keep(g, y);
    opc_run(g);
    float *got = opc_download(c, y);
    int bad = 0;
    for (int64_t i = 0; i < k && !bad; i++)
        for (int64_t j = 0; j < n && !bad; j++)
            /* bits, but a -0 weight sums to +0 (0 + -0 = +0) */
            if (memcmp(&got[i * n + j], &wdq[j * k + i], 4) && !(got[i * n + j] == 0.0f && wdq[j * k + i] == 0.0f)) {
                print_error("%s %s: element [%lld, %lld] is %.9g in the shader, %.9g in the reference\n", variant,
                            vkl_dtype_name(dt), (long long)j, (long long)i, got[i * n + j], wdq[j * k + i]);
                bad = 1;
            }
    assert_false(bad);
    /* the host conversion of the blocks (download as f32) is the reference's too */
    float *host = opc_download(c, W);
    assert_memory_equal(host, wdq, sizeof(float) * (size_t)(n * k));
    free(host);
    free(got);
    free(wdq);
    free(eye);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(W);
}

typedef struct {
    int64_t B, T, N, K;
} shape;

static void one_linear(vkl_ctx *c, vkl_test_rng *r, const char *variant, shape s, vkl_dtype dt)
{
    int64_t M = s.B * s.T, N = s.N, K = s.K;
    float *x = malloc(sizeof(float) * M * K), *dy = malloc(sizeof(float) * M * N), *wdq;
    vkl_test_fill(r, x, (size_t)(M * K), -1, 1);
    vkl_test_fill(r, dy, (size_t)(M * N), -1, 1);
    vkl_tensor *W = gguf_weight(c, r, dt, N, K, &wdq);
    int64_t xs[3] = {s.B, s.T, K}, ys[3] = {s.B, s.T, N};
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 3, xs, x), *DY = vkl_test_upload(c, VKL_F32, 3, ys, dy);
    vkl_err e = {{0}};
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear(g, X, W, NULL);
    vkl_tensor *wrt[1] = {X}, *grads[1] = {NULL};
    assert_int_equal(vkl_graph_backward(g, y, DY, wrt, 1, grads, &e), 0);
    assert_non_null(grads[0]);
    vkl_graph_keep(g, y);
    vkl_graph_keep(g, grads[0]);
    opc_run(g);
    float *got = opc_download(c, y), *gdx = opc_download(c, grads[0]);
    float *want = malloc(sizeof(float) * M * N), *wdx = malloc(sizeof(float) * M * K);
    int64_t ast[4] = {0, 0, K, 1}, bst[4] = {0, 0, 1, K}, dst[4] = {0, 0, N, 1}, wst[4] = {0, 0, K, 1};
    vkl_ref_matmul(x, ast, wdq, bst, NULL, want, 1, 1, M, N, K);
    vkl_ref_matmul(dy, dst, wdq, wst, NULL, wdx, 1, 1, M, K, N);
    char what[160];
    snprintf(what, sizeof what, "%s %s linear [%lld,%lld,%lld] x [%lld,%lld]^T", variant, vkl_dtype_name(dt),
             (long long)s.B, (long long)s.T, (long long)K, (long long)N, (long long)K);
    vkl_test_assert_close(what, got, want, (size_t)(M * N), 2e-5f, 1e-5f);
    snprintf(what, sizeof what, "%s %s input gradient [%lld,%lld] x [%lld,%lld]", variant, vkl_dtype_name(dt),
             (long long)M, (long long)N, (long long)N, (long long)K);
    vkl_test_assert_close(what, gdx, wdx, (size_t)(M * K), 2e-5f, 1e-5f);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(DY);
    vkl_tensor_free(W);
    free(x); free(dy); free(wdq); free(got); free(gdx); free(want); free(wdx);
}

static void values_exact(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 30);
    for (int v = 0; v < 3; v++) {
        setenv("VKLORA_MATMUL_VARIANT", variants[v], 1);
        vkl_ctx *c = vkl_test_ctx(NULL);
        for (int t = 0; t < NTYPES; t++) exact_values(c, &r, variants[v], types[t]);
        vkl_test_ctx_done(c);
    }
    unsetenv("VKLORA_MATMUL_VARIANT");
}

static void linear_every_type(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 31);
    /* M = 1 and M > 1 (batched); K = 96, 160, 288 are no multiple of the
     * register tiles' 64 nor of the tiled shader's 16-wide steps past whole
     * tiles; odd N (the gradient's inner dimension, its scalar tail) */
    const shape s32[] = {{1, 1, 5, 96}, {1, 7, 33, 64}, {2, 3, 40, 160}, {1, 2, 9, 288}};
    const shape s256[] = {{1, 1, 7, 256}, {1, 5, 9, 512}, {2, 3, 33, 256}};
    for (int v = 0; v < 3; v++) {
        setenv("VKLORA_MATMUL_VARIANT", variants[v], 1);
        vkl_ctx *c = vkl_test_ctx(NULL);
        for (int t = 0; t < NTYPES; t++) {
            int k_quant = vkl_gguf_type_block(vkl_dtype_gguf_type(types[t])) == 256;
            const shape *sh = k_quant ? s256 : s32;
            int ns = v == 0 ? (k_quant ? 3 : 4) : 2; /* the other variants: M = 1 and one batched shape */
            for (int i = 0; i < ns; i++) one_linear(c, &r, variants[v], sh[i], types[t]);
        }
        vkl_test_ctx_done(c);
    }
    unsetenv("VKLORA_MATMUL_VARIANT");
}

/* y = x W^T + s * (x A^T) B^T with W Q4_K (LoRA's fused second product). */
static void lora_on_gguf(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 32);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t M = 3, N = 10, K = 256, R = 2;
    float *x = malloc(sizeof(float) * M * K), *a = malloc(sizeof(float) * R * K), b[10 * 2], sc[2] = {0.5f, 0.5f}, *wdq;
    vkl_test_fill(&r, x, (size_t)(M * K), -1, 1);
    vkl_test_fill(&r, a, (size_t)(R * K), -1, 1);
    vkl_test_fill(&r, b, sizeof b / 4, -1, 1);
    vkl_tensor *W = gguf_weight(c, &r, VKL_Q4_K, N, K, &wdq);
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){M, K}, x);
    vkl_tensor *A = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){R, K}, a);
    vkl_tensor *B = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){N, R}, b);
    vkl_tensor *S = vkl_test_upload(c, VKL_F32, 1, (int64_t[]){R}, sc);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear_lora(g, X, W, NULL, A, B, S);
    vkl_graph_keep(g, y);
    opc_run(g);
    float *got = opc_download(c, y), want[3 * 10];
    opc_ref_linear_lora(x, wdq, a, b, sc, M, N, K, R, want);
    vkl_test_assert_close("LoRA on a Q4_K base", got, want, (size_t)(M * N), 2e-5f, 1e-5f);
    free(got);
    vkl_graph_free(g);

    /* a weight gradient is refused (frozen) */
    vkl_err e = {{0}};
    g = vkl_graph_new(c);
    y = vkl_linear(g, X, W, NULL);
    vkl_tensor *wrt[1] = {W}, *gr[1] = {NULL};
    assert_int_equal(vkl_graph_backward(g, y, NULL, wrt, 1, gr, &e), -1);
    vkl_graph_free(g);
    /* the embedding gather does not read GGUF blocks */
    g = vkl_graph_new(c);
    vkl_tensor *ids = vkl_graph_tensor(g, VKL_I32, 1, (int64_t[]){2});
    assert_null(vkl_embedding(g, W, ids));
    print_message("embedding refused: %s\n", vkl_graph_error(g));
    assert_non_null(strstr(vkl_graph_error(g), "GGUF"));
    vkl_graph_free(g);
    vkl_tensor_free(X); vkl_tensor_free(A); vkl_tensor_free(B); vkl_tensor_free(S); vkl_tensor_free(W);
    free(x); free(a); free(wdq);

    /* rows that are not whole blocks: 4 x 48 Q8_0 holds 6 blocks but a row is 1.5 */
    W = vkl_tensor_new(c, VKL_Q8_0, 2, (int64_t[]){4, 48}, &e);
    assert_non_null(W);
    g = vkl_graph_new(c);
    vkl_tensor *X2 = vkl_graph_tensor(g, VKL_F32, 2, (int64_t[]){2, 48});
    assert_null(vkl_linear(g, X2, W, NULL));
    print_message("refused: %s\n", vkl_graph_error(g));
    assert_non_null(strstr(vkl_graph_error(g), "whole blocks"));
    vkl_graph_free(g);
    vkl_tensor_free(W);
    /* f32 values that are not whole blocks do not quantise */
    float v[40] = {0};
    W = vkl_tensor_new(c, VKL_Q8_0, 2, (int64_t[]){1, 40}, &e);
    assert_non_null(W);
    assert_int_equal(vkl_tensor_upload(c, W, v, VKL_F32, &e), -1);
    print_message("refused: %s\n", e.msg);
    vkl_tensor_free(W);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_exact),
        cmocka_unit_test(linear_every_type),
        cmocka_unit_test(lora_on_gguf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
