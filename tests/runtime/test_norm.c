/* Group norm, layer norm, RMS norm and softmax against their CPU references
 * (runtime/ref/ref_norm.c): random odd shapes, batch > 1, f32/f16/bf16
 * inputs and parameters, strided (permuted) inputs, long segments that span
 * several statistics workgroups, data far from zero mean, in every device
 * profile (so both the subgroup and the shared-memory reductions run), under
 * a 64 KiB binding limit, and the build errors; group norm and layer norm
 * also against the tiny SD UNet's activations recorded by diffusers, RMS norm
 * and softmax against the tiny LLaMA's (transformers). */
#include "op_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <math.h>
#include <string.h>

typedef struct {
    int64_t N, C, H, W;
    int nd;           /* 2: [N,C]; 3: [N,C,W]; 4: [N,C,H,W] */
    int groups;
    vkl_dtype xdt, pdt;
    int gamma, beta, silu;
    int channels_last; /* stored [N,H,W,C] and permuted to a channel-major view */
    float eps, lo, hi;
} gn_case;

static void check_group_norm(vkl_ctx *c, vkl_test_rng *r, const gn_case *k, float tol)
{
    int64_t S = k->H * k->W, n = k->N * k->C * S;
    float *x = opc_random(r, k->xdt, (size_t)n, k->lo, k->hi);
    float *stored = malloc(sizeof(float) * n);
    int cl = k->channels_last && k->nd >= 3;
    for (int64_t b = 0; b < k->N; b++)
        for (int64_t ch = 0; ch < k->C; ch++)
            for (int64_t s = 0; s < S; s++)
                stored[cl ? (b * S + s) * k->C + ch : (b * k->C + ch) * S + s] = x[(b * k->C + ch) * S + s];
    int64_t shape[4], sshape[4];
    if (k->nd == 4) {
        int64_t s4[4] = {k->N, k->C, k->H, k->W}, c4[4] = {k->N, k->H, k->W, k->C};
        memcpy(shape, s4, sizeof s4);
        memcpy(sshape, cl ? c4 : s4, sizeof s4);
    } else if (k->nd == 3) {
        int64_t s3[3] = {k->N, k->C, S}, c3[3] = {k->N, S, k->C};
        memcpy(shape, s3, sizeof s3);
        memcpy(sshape, cl ? c3 : s3, sizeof s3);
    } else {
        shape[0] = sshape[0] = k->N;
        shape[1] = sshape[1] = k->C;
    }
    float *gm = opc_random(r, k->pdt, (size_t)k->C, 0.5f, 1.5f), *bt = opc_random(r, k->pdt, (size_t)k->C, -0.5f, 0.5f);
    vkl_tensor *X = opc_upload_f32(c, k->xdt, k->nd, sshape, stored);
    vkl_tensor *G = opc_upload_f32(c, k->pdt, 1, &k->C, gm), *B = opc_upload_f32(c, k->pdt, 1, &k->C, bt);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *xv = X;
    if (cl) {
        int p4[4] = {0, 3, 1, 2}, p3[3] = {0, 2, 1};
        xv = vkl_permute(g, X, k->nd == 4 ? p4 : p3);
    }
    vkl_tensor *y = vkl_group_norm(g, xv, k->groups, k->eps, k->gamma ? G : NULL, k->beta ? B : NULL, k->silu);
    vkl_graph_keep(g, y);
    opc_run(g);
    for (int i = 0; i < k->nd; i++) assert_int_equal(y->shape[i], shape[i]);
    float *got = opc_download(c, y), *want = malloc(sizeof(float) * n);
    vkl_ref_group_norm(x, k->N, k->C, S, k->groups, k->eps, k->gamma ? gm : NULL, k->beta ? bt : NULL, k->silu, want);
    char what[160];
    snprintf(what, sizeof what, "group_norm [%lld,%lld,%lld,%lld]/%d nd%d x %s p %s g%d b%d silu%d cl%d (%s)",
             (long long)k->N, (long long)k->C, (long long)k->H, (long long)k->W, k->groups, k->nd,
             vkl_dtype_name(k->xdt), vkl_dtype_name(k->pdt), k->gamma, k->beta, k->silu, cl, vkl_ctx_caps(c)->profile);
    vkl_test_assert_close(what, got, want, (size_t)n, tol, tol);
    free(x); free(stored); free(gm); free(bt); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(G);
    vkl_tensor_free(B);
}

