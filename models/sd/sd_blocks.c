#include "sd/sd_blocks.h"

#include "lora/lora_apply.h"
#include "ops.h"

#include <math.h>
#include <stdio.h>

#define NEED(...) vkl_weights_need(n->w, n->g, __VA_ARGS__)

vkl_tensor *vkl_sd_store16(const vkl_sd_net *n, vkl_tensor *x)
{
    if (!x || !n->act16 || x->dtype != VKL_F32) return x;
    return vkl_convert(n->g, x, VKL_F16);
}

vkl_tensor *vkl_sd_to_tokens(vkl_graph *g, vkl_tensor *x)
{
    if (!x) return NULL;
    int64_t B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int perm[4] = {0, 2, 3, 1};
    vkl_tensor *t = vkl_contiguous(g, vkl_permute(g, x, perm));
    return vkl_reshape(g, t, 3, (int64_t[]){B, H * W, C});
}

vkl_tensor *vkl_sd_from_tokens(vkl_graph *g, vkl_tensor *t, int64_t H, int64_t W)
{
    if (!t) return NULL;
    int64_t B = t->shape[0], C = t->shape[2];
    int perm[3] = {0, 2, 1};
    vkl_tensor *x = vkl_contiguous(g, vkl_permute(g, t, perm));
    return vkl_reshape(g, x, 4, (int64_t[]){B, C, H, W});
}

vkl_tensor *vkl_sd_linear(vkl_sd_net *n, vkl_tensor *x, const char *prefix)
{
    vkl_tensor *w = NEED("%s.weight", prefix);
    char bn[256];
    snprintf(bn, sizeof bn, "%.240s.bias", prefix);
    if (!w) return NULL;
    return vkl_lora_linear(n->g, n->lora, prefix, x, w, vkl_weights_find(n->w, bn));
}

vkl_tensor *vkl_sd_conv_ex(vkl_sd_net *n, vkl_tensor *x, const char *prefix, const vkl_conv2d_params *p)
{
    vkl_tensor *w = NEED("%s.weight", prefix);
    char bn[256];
    snprintf(bn, sizeof bn, "%.240s.bias", prefix);
    if (!w) return NULL;
    return vkl_lora_conv2d(n->g, n->lora, prefix, x, w, vkl_weights_find(n->w, bn), p);
}

vkl_tensor *vkl_sd_conv(vkl_sd_net *n, vkl_tensor *x, const char *prefix, int stride, int pad)
{
    vkl_conv2d_params p = {stride, stride, pad, pad, pad, pad};
    return vkl_sd_conv_ex(n, x, prefix, &p);
}

vkl_tensor *vkl_sd_proj_tokens(vkl_sd_net *n, vkl_tensor *x, const char *prefix)
{
    vkl_tensor *w = NEED("%s.weight", prefix);
    char bn[256];
    snprintf(bn, sizeof bn, "%.240s.bias", prefix);
    if (!w) return NULL;
    if (w->ndim == 4) w = vkl_reshape(n->g, w, 2, (int64_t[]){w->shape[0], w->shape[1] * w->shape[2] * w->shape[3]});
    return vkl_lora_linear(n->g, n->lora, prefix, x, w, vkl_weights_find(n->w, bn));
}

vkl_tensor *vkl_sd_group_norm(vkl_sd_net *n, vkl_tensor *x, const char *prefix, int groups, float eps, int silu)
{
    vkl_tensor *w = NEED("%s.weight", prefix), *b = NEED("%s.bias", prefix);
    if (!w || !b) return NULL;
    return vkl_group_norm(n->g, x, groups, eps, w, b, silu);
}

vkl_tensor *vkl_sd_layer_norm(vkl_sd_net *n, vkl_tensor *x, const char *prefix, float eps)
{
    vkl_tensor *w = NEED("%s.weight", prefix), *b = NEED("%s.bias", prefix);
    if (!w || !b) return NULL;
    return vkl_layer_norm(n->g, x, w, b, eps);
}

vkl_tensor *vkl_sd_resnet(vkl_sd_net *n, vkl_tensor *x, vkl_tensor *temb_silu, const char *prefix, int groups,
                          float eps)
{
    char p[256];
    vkl_graph *g = n->g;
    /* mixed precision: the input, both normalised activations, the first
     * conv's output and the block output are what the backward pass reads
     * (norm inputs, adapter inputs); each is stored f16. conv2's output only
     * feeds the residual add, whose backward reads nothing, so it stays. */
    x = vkl_sd_store16(n, x);
    snprintf(p, sizeof p, "%s.norm1", prefix);
    vkl_tensor *h = vkl_sd_store16(n, vkl_sd_group_norm(n, x, p, groups, eps, 1));
    snprintf(p, sizeof p, "%s.conv1", prefix);
    h = vkl_sd_conv(n, h, p, 1, 1);
    if (temb_silu) {
        snprintf(p, sizeof p, "%s.time_emb_proj", prefix);
        vkl_tensor *t = vkl_sd_linear(n, temb_silu, p); /* [B, C] */
        if (!t) return NULL;
        t = vkl_reshape(g, t, 4, (int64_t[]){t->shape[0], t->shape[1], 1, 1});
        h = vkl_add(g, h, t);
    }
    h = vkl_sd_store16(n, h);
    snprintf(p, sizeof p, "%s.norm2", prefix);
    h = vkl_sd_store16(n, vkl_sd_group_norm(n, h, p, groups, eps, 1));
    snprintf(p, sizeof p, "%s.conv2", prefix);
    h = vkl_sd_conv(n, h, p, 1, 1);
    snprintf(p, sizeof p, "%s.conv_shortcut.weight", prefix);
    if (vkl_weights_find(n->w, p)) {
        snprintf(p, sizeof p, "%s.conv_shortcut", prefix);
        x = vkl_sd_conv(n, x, p, 1, 0);
    }
    return vkl_sd_store16(n, vkl_add(g, x, h));
}

