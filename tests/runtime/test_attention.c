/* vkl_attention against the double-precision CPU reference (naive
 * softmax(QK^T * scale) V): odd shapes, every head dimension the models use,
 * causal and not, self and cross attention, token-layout (permuted) inputs,
 * 16-bit inputs, both kernels (streaming and shared-memory tiles) in every
 * device profile; keys split into chunks under a 64 KiB binding limit; a
 * 4096 x 4096 case whose memory stays linear; and clear errors. */
#include "vkl_test.h"
#include "ops.h"
#include "ref/vkl_ref.h"
#include "vkl.h"
#include "vkl_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Attention nodes of a graph (views are nodes too, and do not count here). */
static int attention_nodes(vkl_graph *g)
{
    int n = 0;
    for (int i = 0; i < vkl_graph_node_count(g); i++) n += !strcmp(vkl_graph_node_at(g, i)->op, "attention");
    return n;
}

/* One attention operand on the device, either stored [B,H,L,D] or in the
 * token layout [B,L,H*D] and viewed as [B,H,L,D] (reshape + permute); host
 * data and its element strides for the reference. */
typedef struct {
    vkl_tensor *t;   /* persistent storage */
    float *host;
    int64_t st[4];   /* strides of the [B,H,L,D] view */
} operand;

static operand make_operand(vkl_ctx *c, vkl_test_rng *r, vkl_dtype dt, int tokens, int64_t B, int64_t H, int64_t L,
                            int64_t D, float amp)
{
    operand o;
    int64_t n = B * H * L * D;
    o.host = malloc(sizeof(float) * (size_t)n);
    vkl_test_fill(r, o.host, (size_t)n, -amp, amp);
    vkl_test_round_to(dt, o.host, (size_t)n);
    if (tokens) {
        int64_t shape[3] = {B, L, H * D};
        o.t = vkl_test_upload(c, dt, 3, shape, o.host);
        int64_t st[4] = {L * H * D, D, H * D, 1};
        memcpy(o.st, st, sizeof st);
    } else {
        int64_t shape[4] = {B, H, L, D};
        o.t = vkl_test_upload(c, dt, 4, shape, o.host);
        int64_t st[4] = {H * L * D, L * D, D, 1};
        memcpy(o.st, st, sizeof st);
    }
    return o;
}

static vkl_tensor *view(vkl_graph *g, const operand *o, int tokens, int64_t B, int64_t H, int64_t L, int64_t D)
{
    if (!tokens) return o->t;
    int64_t s4[4] = {B, L, H, D};
    int perm[4] = {0, 2, 1, 3};
    return vkl_permute(g, vkl_reshape(g, o->t, 4, s4), perm);
}

static void free_operand(operand *o)
{
    vkl_tensor_free(o->t);
    free(o->host);
}

typedef struct {
    int64_t B, H, Lq, Lk, D;
    int causal, tokens;
    vkl_dtype dt;
    vkl_attn_variant variant;
} attn_case;

/* Runs one case; returns the number of attention nodes the graph used. */
static int check_case(vkl_ctx *c, vkl_test_rng *r, const attn_case *a, float atol, float rtol)
{
    operand q = make_operand(c, r, a->dt, a->tokens, a->B, a->H, a->Lq, a->D, 1.5f);
    operand k = make_operand(c, r, a->dt, a->tokens, a->B, a->H, a->Lk, a->D, 1.5f);
    operand v = make_operand(c, r, a->dt, a->tokens, a->B, a->H, a->Lk, a->D, 1.0f);
    float scale = 1.0f / sqrtf((float)a->D);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_attention_ex(g, view(g, &q, a->tokens, a->B, a->H, a->Lq, a->D),
                                     view(g, &k, a->tokens, a->B, a->H, a->Lk, a->D),
                                     view(g, &v, a->tokens, a->B, a->H, a->Lk, a->D), scale, a->causal, a->variant);
    if (!y) {
        print_error("attention: %s\n", vkl_graph_error(g));
        fail();
    }
    vkl_graph_keep(g, y);
    vkl_test_run_graph(g);
    int nodes = attention_nodes(g);
    assert_int_equal(y->ndim, 4);
    assert_true(y->shape[0] == a->B && y->shape[1] == a->H && y->shape[2] == a->Lq && y->shape[3] == a->D);
    float *got = vkl_test_download(c, y);
    size_t n = (size_t)(a->B * a->H * a->Lq * a->D);
    float *want = malloc(sizeof(float) * n);
    vkl_ref_attention(q.host, q.st, k.host, k.st, v.host, v.st, a->B, a->H, a->Lq, a->Lk, a->D, scale, a->causal,
                      want);
    char what[160];
    snprintf(what, sizeof what, "attention %s B=%lld H=%lld Lq=%lld Lk=%lld D=%lld %s%s%s (profile %s)",
             a->variant == VKL_ATTN_TILED ? "tiled" : "stream", (long long)a->B, (long long)a->H, (long long)a->Lq,
             (long long)a->Lk, (long long)a->D, vkl_dtype_name(a->dt), a->causal ? " causal" : "",
             a->tokens ? " tokens" : "", vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, n, atol, rtol);
    free(got);
    free(want);
    vkl_graph_free(g);
    free_operand(&q);
    free_operand(&k);
    free_operand(&v);
    return nodes;
}

