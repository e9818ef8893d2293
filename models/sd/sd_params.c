/* Every weight of UNet, VAE and text encoder(s) with its internal (diffusers)
 * name and shape, derived from the configuration only. This is the contract
 * every layout must satisfy, so shapes are checked once here for all of them. */
#include "sd/sd_layout.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    vkl_sd_params *p;
    int failed;
} emitter;

static void add(emitter *m, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                const char *fmt, ...) VKL_PRINTF(7, 8);
static void add(emitter *m, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3,
                const char *fmt, ...)
{
    if (m->failed) return;
    vkl_sd_params *p = m->p;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 512;
        vkl_sd_param *v = realloc(p->v, (size_t)cap * sizeof *v);
        if (!v) { m->failed = 1; return; }
        p->v = v;
        p->cap = cap;
    }
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *s = strdup(buf);
    if (!s) { m->failed = 1; return; }
    vkl_sd_param *x = &p->v[p->n++];
    x->name = s;
    x->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    for (int i = 0; i < 4; i++) x->shape[i] = i < ndim ? d[i] : 0;
}

/* weight (+ bias) of a layer; k = kernel size, 0 for Linear. */
static void layer(emitter *m, const char *pre, const char *name, int64_t out, int64_t in, int k,
                  int bias)
{
    if (k) add(m, 4, out, in, k, k, "%s.%s.weight", pre, name);
    else add(m, 2, out, in, 0, 0, "%s.%s.weight", pre, name);
    if (bias) add(m, 1, out, 0, 0, 0, "%s.%s.bias", pre, name);
}

static void norm(emitter *m, const char *pre, const char *name, int64_t c)
{
    add(m, 1, c, 0, 0, 0, "%s.%s.weight", pre, name);
    add(m, 1, c, 0, 0, 0, "%s.%s.bias", pre, name);
}

/* temb = 0: VAE resnet without time embedding. */
static void resnet(emitter *m, const char *pre, int64_t in, int64_t out, int64_t temb)
{
    norm(m, pre, "norm1", in);
    layer(m, pre, "conv1", out, in, 3, 1);
    if (temb) layer(m, pre, "time_emb_proj", out, temb, 0, 1);
    norm(m, pre, "norm2", out);
    layer(m, pre, "conv2", out, out, 3, 1);
    if (in != out) layer(m, pre, "conv_shortcut", out, in, 1, 1);
}

static void transformer(emitter *m, const char *pre, int64_t c, int depth, int64_t ctx,
                        int linear)
{
    char b[256];
    norm(m, pre, "norm", c);
    layer(m, pre, "proj_in", c, c, linear ? 0 : 1, 1);
    for (int t = 0; t < depth; t++) {
        snprintf(b, sizeof b, "%s.transformer_blocks.%d", pre, t);
        norm(m, b, "norm1", c);
        layer(m, b, "attn1.to_q", c, c, 0, 0);
        layer(m, b, "attn1.to_k", c, c, 0, 0);
        layer(m, b, "attn1.to_v", c, c, 0, 0);
        layer(m, b, "attn1.to_out.0", c, c, 0, 1);
        norm(m, b, "norm2", c);
        layer(m, b, "attn2.to_q", c, c, 0, 0);
        layer(m, b, "attn2.to_k", c, ctx, 0, 0);
        layer(m, b, "attn2.to_v", c, ctx, 0, 0);
        layer(m, b, "attn2.to_out.0", c, c, 0, 1);
        norm(m, b, "norm3", c);
        layer(m, b, "ff.net.0.proj", 8 * c, c, 0, 1); /* GEGLU: value and gate halves */
        layer(m, b, "ff.net.2", c, 4 * c, 0, 1);
    }
    layer(m, pre, "proj_out", c, c, linear ? 0 : 1, 1);
}