static vkl_tensor *split_heads(vkl_graph *g, vkl_tensor *x, int heads)
{
    if (!x) return NULL;
    int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    int perm[4] = {0, 2, 1, 3};
    return vkl_permute(g, vkl_reshape(g, x, 4, (int64_t[]){B, L, heads, C / heads}), perm);
}

vkl_tensor *vkl_sd_attention(vkl_sd_net *n, vkl_tensor *x, vkl_tensor *ctx, const char *prefix, int heads)
{
    vkl_graph *g = n->g;
    char p[256];
    if (!ctx) ctx = x;
    snprintf(p, sizeof p, "%s.to_q", prefix);
    /* q, k, v are kept for the attention's backward: f16 in mixed precision */
    vkl_tensor *q = vkl_sd_store16(n, vkl_sd_linear(n, x, p));
    snprintf(p, sizeof p, "%s.to_k", prefix);
    vkl_tensor *k = vkl_sd_store16(n, vkl_sd_linear(n, ctx, p));
    snprintf(p, sizeof p, "%s.to_v", prefix);
    vkl_tensor *v = vkl_sd_store16(n, vkl_sd_linear(n, ctx, p));
    if (!q || !k || !v) return NULL;
    int64_t inner = q->shape[2];
    if (heads <= 0 || inner % heads) return vkl_graph_set_error(g, "%s: %d heads do not divide %lld", prefix, heads, (long long)inner);
    vkl_tensor *o = vkl_attention(g, split_heads(g, q, heads), split_heads(g, k, heads), split_heads(g, v, heads),
                                  1.0f / sqrtf((float)(inner / heads)), 0);
    if (!o) return NULL;
    int perm[4] = {0, 2, 1, 3};
    /* the token-layout copy is to_out's input (kept for its adapter): f16.
     * The attention's own output stays f32: its backward reads it. */
    o = vkl_sd_store16(n, vkl_contiguous(g, vkl_permute(g, o, perm)));
    o = vkl_reshape(g, o, 3, (int64_t[]){x->shape[0], x->shape[1], inner});
    snprintf(p, sizeof p, "%s.to_out.0", prefix);
    return vkl_sd_linear(n, o, p);
}

vkl_tensor *vkl_sd_spatial_transformer(vkl_sd_net *n, vkl_tensor *x, vkl_tensor *ctx, const char *prefix, int heads,
                                       int layers, int groups, float gn_eps, float ln_eps)
{
    if (!x) return NULL;
    vkl_graph *g = n->g;
    char p[256];
    int64_t H = x->shape[2], W = x->shape[3];
    snprintf(p, sizeof p, "%s.norm", prefix);
    /* mixed precision: every tensor a backward rule reads (norm inputs,
     * adapter inputs, the GEGLU input) and the residual stream are f16 */
    x = vkl_sd_store16(n, x);
    vkl_tensor *h = vkl_sd_group_norm(n, x, p, groups, gn_eps, 0);
    h = vkl_sd_to_tokens(g, vkl_sd_store16(n, h));
    snprintf(p, sizeof p, "%s.proj_in", prefix);
    h = vkl_sd_store16(n, vkl_sd_proj_tokens(n, h, p));
    for (int i = 0; i < layers; i++) {
        char b[200];
        snprintf(b, sizeof b, "%s.transformer_blocks.%d", prefix, i);
        snprintf(p, sizeof p, "%s.norm1", b);
        vkl_tensor *t = vkl_sd_store16(n, vkl_sd_layer_norm(n, h, p, ln_eps));
        snprintf(p, sizeof p, "%s.attn1", b);
        h = vkl_sd_store16(n, vkl_add(g, h, vkl_sd_attention(n, t, NULL, p, heads)));
        snprintf(p, sizeof p, "%s.norm2", b);
        t = vkl_sd_store16(n, vkl_sd_layer_norm(n, h, p, ln_eps));
        snprintf(p, sizeof p, "%s.attn2", b);
        h = vkl_sd_store16(n, vkl_add(g, h, vkl_sd_attention(n, t, ctx, p, heads)));
        snprintf(p, sizeof p, "%s.norm3", b);
        t = vkl_sd_store16(n, vkl_sd_layer_norm(n, h, p, ln_eps));
        snprintf(p, sizeof p, "%s.ff.net.0.proj", b);
        t = vkl_sd_store16(n, vkl_geglu(g, vkl_sd_store16(n, vkl_sd_linear(n, t, p))));
        snprintf(p, sizeof p, "%s.ff.net.2", b);
        h = vkl_sd_store16(n, vkl_add(g, h, vkl_sd_linear(n, t, p)));
    }
    snprintf(p, sizeof p, "%s.proj_out", prefix);
    h = vkl_sd_proj_tokens(n, h, p);
    return vkl_sd_store16(n, vkl_add(g, x, vkl_sd_from_tokens(g, h, H, W)));
}