static void attention_shapes_dims_variants(void **state)
{
    (void)state;
    /* Each shader variant is compiled per head dimension, dtype and flags, and
     * lavapipe takes seconds for the large ones: the large dimensions
     * alternate between the two kernels, the small ones run both; the second
     * profile repeats the same cases (same pipelines, other device caps). */
    static const struct { int64_t d, lq, lk; int causal, tokens; vkl_dtype dt; int var; } cases[] = {
        {4, 13, 77, 1, 1, VKL_F32, VKL_ATTN_STREAM},   {4, 77, 13, 0, 0, VKL_F16, VKL_ATTN_TILED},
        {8, 130, 77, 1, 0, VKL_BF16, VKL_ATTN_STREAM}, {8, 13, 130, 0, 1, VKL_F32, VKL_ATTN_TILED},
        {40, 130, 130, 0, 0, VKL_F16, VKL_ATTN_STREAM}, {64, 77, 130, 1, 1, VKL_F32, VKL_ATTN_TILED},
        {80, 130, 77, 0, 1, VKL_F32, VKL_ATTN_STREAM}, {128, 13, 77, 0, 0, VKL_BF16, VKL_ATTN_TILED},
        {160, 77, 77, 1, 1, VKL_F16, VKL_ATTN_STREAM},
    };
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 11);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int i = 0; i < (int)(sizeof cases / sizeof *cases); i++) {
            attn_case a = {2, 3, cases[i].lq, cases[i].lk, cases[i].d, cases[i].causal, cases[i].tokens, cases[i].dt,
                           (vkl_attn_variant)cases[i].var};
            assert_int_equal(check_case(c, &r, &a, 3e-5f, 2e-4f), 1);
        }
        vkl_test_ctx_done(c);
    }
}

/* Every combination of kernel, causal, layout and dtype on small shapes
 * (self and cross attention, more queries than keys and fewer). */
static void attention_flags_matrix(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 12);
    vkl_ctx *c = vkl_test_ctx(NULL);
    for (int var = VKL_ATTN_STREAM; var <= VKL_ATTN_TILED; var++)
        for (int causal = 0; causal < 2; causal++)
            for (int tokens = 0; tokens < 2; tokens++)
                for (int dt = VKL_F32; dt <= VKL_BF16; dt++) {
                    attn_case a = {2, 3, tokens ? 21 : 37, tokens ? 37 : 21, 8, causal, tokens, (vkl_dtype)dt,
                                   (vkl_attn_variant)var};
                    check_case(c, &r, &a, 3e-5f, 2e-4f);
                }
    vkl_test_ctx_done(c);
}

/* Under a 64 KiB binding limit one (batch, head) slice of k and v in the
 * token layout spans more than a binding: the keys are processed in chunks
 * (nodes) that carry the softmax state, and q and the output are split per
 * (batch, head). */
static void attention_small_binding_key_chunks(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 13);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    for (int var = VKL_ATTN_STREAM; var <= VKL_ATTN_TILED; var++)
        for (int causal = 0; causal < 2; causal++) {
            attn_case a = {2, 8, 150, 700, 8, causal, 1, causal ? VKL_F16 : VKL_F32, (vkl_attn_variant)var};
            int nodes = check_case(c, &r, &a, 3e-5f, 2e-4f);
            /* a slice of k spans 699 * 64 + 8 elements: 175 KiB in f32, 87 KiB in f16 */
            assert_int_equal(nodes, causal ? 2 : 3);
        }
    vkl_test_ctx_done(c);
}

/* 4096 x 4096, head dim 40 (SD 1.5 at 512 px, first block): runs under
 * lavapipe's binding limit in one node, and the memory the graph needs is
 * the output alone, linear in the sequence length. Checked on sampled rows. */