static void group_norm_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 101);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 14; trial++) {
            gn_case k;
            memset(&k, 0, sizeof k);
            k.groups = vkl_test_rng_int(&r, 1, 5);
            k.C = k.groups * vkl_test_rng_int(&r, 1, 5);
            k.N = vkl_test_rng_int(&r, 1, 3);
            k.nd = 2 + trial % 3;
            k.H = k.nd == 4 ? vkl_test_rng_int(&r, 1, 23) : 1;
            k.W = k.nd >= 3 ? vkl_test_rng_int(&r, 1, 41) : 1;
            k.xdt = (vkl_dtype)(trial % 3);
            k.pdt = (vkl_dtype)((trial / 3) % 3);
            k.gamma = trial % 4 != 1;
            k.beta = trial % 4 != 2;
            k.silu = trial & 1;
            k.channels_last = (trial / 2) & 1;
            k.eps = trial % 2 ? 1e-5f : 1e-6f;
            k.lo = -2;
            k.hi = 3;
            check_group_norm(c, &r, &k, 3e-5f);
        }
        vkl_test_ctx_done(c);
    }
}

/* The SD UNet shape: 320 channels at 64x64 in 32 groups (40960 elements per
 * group, ten statistics chunks), data with a large mean (a naive sum of
 * squares in fp32 would lose the variance), channels-last storage once. */
static void group_norm_sd_shape(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 102);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        gn_case k = {.N = 1, .C = 320, .H = 64, .W = 64, .nd = 4, .groups = 32, .xdt = VKL_F32, .pdt = VKL_F16,
                     .gamma = 1, .beta = 1, .silu = 1, .channels_last = p == 1, .eps = 1e-6f, .lo = 99, .hi = 101};
        check_group_norm(c, &r, &k, 1e-4f);
        /* an odd group length over several chunks, [N,C,L], f16 input */
        gn_case k2 = {.N = 2, .C = 96, .H = 1, .W = 2711, .nd = 3, .groups = 32, .xdt = VKL_F16, .pdt = VKL_BF16,
                      .gamma = 1, .beta = 1, .silu = 0, .eps = 1e-5f, .lo = -4, .hi = 1};
        check_group_norm(c, &r, &k2, 3e-5f);
        vkl_test_ctx_done(c);
    }
}

/* layer norm, RMS norm and softmax over rows, in one graph */
static void check_rows(vkl_ctx *c, vkl_test_rng *r, int64_t B, int64_t R, int64_t D, vkl_dtype xdt, vkl_dtype pdt,
                       int transposed, int affine, float tol)
{
    int64_t n = B * R * D;
    float *x = opc_random(r, xdt, (size_t)n, -3, 2);
    float *stored = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < R; i++)
            for (int64_t d = 0; d < D; d++)
                stored[transposed ? (b * D + d) * R + i : (b * R + i) * D + d] = x[(b * R + i) * D + d];
    int64_t shape[3] = {B, R, D}, tshape[3] = {B, D, R};
    float *gm = opc_random(r, pdt, (size_t)D, 0.5f, 1.5f), *bt = opc_random(r, pdt, (size_t)D, -0.5f, 0.5f);
    vkl_tensor *X = opc_upload_f32(c, xdt, 3, transposed ? tshape : shape, stored);
    vkl_tensor *G = opc_upload_f32(c, pdt, 1, &D, gm), *Bt = opc_upload_f32(c, pdt, 1, &D, bt);
    vkl_graph *g = vkl_graph_new(c);
    int perm[3] = {0, 2, 1};
    vkl_tensor *xv = transposed ? vkl_permute(g, X, perm) : X;
    float scale = D > 100 ? 0.125f : 1.5f;
    vkl_tensor *ln = vkl_layer_norm(g, xv, affine ? G : NULL, affine ? Bt : NULL, 1e-5f);
    vkl_tensor *rms = vkl_rms_norm(g, xv, affine ? G : NULL, 1e-6f);
    vkl_tensor *sm = vkl_softmax(g, xv, scale);
    vkl_graph_keep(g, ln);
    vkl_graph_keep(g, rms);
    vkl_graph_keep(g, sm);
    opc_run(g);
    float *want = malloc(sizeof(float) * n);
    char what[128];
    snprintf(what, sizeof what, "[%lld,%lld,%lld] x %s p %s transposed %d affine %d (%s)", (long long)B,
             (long long)R, (long long)D, vkl_dtype_name(xdt), vkl_dtype_name(pdt), transposed, affine,
             vkl_ctx_caps(c)->profile);
    char w2[160];
    float *got = opc_download(c, ln);
    vkl_ref_layer_norm(x, B * R, D, affine ? gm : NULL, affine ? bt : NULL, 1e-5, want);
    snprintf(w2, sizeof w2, "layer_norm %s", what);
    vkl_test_assert_close(w2, got, want, (size_t)n, tol, tol);
    free(got);
    got = opc_download(c, rms);
    vkl_ref_rms_norm(x, B * R, D, affine ? gm : NULL, 1e-6, want);
    snprintf(w2, sizeof w2, "rms_norm %s", what);
    vkl_test_assert_close(w2, got, want, (size_t)n, tol, tol);
    free(got);
    got = opc_download(c, sm);
    vkl_ref_softmax(x, B * R, D, scale, want);
    snprintf(w2, sizeof w2, "softmax %s", what);
    vkl_test_assert_close(w2, got, want, (size_t)n, 1e-7f, 1e-5f);
    free(got);
    free(x); free(stored); free(gm); free(bt); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(G);
    vkl_tensor_free(Bt);
}