static void unet(emitter *m, const vkl_sd_unet_config *u)
{
    char b[256];
    const int n = u->n_levels, L = u->layers_per_block;
    const int64_t c0 = u->block_out_channels[0], top = u->block_out_channels[n - 1];
    const int64_t T = u->time_embed_dim, ctx = u->cross_attention_dim;
    layer(m, "unet", "conv_in", c0, u->in_channels, 3, 1);
    layer(m, "unet", "time_embedding.linear_1", T, u->time_proj_dim, 0, 1);
    layer(m, "unet", "time_embedding.linear_2", T, T, 0, 1);
    if (u->add_text_time) {
        layer(m, "unet", "add_embedding.linear_1", T, u->projection_class_embeddings_input_dim, 0,
              1);
        layer(m, "unet", "add_embedding.linear_2", T, T, 0, 1);
    }
    int64_t in = c0;
    for (int lv = 0; lv < n; lv++) {
        int64_t out = u->block_out_channels[lv];
        for (int l = 0; l < L; l++) {
            snprintf(b, sizeof b, "unet.down_blocks.%d.resnets.%d", lv, l);
            resnet(m, b, l ? out : in, out, T);
            if (u->down_attn[lv]) {
                snprintf(b, sizeof b, "unet.down_blocks.%d.attentions.%d", lv, l);
                transformer(m, b, out, u->transformer_layers[lv], ctx, u->use_linear_projection);
            }
        }
        if (lv < n - 1) {
            snprintf(b, sizeof b, "unet.down_blocks.%d.downsamplers.0", lv);
            layer(m, b, "conv", out, out, 3, 1);
        }
        in = out;
    }
    resnet(m, "unet.mid_block.resnets.0", top, top, T);
    if (u->mid_attn)
        transformer(m, "unet.mid_block.attentions.0", top, u->mid_transformer_layers, ctx,
                    u->use_linear_projection);
    resnet(m, "unet.mid_block.resnets.1", top, top, T);
    int64_t prev = top;
    for (int i = 0; i < n; i++) {
        int lv = n - 1 - i; /* the down level this up block mirrors */
        int64_t out = u->block_out_channels[lv];
        int64_t skip_last = u->block_out_channels[lv > 0 ? lv - 1 : 0];
        int depth = u->transformer_layers[lv] > 0 ? u->transformer_layers[lv] : 1;
        for (int j = 0; j <= L; j++) {
            int64_t skip = j == L ? skip_last : out;
            snprintf(b, sizeof b, "unet.up_blocks.%d.resnets.%d", i, j);
            resnet(m, b, (j ? out : prev) + skip, out, T);
            if (u->up_attn[i]) {
                snprintf(b, sizeof b, "unet.up_blocks.%d.attentions.%d", i, j);
                transformer(m, b, out, depth, ctx, u->use_linear_projection);
            }
        }
        if (i < n - 1) {
            snprintf(b, sizeof b, "unet.up_blocks.%d.upsamplers.0", i);
            layer(m, b, "conv", out, out, 3, 1);
        }
        prev = out;
    }
    norm(m, "unet", "conv_norm_out", c0);
    layer(m, "unet", "conv_out", u->out_channels, c0, 3, 1);
}

static void vae_mid(emitter *m, const char *pre, int64_t c)
{
    char b[256];
    snprintf(b, sizeof b, "%s.mid_block.resnets.0", pre);
    resnet(m, b, c, c, 0);
    snprintf(b, sizeof b, "%s.mid_block.attentions.0", pre);
    norm(m, b, "group_norm", c);
    layer(m, b, "to_q", c, c, 0, 1);
    layer(m, b, "to_k", c, c, 0, 1);
    layer(m, b, "to_v", c, c, 0, 1);
    layer(m, b, "to_out.0", c, c, 0, 1);
    snprintf(b, sizeof b, "%s.mid_block.resnets.1", pre);
    resnet(m, b, c, c, 0);
}