static void attention_4096_linear_memory(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 14);
    vkl_ctx *c = vkl_test_ctx(NULL);
    const int64_t L = 4096, D = 40;
    operand q = make_operand(c, &r, VKL_F16, 0, 1, 1, L, D, 1.5f);
    operand k = make_operand(c, &r, VKL_F16, 0, 1, 1, L, D, 1.5f);
    operand v = make_operand(c, &r, VKL_F16, 0, 1, 1, L, D, 1.0f);
    float scale = 1.0f / sqrtf((float)D);
    vkl_mem_reset_peak(c);
    vkl_mem_stats before;
    vkl_mem_get_stats(c, &before);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_attention(g, q.t, k.t, v.t, scale, 0);
    vkl_graph_keep(g, y);
    vkl_test_run_graph(g);
    vkl_mem_stats after;
    vkl_mem_get_stats(c, &after);
    assert_int_equal(attention_nodes(g), 1);
    uint64_t grown = after.total_peak - before.total_current;
    /* the output (L * D f32 = 640 KiB) and nothing of size L * L (64 MiB) */
    assert_true(grown <= (uint64_t)(L * D * 4) + (1u << 20));
    float *got = vkl_test_download(c, y);
    float want[40];
    for (int64_t i = 0; i < L; i += 97) {
        vkl_ref_attention(q.host + i * D, q.st, k.host, k.st, v.host, v.st, 1, 1, 1, L, D, scale, 0, want);
        vkl_test_assert_close("attention 4096x4096 row", got + i * D, want, (size_t)D, 3e-5f, 2e-4f);
    }
    free(got);
    vkl_graph_free(g);
    free_operand(&q);
    free_operand(&k);
    free_operand(&v);
    vkl_test_ctx_done(c);
}

/* Head dims past the fused kernels' (the SD VAE's 512) run unfused, in
 * both layouts and storage types; causal ones are refused. */
static void attention_wide_heads_unfused(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 15);
    vkl_ctx *c = vkl_test_ctx(NULL);
    attn_case a = {2, 1, 37, 53, VKL_ATTN_MAX_FUSED_D + 1, 0, 1, VKL_F32, VKL_ATTN_AUTO};
    assert_int_equal(check_case(c, &r, &a, 3e-5f, 2e-4f), 0);
    attn_case b = {1, 2, 64, 29, 512, 0, 0, VKL_F16, VKL_ATTN_AUTO};
    assert_int_equal(check_case(c, &r, &b, 3e-5f, 2e-4f), 0);
    vkl_err e = {{0}};
    int64_t big[4] = {1, 1, 4, VKL_ATTN_MAX_FUSED_D + 1};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, 4, big, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_attention(g, t, t, t, 1.0f, 1));
    assert_non_null(strstr(vkl_graph_error(g), "head dimension 257"));
    vkl_graph_free(g);
    vkl_tensor_free(t);
    vkl_test_ctx_done(c);
}

static void expect_error(vkl_ctx *c, const int64_t *qs, const int64_t *ks, const int64_t *vs, int nd, const char *needle)
{
    vkl_err e = {{0}};
    vkl_tensor *q = vkl_tensor_new(c, VKL_F32, nd, qs, &e), *k = vkl_tensor_new(c, VKL_F32, nd, ks, &e);
    vkl_tensor *v = vkl_tensor_new(c, VKL_F32, nd, vs, &e);
    assert_non_null(q);
    assert_non_null(k);
    assert_non_null(v);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_attention(g, q, k, v, 1.0f, 0));
    assert_true(vkl_graph_failed(g));
    if (!strstr(vkl_graph_error(g), needle)) {
        print_error("error '%s' does not mention '%s'\n", vkl_graph_error(g), needle);
        fail();
    }
    vkl_graph_free(g);
    vkl_tensor_free(q);
    vkl_tensor_free(k);
    vkl_tensor_free(v);
}

static void attention_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t q[4] = {2, 3, 13, 40}, k[4] = {2, 3, 77, 40}, kd[4] = {2, 3, 77, 41}, vl[4] = {2, 3, 76, 40};
    int64_t kb[4] = {1, 3, 77, 40};
    expect_error(c, q, kd, k, 4, "f32[2,3,77,41]");
    expect_error(c, q, k, vl, 4, "do not match");
    expect_error(c, q, kb, kb, 4, "do not match");
    expect_error(c, q, k, k, 3, "4-D");
    vkl_test_ctx_done(c);
    /* one key row wider than the binding: k and v are [1,1,4,80] f32 viewed
     * with a row stride; a 256-byte binding cannot hold one 320-byte row */
    vkl_ctx *s = vkl_test_ctx("binding=256");
    int64_t r80[4] = {1, 1, 4, 80};
    expect_error(s, r80, r80, r80, 4, "storage binding limit");
    vkl_test_ctx_done(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(attention_shapes_dims_variants),
        cmocka_unit_test(attention_flags_matrix),
        cmocka_unit_test(attention_small_binding_key_chunks),
        cmocka_unit_test(attention_4096_linear_memory),
        cmocka_unit_test(attention_wide_heads_unfused),
        cmocka_unit_test(attention_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