static void row_norms_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 103);
    static const int64_t lens[] = {1, 2, 32, 77, 320, 1000, 4097, 5120, 9001};
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 12; trial++) {
            int64_t D = lens[trial % 9];
            int64_t B = vkl_test_rng_int(&r, 1, 3), R = vkl_test_rng_int(&r, 1, D > 1000 ? 5 : 37);
            check_rows(c, &r, B, R, D, (vkl_dtype)(trial % 3), (vkl_dtype)((trial / 3) % 3), (trial / 2) & 1,
                       trial % 5 != 0, 3e-5f);
        }
        vkl_test_ctx_done(c);
    }
}

/* Large logits (a naive exp overflows) and masked (-inf) entries. */
static void softmax_stable_and_masked(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 104);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        int64_t shape[2] = {7, 5003};
        int64_t n = shape[0] * shape[1];
        float *x = opc_random(&r, VKL_F32, (size_t)n, -2000, 2000);
        for (int64_t i = 0; i < n; i += 3) x[i] = -INFINITY;
        for (int64_t i = 0; i < 4100; i++) x[i] = -INFINITY; /* a whole first chunk of row 0 masked */
        vkl_tensor *X = opc_upload_f32(c, VKL_F32, 2, shape, x);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = vkl_softmax(g, X, 0.01f);
        vkl_graph_keep(g, y);
        opc_run(g);
        float *got = opc_download(c, y), *want = malloc(sizeof(float) * n);
        vkl_ref_softmax(x, shape[0], shape[1], 0.01f, want);
        vkl_test_assert_close("softmax large/masked", got, want, (size_t)n, 1e-7f, 1e-5f);
        for (int64_t rr = 0; rr < shape[0]; rr++) {
            double s = 0;
            for (int64_t i = 0; i < shape[1]; i++) s += got[rr * shape[1] + i];
            assert_true(fabs(s - 1) < 1e-4);
        }
        free(x); free(got); free(want);
        vkl_graph_free(g);
        vkl_tensor_free(X);
        vkl_test_ctx_done(c);
    }
}

/* Tensors larger than a 64 KiB binding: split by segments. A strided input
 * whose span does not fit one binding is a clear error naming the limit. */
static void norms_under_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 105);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    gn_case k = {.N = 3, .C = 64, .H = 19, .W = 21, .nd = 4, .groups = 16, .xdt = VKL_F32, .pdt = VKL_F32,
                 .gamma = 1, .beta = 1, .silu = 1, .eps = 1e-5f, .lo = -1, .hi = 1};
    check_group_norm(c, &r, &k, 3e-5f);
    k.xdt = VKL_BF16;
    k.silu = 0;
    check_group_norm(c, &r, &k, 3e-5f);
    check_rows(c, &r, 2, 203, 301, VKL_F32, VKL_F16, 0, 1, 3e-5f);
    check_rows(c, &r, 1, 9, 12001, VKL_F16, VKL_F32, 0, 1, 3e-5f);

    int64_t shape[3] = {2, 300, 64};
    vkl_err e = {{0}};
    vkl_tensor *X = vkl_tensor_new(c, VKL_F32, 3, shape, &e);
    vkl_graph *g = vkl_graph_new(c);
    int perm[3] = {0, 2, 1};
    vkl_tensor *y = vkl_layer_norm(g, vkl_permute(g, X, perm), NULL, NULL, 1e-5f);
    vkl_graph_keep(g, y);
    assert_int_not_equal(vkl_graph_plan(g, &e), 0);
    assert_non_null(strstr(e.msg, "maxStorageBufferRange"));
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_test_ctx_done(c);
}