static void vae(emitter *m, const vkl_sd_vae_config *v)
{
    char b[256];
    const int n = v->n_levels, L = v->layers_per_block;
    const int64_t c0 = v->block_out_channels[0], top = v->block_out_channels[n - 1];
    const int64_t z = v->latent_channels;
    layer(m, "vae.encoder", "conv_in", c0, v->in_channels, 3, 1);
    int64_t in = c0;
    for (int lv = 0; lv < n; lv++) {
        int64_t out = v->block_out_channels[lv];
        for (int l = 0; l < L; l++) {
            snprintf(b, sizeof b, "vae.encoder.down_blocks.%d.resnets.%d", lv, l);
            resnet(m, b, l ? out : in, out, 0);
        }
        if (lv < n - 1) {
            snprintf(b, sizeof b, "vae.encoder.down_blocks.%d.downsamplers.0", lv);
            layer(m, b, "conv", out, out, 3, 1);
        }
        in = out;
    }
    vae_mid(m, "vae.encoder", top);
    norm(m, "vae.encoder", "conv_norm_out", top);
    layer(m, "vae.encoder", "conv_out", 2 * z, top, 3, 1);
    layer(m, "vae", "quant_conv", 2 * z, 2 * z, 1, 1);
    layer(m, "vae", "post_quant_conv", z, z, 1, 1);
    layer(m, "vae.decoder", "conv_in", top, z, 3, 1);
    vae_mid(m, "vae.decoder", top);
    int64_t prev = top;
    for (int i = 0; i < n; i++) {
        int64_t out = v->block_out_channels[n - 1 - i];
        for (int j = 0; j <= L; j++) {
            snprintf(b, sizeof b, "vae.decoder.up_blocks.%d.resnets.%d", i, j);
            resnet(m, b, j ? out : prev, out, 0);
        }
        if (i < n - 1) {
            snprintf(b, sizeof b, "vae.decoder.up_blocks.%d.upsamplers.0", i);
            layer(m, b, "conv", out, out, 3, 1);
        }
        prev = out;
    }
    norm(m, "vae.decoder", "conv_norm_out", c0);
    layer(m, "vae.decoder", "conv_out", v->out_channels, c0, 3, 1);
}

static void text(emitter *m, const char *model, const vkl_sd_text_config *t)
{
    char b[256];
    const int64_t d = t->hidden;
    add(m, 2, t->vocab, d, 0, 0, "%s.text_model.embeddings.token_embedding.weight", model);
    add(m, 2, t->max_positions, d, 0, 0, "%s.text_model.embeddings.position_embedding.weight",
        model);
    for (int i = 0; i < t->layers; i++) {
        snprintf(b, sizeof b, "%s.text_model.encoder.layers.%d", model, i);
        norm(m, b, "layer_norm1", d);
        layer(m, b, "self_attn.q_proj", d, d, 0, 1);
        layer(m, b, "self_attn.k_proj", d, d, 0, 1);
        layer(m, b, "self_attn.v_proj", d, d, 0, 1);
        layer(m, b, "self_attn.out_proj", d, d, 0, 1);
        norm(m, b, "layer_norm2", d);
        layer(m, b, "mlp.fc1", t->intermediate, d, 0, 1);
        layer(m, b, "mlp.fc2", d, t->intermediate, 0, 1);
    }
    snprintf(b, sizeof b, "%s.text_model", model);
    norm(m, b, "final_layer_norm", d);
    if (t->projection_dim > 0) layer(m, model, "text_projection", t->projection_dim, d, 0, 0);
}

int vkl_sd_params_build(const vkl_sd_config *c, vkl_sd_params *p, vkl_err *e)
{
    memset(p, 0, sizeof *p);
    if (vkl_sd_config_validate(c, e)) return -1;
    emitter m = {p, 0};
    unet(&m, &c->unet);
    vae(&m, &c->vae);
    text(&m, "text_encoder", &c->te[0]);
    if (c->n_text_encoders > 1) text(&m, "text_encoder_2", &c->te[1]);
    if (m.failed) {
        vkl_sd_params_free(p);
        return vkl_fail(e, "out of memory listing model parameters");
    }
    return 0;
}

int vkl_sd_vae_params_build(const vkl_sd_vae_config *v, vkl_sd_params *p, vkl_err *e)
{
    memset(p, 0, sizeof *p);
    if (vkl_sd_vae_config_validate(v, e)) return -1;
    emitter m = {p, 0};
    vae(&m, v);
    if (m.failed) {
        vkl_sd_params_free(p);
        return vkl_fail(e, "out of memory listing VAE parameters");
    }
    return 0;
}

void vkl_sd_params_free(vkl_sd_params *p)
{
    for (int i = 0; i < p->n; i++) free(p->v[i].name);
    free(p->v);
    memset(p, 0, sizeof *p);
}
