#include "sd/clip_text.h"

#include "lora/lora_apply.h"
#include "ops.h"

#include <math.h>

#define W(...) vkl_weights_need(m->w, g, __VA_ARGS__)

/* The linear layer named prefix + name (weights name.weight / name.bias), with
 * adapters when the model has some for it. */
static vkl_tensor *proj(vkl_graph *g, const vkl_clip_text *m, vkl_tensor *x, const char *fmt, int i)
{
    char name[256], full[300];
    snprintf(name, sizeof name, fmt, i);
    snprintf(full, sizeof full, "%s%s", m->prefix, name);
    vkl_tensor *w = vkl_weights_need(m->w, g, "%s.weight", full), *b = vkl_weights_need(m->w, g, "%s.bias", full);
    if (!w || !b) return NULL;
    return vkl_lora_linear(g, m->lora, full, x, w, b);
}

/* x [B, L, D] -> [B, H, L, D/H] view */
static vkl_tensor *heads_view(vkl_graph *g, vkl_tensor *x, int64_t B, int64_t L, int64_t H, int64_t Dh)
{
    int64_t s4[4] = {B, L, H, Dh};
    int perm[4] = {0, 2, 1, 3};
    return vkl_permute(g, vkl_reshape(g, x, 4, s4), perm);
}

static vkl_tensor *self_attention(vkl_graph *g, const vkl_clip_text *m, int layer, vkl_tensor *x, int64_t B,
                                  int64_t L)
{
    int64_t D = m->cfg->hidden, H = m->cfg->heads, Dh = D / H;
    vkl_tensor *q = proj(g, m, x, "text_model.encoder.layers.%d.self_attn.q_proj", layer);
    vkl_tensor *k = proj(g, m, x, "text_model.encoder.layers.%d.self_attn.k_proj", layer);
    vkl_tensor *v = proj(g, m, x, "text_model.encoder.layers.%d.self_attn.v_proj", layer);
    if (!q || !k || !v) return NULL;
    vkl_tensor *o = vkl_attention(g, heads_view(g, q, B, L, H, Dh), heads_view(g, k, B, L, H, Dh),
                                  heads_view(g, v, B, L, H, Dh), 1.0f / sqrtf((float)Dh), 1);
    /* [B, H, L, Dh] -> [B, L, H, Dh] -> [B, L, D] */
    int perm[4] = {0, 2, 1, 3};
    int64_t s3[3] = {B, L, D};
    vkl_tensor *tok = vkl_reshape(g, vkl_contiguous(g, vkl_permute(g, o, perm)), 3, s3);
    return proj(g, m, tok, "text_model.encoder.layers.%d.self_attn.out_proj", layer);
}

vkl_tensor *vkl_clip_text_forward(vkl_graph *g, const vkl_clip_text *m, vkl_tensor *ids, int skip, int final_norm,
                                  vkl_tensor **layer_out)
{
    if (!ids || vkl_graph_failed(g)) return NULL;
    const vkl_sd_text_config *c = m->cfg;
    const char *p = m->prefix;
    if (ids->ndim != 2 || ids->dtype != VKL_I32)
        return vkl_graph_set_error(g, "text encoder: token ids must be i32 [batch, tokens]");
    int64_t B = ids->shape[0], L = ids->shape[1];
    if (L > c->max_positions)
        return vkl_graph_set_error(g, "text encoder: %lld tokens, the model has %d positions", (long long)L,
                                   c->max_positions);
    if (skip < 0 || skip >= c->layers)
        return vkl_graph_set_error(g, "text encoder: cannot skip %d of %d layers", skip, c->layers);
    if (c->heads <= 0 || c->hidden % c->heads)
        return vkl_graph_set_error(g, "text encoder: %d heads do not divide width %d", c->heads, c->hidden);
    vkl_tensor *tok = vkl_embedding(g, W("%stext_model.embeddings.token_embedding.weight", p), ids);
    vkl_tensor *pos_table = W("%stext_model.embeddings.position_embedding.weight", p);
    if (!tok || !pos_table) return NULL;
    /* positions 0..L-1 are the first L rows of the table: a view, broadcast
     * over the batch (the whole table when L covers it, which also lets a
     * fully trained encoder differentiate through it) */
    vkl_tensor *pos = L == pos_table->shape[0]
                          ? pos_table
                          : vkl_view(g, pos_table, 2, (int64_t[]){L, pos_table->shape[1]}, pos_table->stride, 0);
    vkl_tensor *x = vkl_add(g, tok, pos);
    int last = c->layers - skip;
    for (int i = 0; i < last && x; i++) {
        vkl_tensor *h = vkl_layer_norm(g, x, W("%stext_model.encoder.layers.%d.layer_norm1.weight", p, i),
                                       W("%stext_model.encoder.layers.%d.layer_norm1.bias", p, i), c->layer_norm_eps);
        x = vkl_add(g, x, self_attention(g, m, i, h, B, L));
        h = vkl_layer_norm(g, x, W("%stext_model.encoder.layers.%d.layer_norm2.weight", p, i),
                           W("%stext_model.encoder.layers.%d.layer_norm2.bias", p, i), c->layer_norm_eps);
        h = proj(g, m, h, "text_model.encoder.layers.%d.mlp.fc1", i);
        h = c->act == VKL_SD_ACT_QUICK_GELU ? vkl_quick_gelu(g, h) : vkl_gelu(g, h);
        h = proj(g, m, h, "text_model.encoder.layers.%d.mlp.fc2", i);
        x = vkl_add(g, x, h);
        if (layer_out) layer_out[i] = x;
    }
    if (!final_norm) return x;
    return vkl_layer_norm(g, x, W("%stext_model.final_layer_norm.weight", p), W("%stext_model.final_layer_norm.bias", p),
                          c->layer_norm_eps);
}