/* diffusers' tiny UNet at t=500: conv_norm_out = GroupNorm(8 groups, eps 1e-5)
 * of the last up block's output, and the first transformer block's norm1 =
 * LayerNorm(eps 1e-5) over the channels of proj_in's output seen token-major
 * (a permuted view). Weights are stored as f16 and used as f16 tensors. */
static void norms_match_diffusers(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/unet.safetensors");
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd/unet/diffusion_pytorch_model.safetensors");
    const char *acts = "refkit/sd/vectors/unet.safetensors";
    const char *wts = "refkit/sd/tiny-sd/unet/diffusion_pytorch_model.safetensors";
    int64_t shape[4] = {2, 32, 16, 16}, C = 32, n = 2 * 32 * 16 * 16;
    float *up = opc_ref(acts, "act_t500.up_blocks.2", n);
    float *gn_want = opc_ref(acts, "act_t500.conv_norm_out", n);
    float *pin = opc_ref(acts, "act_t500.down_blocks.0.attentions.0.proj_in", n);
    float *ln_want = opc_ref(acts, "act_t500.down_blocks.0.attentions.0.transformer_blocks.0.norm1", n);
    float *gw = opc_ref(wts, "conv_norm_out.weight", 32), *gb = opc_ref(wts, "conv_norm_out.bias", 32);
    float *lw = opc_ref(wts, "down_blocks.0.attentions.0.transformer_blocks.0.norm1.weight", 32);
    float *lb = opc_ref(wts, "down_blocks.0.attentions.0.transformer_blocks.0.norm1.bias", 32);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        vkl_tensor *U = opc_upload_f32(c, VKL_F32, 4, shape, up), *P = opc_upload_f32(c, VKL_F32, 4, shape, pin);
        vkl_tensor *GW = opc_upload_f32(c, VKL_F16, 1, &C, gw), *GB = opc_upload_f32(c, VKL_F16, 1, &C, gb);
        vkl_tensor *LW = opc_upload_f32(c, VKL_F16, 1, &C, lw), *LB = opc_upload_f32(c, VKL_F16, 1, &C, lb);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *gn = vkl_group_norm(g, U, 8, 1e-5f, GW, GB, 0);
        int perm[4] = {0, 2, 3, 1};   /* [N,C,H,W] -> [N,H,W,C] = tokens x channels */
        vkl_tensor *ln = vkl_layer_norm(g, vkl_permute(g, P, perm), LW, LB, 1e-5f);
        vkl_graph_keep(g, gn);
        vkl_graph_keep(g, ln);
        opc_run(g);
        float *got = opc_download(c, gn);
        vkl_test_assert_close("group_norm vs diffusers conv_norm_out", got, gn_want, (size_t)n, 1e-5f, 1e-5f);
        free(got);
        got = opc_download(c, ln);
        vkl_test_assert_close("layer_norm vs diffusers norm1", got, ln_want, (size_t)n, 1e-5f, 1e-5f);
        free(got);
        vkl_graph_free(g);
        vkl_tensor_free(U); vkl_tensor_free(P);
        vkl_tensor_free(GW); vkl_tensor_free(GB); vkl_tensor_free(LW); vkl_tensor_free(LB);
        vkl_test_ctx_done(c);
    }
    free(up); free(gn_want); free(pin); free(ln_want); free(gw); free(gb); free(lw); free(lb);
}

/* The tiny LLaMA (transformers): attn_norm_out = RMSNorm(eps 1e-5) of each
 * layer's input with input_layernorm.weight, and attn_probs = softmax of
 * q k^T / sqrt(16) with the causal mask (-inf), scores formed on the CPU from
 * the recorded roped q and k (GQA: head h uses kv head h / 2). */
