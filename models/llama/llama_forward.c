/* The LLaMA forward graph (see llama.h). */
#include "llama/llama.h"
#include "llama/llama_adalora.h"

#include "ops.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void tap(const vkl_llama_fwd *o, int layer, const char *name, vkl_tensor *t)
{
    if (o->tap && t) o->tap(o->tap_user, layer, name, t);
}

static const vkl_llama_dora_mod *dora_find(const vkl_llama_dora *d, const char *module)
{
    for (int i = 0; d && i < d->n; i++)
        if (!strcmp(d->v[i].module, module)) return &d->v[i];
    return NULL;
}

static const vkl_llama_ia3_mod *ia3_find(const vkl_llama_ia3 *d, const char *module)
{
    for (int i = 0; d && i < d->n; i++)
        if (!strcmp(d->v[i].module, module)) return &d->v[i];
    return NULL;
}

/* A projection of layer l: AdaLoRA or DoRA module, run-time LoRA adapters or the plain
 * weight, inside the IA3 scaling of its input or output when it has one. */
static vkl_tensor *proj(vkl_graph *g, const vkl_llama *m, const vkl_llama_fwd *o, int l, const char *part, vkl_tensor *x)
{
    char mod[96];
    snprintf(mod, sizeof mod, "model.layers.%d.%s", l, part);
    vkl_tensor *w = vkl_weights_need(m->w, g, "%s.weight", mod);
    char bname[112];
    snprintf(bname, sizeof bname, "%s.bias", mod);
    vkl_tensor *bias = vkl_weights_find(m->w, bname); /* Qwen2's q/k/v, attention_bias */
    const vkl_llama_ia3_mod *im = ia3_find(o->ia3, mod);
    if (im && im->on_input) x = vkl_mul(g, x, im->vec);
    const vkl_llama_dora_mod *dm = dora_find(o->dora, mod);
    const vkl_llama_adalora_mod *am = vkl_llama_adalora_find(o->adalora, mod);
    vkl_tensor *y;
    if (am) {
        y = vkl_llama_adalora_linear(g, o->adalora, am, x, w, bias);
    } else if (dm) {
        y = vkl_linear_lora(g, x, w, NULL, dm->a, dm->b, dm->scale);
        y = vkl_mul(g, y, vkl_div(g, dm->mag, dm->norm));
        if (bias) y = vkl_add(g, y, bias); /* PEFT's DoRA scales the product without the bias */
    } else {
        y = vkl_lora_linear(g, o->lora, mod, x, w, bias);
    }
    if (im && !im->on_input) y = vkl_mul(g, y, im->vec);
    return y;
}

static vkl_tensor *attention_block(vkl_graph *g, const vkl_llama *m, const vkl_llama_fwd *o, int l, vkl_tensor *x)
{
    const vkl_llama_config *c = &m->cfg;
    int64_t B = x->shape[0], L = x->shape[1], H = c->heads, KV = c->kv_heads, D = c->head_dim, G = H / KV;
    int64_t Lk = o->pos0 + L;
    vkl_tensor *q = proj(g, m, o, l, "self_attn.q_proj", x);
    vkl_tensor *k = proj(g, m, o, l, "self_attn.k_proj", x);
    vkl_tensor *v = proj(g, m, o, l, "self_attn.v_proj", x);
    tap(o, l, "q_proj_out", q);
    tap(o, l, "k_proj_out", k);
    tap(o, l, "v_proj_out", v);
    /* heads are column slices of the projections: [B, L, H*D] seen as [B, H, L, D] */
    const int heads_first[4] = {0, 2, 1, 3};
    vkl_tensor *qh = vkl_permute(g, vkl_reshape(g, q, 4, (int64_t[]){B, L, H, D}), heads_first);
    vkl_tensor *kh = vkl_permute(g, vkl_reshape(g, k, 4, (int64_t[]){B, L, KV, D}), heads_first);
    vkl_tensor *vh = vkl_permute(g, vkl_reshape(g, v, 4, (int64_t[]){B, L, KV, D}), heads_first);
    vkl_tensor *qr = vkl_rope_scaled(g, qh, o->pos0, c->rope_theta, &c->rope_scaling); /* contiguous [B, H, L, D] */
    vkl_tensor *kr = vkl_rope_scaled(g, kh, o->pos0, c->rope_theta, &c->rope_scaling);
    tap(o, l, "q_rope", qr);
    tap(o, l, "k_rope", kr);
    /* keys/values as [B*KV, Lk, D] with one uniform stride over (batch, kv head) */
    vkl_tensor *k3, *v3;
    if (o->kv) {
        vkl_llama_kv *kv = o->kv;
        if (kv->batch != B || Lk > kv->max_len || l >= kv->layers)
            return vkl_graph_set_error(g, "llama: positions %d..%lld of batch %lld do not fit the KV cache (%d x %d)",
                                       o->pos0, (long long)Lk - 1, (long long)B, kv->batch, kv->max_len);
        int64_t at = (int64_t)o->pos0 * B * KV * D, ws[4] = {L, B, KV, D}, wst[4] = {B * KV * D, KV * D, D, 1};
        const int to_pos_major[4] = {2, 0, 1, 3};
        vkl_copy_into(g, vkl_permute(g, kr, to_pos_major), vkl_view(g, kv->k[l], 4, ws, wst, at));
        vkl_copy_into(g, vkl_permute(g, vh, to_pos_major), vkl_view(g, kv->v[l], 4, ws, wst, at));
        k3 = vkl_view(g, kv->k[l], 3, (int64_t[]){B * KV, Lk, D}, (int64_t[]){D, B * KV * D, 1}, 0);
        v3 = vkl_view(g, kv->v[l], 3, (int64_t[]){B * KV, Lk, D}, (int64_t[]){D, B * KV * D, 1}, 0);
    } else {
        k3 = vkl_reshape(g, kr, 3, (int64_t[]){B * KV, L, D});
        v3 = vkl_reshape(g, vkl_scale(g, vh, 1.0f), 3, (int64_t[]){B * KV, L, D});
    }
    vkl_tensor *ctx;
    int explicit_attn = o->explicit_attn || o->mask;
    if (explicit_attn) {
        if (L > 1 && !o->mask)
            return vkl_graph_set_error(g, "llama: explicit attention over %lld queries needs a causal mask", (long long)L);
        /* the G query heads of a kv head are consecutive rows of one matmul batch */
        vkl_tensor *q3 = vkl_reshape(g, qr, 3, (int64_t[]){B * KV, G * L, D});
        vkl_tensor *s = vkl_matmul(g, q3, vkl_permute(g, k3, (const int[]){0, 2, 1}));
        vkl_tensor *s4 = vkl_reshape(g, s, 4, (int64_t[]){B, H, L, Lk});
        if (o->mask) s4 = vkl_add(g, s4, o->mask);
        vkl_tensor *p = vkl_softmax(g, s4, 1.0f / sqrtf((float)D));
        tap(o, l, "attn_probs", p);
        ctx = vkl_matmul(g, vkl_reshape(g, p, 3, (int64_t[]){B * KV, G * L, Lk}), v3);
    } else {
        return vkl_graph_set_error(g, "llama: the fused attention op is not available in this build");
    }
    vkl_tensor *ctx4 = vkl_reshape(g, ctx, 4, (int64_t[]){B, H, L, D});
    vkl_tensor *tok = vkl_scale(g, vkl_permute(g, ctx4, (const int[]){0, 2, 1, 3}), 1.0f);
    tok = vkl_reshape(g, tok, 3, (int64_t[]){B, L, H * D});
    tap(o, l, "attn_context", tok);
    vkl_tensor *out = proj(g, m, o, l, "self_attn.o_proj", tok);
    tap(o, l, "attn_out", out);
    return out;
}

vkl_tensor *vkl_llama_forward(vkl_graph *g, const vkl_llama *m, vkl_tensor *ids, const vkl_llama_fwd *o)
{
    if (!ids || vkl_graph_failed(g)) return NULL;
    const vkl_llama_config *c = &m->cfg;
    if (ids->ndim != 2 || ids->dtype != VKL_I32)
        return vkl_graph_set_error(g, "llama: token ids must be an i32 tensor [B, L]");
    if (o->pos0 < 0 || o->pos0 + ids->shape[1] > (1 << 17))
        return vkl_graph_set_error(g, "llama: position %d is out of range", o->pos0);
    if (o->mask && (o->mask->ndim != 4 || o->mask->shape[2] != ids->shape[1] || o->mask->shape[3] != o->pos0 + ids->shape[1]))
        return vkl_graph_set_error(g, "llama: the attention mask must be [B, 1, %lld, %lld]", (long long)ids->shape[1],
                                   (long long)(o->pos0 + ids->shape[1]));
    vkl_tensor *x = vkl_embedding(g, vkl_weights_need(m->w, g, "model.embed_tokens.weight"), ids);
    tap(o, -1, "hidden_states.0", x);
    for (int l = 0; l < c->layers && x; l++) {
        tap(o, l, "input", x);
        vkl_tensor *n1 = vkl_rms_norm(g, x, vkl_weights_need(m->w, g, "model.layers.%d.input_layernorm.weight", l),
                                      c->rms_eps);
        tap(o, l, "attn_norm_out", n1);
        vkl_tensor *h = vkl_add(g, x, attention_block(g, m, o, l, n1));
        vkl_tensor *n2 = vkl_rms_norm(
            g, h, vkl_weights_need(m->w, g, "model.layers.%d.post_attention_layernorm.weight", l), c->rms_eps);
        tap(o, l, "ffn_norm_out", n2);
        vkl_tensor *gate = proj(g, m, o, l, "mlp.gate_proj", n2);
        vkl_tensor *up = proj(g, m, o, l, "mlp.up_proj", n2);
        tap(o, l, "gate_proj_out", gate);
        tap(o, l, "up_proj_out", up);
        vkl_tensor *act = vkl_swiglu(g, gate, up);
        tap(o, l, "ffn_act_mul", act);
        vkl_tensor *down = proj(g, m, o, l, "mlp.down_proj", act);
        tap(o, l, "ffn_out", down);
        x = vkl_add(g, h, down);
        tap(o, l, "output", x);
    }
    vkl_tensor *fin = vkl_rms_norm(g, x, vkl_weights_need(m->w, g, "model.norm.weight"), c->rms_eps);
    tap(o, -1, "final_norm_out", fin);
    vkl_tensor *head = c->tie_embeddings ? vkl_weights_need(m->w, g, "model.embed_tokens.weight")
                                         : vkl_weights_need(m->w, g, "lm_head.weight");
    return vkl_linear(g, fin, head, NULL);
}