static void rms_softmax_match_transformers(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/vectors/hidden_states.safetensors");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    const char *hs = "refkit/lm/vectors/hidden_states.safetensors", *wts = "refkit/lm/tiny-llama/model.safetensors";
    vkl_ctx *c = vkl_test_ctx(NULL);
    const int64_t L = 33, Dm = 64, H = 4, hd = 16;
    for (int layer = 0; layer < 3; layer++) {
        char name[96];
        snprintf(name, sizeof name, "layers.%d.input", layer);
        float *x = opc_ref(hs, name, L * Dm);
        snprintf(name, sizeof name, "layers.%d.attn_norm_out", layer);
        float *rms_want = opc_ref(hs, name, L * Dm);
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", layer);
        float *w = opc_ref(wts, name, Dm);
        snprintf(name, sizeof name, "layers.%d.q_rope", layer);
        float *q = opc_ref(hs, name, H * L * hd);
        snprintf(name, sizeof name, "layers.%d.k_rope", layer);
        float *k = opc_ref(hs, name, 2 * L * hd);
        snprintf(name, sizeof name, "layers.%d.attn_probs", layer);
        float *p_want = opc_ref(hs, name, H * L * L);
        float *scores = malloc(sizeof(float) * H * L * L);
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < L; i++)
                for (int64_t j = 0; j < L; j++) {
                    double acc = 0;
                    for (int64_t d = 0; d < hd; d++) acc += (double)q[(h * L + i) * hd + d] * k[((h / 2) * L + j) * hd + d];
                    scores[(h * L + i) * L + j] = j > i ? -INFINITY : (float)acc;
                }
        int64_t xs[2] = {L, Dm}, ss[3] = {H, L, L};
        vkl_tensor *X = opc_upload_f32(c, VKL_F32, 2, xs, x), *W = opc_upload_f32(c, VKL_F32, 1, &Dm, w);
        vkl_tensor *S = opc_upload_f32(c, VKL_F32, 3, ss, scores);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = vkl_rms_norm(g, X, W, 1e-5f), *pr = vkl_softmax(g, S, 0.25f);
        vkl_graph_keep(g, y);
        vkl_graph_keep(g, pr);
        opc_run(g);
        float *got = opc_download(c, y);
        vkl_test_assert_close("rms_norm vs transformers attn_norm_out", got, rms_want, (size_t)(L * Dm), 1e-5f, 1e-5f);
        free(got);
        got = opc_download(c, pr);
        vkl_test_assert_close("softmax vs transformers attn_probs", got, p_want, (size_t)(H * L * L), 1e-6f, 1e-5f);
        free(got);
        free(x); free(rms_want); free(w); free(q); free(k); free(p_want); free(scores);
        vkl_graph_free(g);
        vkl_tensor_free(X);
        vkl_tensor_free(W);
        vkl_tensor_free(S);
    }
    vkl_test_ctx_done(c);
}

static void norm_build_errors(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t xs[4] = {2, 30, 5, 5}, gs[1] = {31}, is[2] = {3, 4};
    vkl_tensor *X = vkl_tensor_new(c, VKL_F32, 4, xs, &e), *G = vkl_tensor_new(c, VKL_F32, 1, gs, &e);
    vkl_tensor *I = vkl_tensor_new(c, VKL_I32, 2, is, &e);
    struct { const char *want; int which; } cases[] = {
        {"groups do not divide", 0}, {"gamma", 1}, {"eps", 2}, {"must be f32", 3}, {"gamma", 4}, {"scale", 5},
    };
    for (int i = 0; i < 6; i++) {
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *y = NULL;
        switch (cases[i].which) {
        case 0: y = vkl_group_norm(g, X, 32, 1e-5f, NULL, NULL, 0); break;
        case 1: y = vkl_group_norm(g, X, 3, 1e-5f, G, NULL, 0); break;
        case 2: y = vkl_layer_norm(g, X, NULL, NULL, -1.0f); break;
        case 3: y = vkl_rms_norm(g, I, NULL, 1e-5f); break;
        case 4: y = vkl_layer_norm(g, X, G, NULL, 1e-5f); break;
        case 5: y = vkl_softmax(g, X, INFINITY); break;
        }
        assert_null(y);
        assert_true(vkl_graph_failed(g));
        if (!strstr(vkl_graph_error(g), cases[i].want)) {
            print_error("case %d: error '%s' does not mention '%s'\n", i, vkl_graph_error(g), cases[i].want);
            fail();
        }
        vkl_graph_free(g);
    }
    vkl_tensor_free(X);
    vkl_tensor_free(G);
    vkl_tensor_free(I);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(group_norm_random),
        cmocka_unit_test(group_norm_sd_shape),
        cmocka_unit_test(row_norms_random),
        cmocka_unit_test(softmax_stable_and_masked),
        cmocka_unit_test(norms_under_small_binding),
        cmocka_unit_test(norms_match_diffusers),
        cmocka_unit_test(rms_softmax_match_transformers),
        cmocka_unit_test(norm_build_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
