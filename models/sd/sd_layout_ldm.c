/* Original CompVis / Stability single-file layout. The UNet numbers its blocks
 * sequentially (input_blocks.N, output_blocks.N) where diffusers nests them
 * (down_blocks.level.resnets.i), so the correspondence depends on the number
 * of levels, layers per block and where attention sits: it is computed from
 * the configuration here, never listed. */
#include "sd/sd_layout.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* If s starts with p, returns the rest, else NULL. */
static const char *after(const char *s, const char *p)
{
    size_t n = strlen(p);
    return strncmp(s, p, n) ? NULL : s + n;
}

/* Parses "<int>." at s; returns the rest or NULL. */
static const char *num(const char *s, int *v)
{
    char *end;
    if (*s < '0' || *s > '9') return NULL;
    long x = strtol(s, &end, 10);
    if (*end != '.' || x > 100000) return NULL;
    *v = (int)x;
    return end + 1;
}

static int put(vkl_sd_src_name *o, vkl_sd_xform x, int part, int parts, const char *fmt, ...)
    VKL_PRINTF(5, 6);
static int put(vkl_sd_src_name *o, vkl_sd_xform x, int part, int parts, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->name, sizeof o->name, fmt, ap);
    va_end(ap);
    o->xform = x;
    o->part = part;
    o->parts = parts;
    return n > 0 && (size_t)n < sizeof o->name ? 1 : -1;
}

/* diffusers resnet member -> LDM UNet ResBlock member. */
static int unet_resnet(const char *rest, char *out, size_t size)
{
    static const char *map[][2] = {{"norm1.", "in_layers.0."},   {"conv1.", "in_layers.2."},
                                   {"time_emb_proj.", "emb_layers.1."},
                                   {"norm2.", "out_layers.0."},  {"conv2.", "out_layers.3."},
                                   {"conv_shortcut.", "skip_connection."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *r = after(rest, map[i][0]);
        if (r) return snprintf(out, size, "%s%s", map[i][1], r) < (int)size ? 0 : -1;
    }
    return -1;
}

static int unet_name(const vkl_sd_unet_config *u, const char *s, vkl_sd_src_name *o)
{
    const char *P = "model.diffusion_model.";
    const int L = u->layers_per_block, n = u->n_levels;
    const char *r;
    char m[200];
    int b, l;
    static const char *flat[][2] = {{"conv_in.", "input_blocks.0.0."},
                                    {"time_embedding.linear_1.", "time_embed.0."},
                                    {"time_embedding.linear_2.", "time_embed.2."},
                                    {"add_embedding.linear_1.", "label_emb.0.0."},
                                    {"add_embedding.linear_2.", "label_emb.0.2."},
                                    {"conv_norm_out.", "out.0."},
                                    {"conv_out.", "out.2."}};
    for (size_t i = 0; i < sizeof flat / sizeof flat[0]; i++)
        if ((r = after(s, flat[i][0]))) return put(o, VKL_SD_X_NONE, 0, 0, "%s%s%s", P, flat[i][1], r);
    if ((r = after(s, "down_blocks.")) && (r = num(r, &b)) && b < n) {
        const char *q;
        if ((q = after(r, "resnets.")) && (q = num(q, &l)) && l < L && !unet_resnet(q, m, sizeof m))
            return put(o, VKL_SD_X_NONE, 0, 0, "%sinput_blocks.%d.0.%s", P, 1 + b * (L + 1) + l, m);
        if ((q = after(r, "attentions.")) && (q = num(q, &l)) && l < L)
            return put(o, VKL_SD_X_NONE, 0, 0, "%sinput_blocks.%d.1.%s", P, 1 + b * (L + 1) + l, q);
        if ((q = after(r, "downsamplers.0.conv.")) && b < n - 1)
            return put(o, VKL_SD_X_NONE, 0, 0, "%sinput_blocks.%d.0.op.%s", P, 1 + b * (L + 1) + L,
                       q);
        return -1;
    }
    if ((r = after(s, "mid_block."))) {
        const char *q;
        if ((q = after(r, "resnets.")) && (q = num(q, &l)) && l < 2 && !unet_resnet(q, m, sizeof m))
            return put(o, VKL_SD_X_NONE, 0, 0, "%smiddle_block.%d.%s", P,
                       l == 0 ? 0 : (u->mid_attn ? 2 : 1), m);
        if ((q = after(r, "attentions.0.")))
            return put(o, VKL_SD_X_NONE, 0, 0, "%smiddle_block.1.%s", P, q);
        return -1;
    }
    if ((r = after(s, "up_blocks.")) && (r = num(r, &b)) && b < n) {
        const char *q;
        if ((q = after(r, "resnets.")) && (q = num(q, &l)) && l <= L && !unet_resnet(q, m, sizeof m))
            return put(o, VKL_SD_X_NONE, 0, 0, "%soutput_blocks.%d.0.%s", P, b * (L + 1) + l, m);
        if ((q = after(r, "attentions.")) && (q = num(q, &l)) && l <= L)
            return put(o, VKL_SD_X_NONE, 0, 0, "%soutput_blocks.%d.1.%s", P, b * (L + 1) + l, q);
        /* The upsampler follows the resnet, and the attention when the level has one. */
        if ((q = after(r, "upsamplers.0.conv.")) && b < n - 1)
            return put(o, VKL_SD_X_NONE, 0, 0, "%soutput_blocks.%d.%d.conv.%s", P, b * (L + 1) + L,
                       u->up_attn[b] ? 2 : 1, q);
        return -1;
    }
    return -1;
}

static int vae_resnet(const char *rest, char *out, size_t size)
{
    const char *r = after(rest, "conv_shortcut.");
    int k = r ? snprintf(out, size, "nin_shortcut.%s", r) : snprintf(out, size, "%s", rest);
    return k > 0 && (size_t)k < size ? 0 : -1;
}

/* s is "encoder.*" / "decoder.*" / "quant_conv.*" / "post_quant_conv.*". */
static int vae_name(const vkl_sd_vae_config *v, const char *s, vkl_sd_src_name *o)
{
    const char *P = "first_stage_model.";
    const int n = v->n_levels;
    if (after(s, "quant_conv.") || after(s, "post_quant_conv."))
        return put(o, VKL_SD_X_NONE, 0, 0, "%s%s", P, s);
    const char *side = after(s, "encoder.") ? "encoder" : after(s, "decoder.") ? "decoder" : NULL;
    if (!side) return -1;
    const char *r = s + strlen(side) + 1, *q;
    char m[200];
    int b, l;
    if ((q = after(r, "conv_in.")) || (q = after(r, "conv_out.")))
        return put(o, VKL_SD_X_NONE, 0, 0, "%s%s.%s", P, side, r);
    if ((q = after(r, "conv_norm_out.")))
        return put(o, VKL_SD_X_NONE, 0, 0, "%s%s.norm_out.%s", P, side, q);
    if ((q = after(r, "mid_block.resnets.")) && (q = num(q, &l)) && l < 2 &&
        !vae_resnet(q, m, sizeof m))
        return put(o, VKL_SD_X_NONE, 0, 0, "%s%s.mid.block_%d.%s", P, side, l + 1, m);
    if ((q = after(r, "mid_block.attentions.0."))) {
        static const char *att[][2] = {{"group_norm.", "norm."}, {"to_q.", "q."}, {"to_k.", "k."},
                                       {"to_v.", "v."},          {"to_out.0.", "proj_out."}};
        for (size_t i = 0; i < sizeof att / sizeof att[0]; i++) {
            const char *t = after(q, att[i][0]);
            if (t) return put(o, VKL_SD_X_NONE, 0, 0, "%s%s.mid.attn_1.%s%s", P, side, att[i][1], t);
        }
        return -1;
    }
    if (!strcmp(side, "encoder") && (q = after(r, "down_blocks.")) && (q = num(q, &b)) && b < n) {
        const char *t;
        if ((t = after(q, "resnets.")) && (t = num(t, &l)) && !vae_resnet(t, m, sizeof m))
            return put(o, VKL_SD_X_NONE, 0, 0, "%sencoder.down.%d.block.%d.%s", P, b, l, m);
        if ((t = after(q, "downsamplers.0.conv.")))
            return put(o, VKL_SD_X_NONE, 0, 0, "%sencoder.down.%d.downsample.conv.%s", P, b, t);
        return -1;
    }
    /* The LDM decoder numbers its levels from the lowest resolution upwards in
     * reverse: up.(n-1) runs first, like diffusers' up_blocks.0. */
    if (!strcmp(side, "decoder") && (q = after(r, "up_blocks.")) && (q = num(q, &b)) && b < n) {
        const char *t;
        if ((t = after(q, "resnets.")) && (t = num(t, &l)) && !vae_resnet(t, m, sizeof m))
            return put(o, VKL_SD_X_NONE, 0, 0, "%sdecoder.up.%d.block.%d.%s", P, n - 1 - b, l, m);
        if ((t = after(q, "upsamplers.0.conv.")))
            return put(o, VKL_SD_X_NONE, 0, 0, "%sdecoder.up.%d.upsample.conv.%s", P, n - 1 - b, t);
    }
    return -1;
}

/* OpenCLIP text transformer (SD 2.x cond_stage_model.model, XL embedder 1). */
static int openclip_name(const char *P, const char *s, vkl_sd_src_name *o)
{
    const char *r, *q;
    int l;
    if (!strcmp(s, "text_projection.weight"))
        return put(o, VKL_SD_X_TRANSPOSE, 0, 0, "%stext_projection", P);
    if (!(r = after(s, "text_model."))) return -1;
    if (!strcmp(r, "embeddings.token_embedding.weight"))
        return put(o, VKL_SD_X_NONE, 0, 0, "%stoken_embedding.weight", P);
    if (!strcmp(r, "embeddings.position_embedding.weight"))
        return put(o, VKL_SD_X_NONE, 0, 0, "%spositional_embedding", P);
    if ((q = after(r, "final_layer_norm.")))
        return put(o, VKL_SD_X_NONE, 0, 0, "%sln_final.%s", P, q);
    if (!(q = after(r, "encoder.layers.")) || !(q = num(q, &l))) return -1;
    static const char *qkv[] = {"self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj."};
    for (int i = 0; i < 3; i++) {
        const char *t = after(q, qkv[i]);
        if (t) /* nn.MultiheadAttention keeps q, k, v stacked in one [3D, D] tensor */
            return put(o, VKL_SD_X_SPLIT, i, 3, "%stransformer.resblocks.%d.attn.in_proj_%s", P, l,
                       t);
    }
    static const char *map[][2] = {{"layer_norm1.", "ln_1."},
                                   {"layer_norm2.", "ln_2."},
                                   {"self_attn.out_proj.", "attn.out_proj."},
                                   {"mlp.fc1.", "mlp.c_fc."},
                                   {"mlp.fc2.", "mlp.c_proj."}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
        const char *t = after(q, map[i][0]);
        if (t)
            return put(o, VKL_SD_X_NONE, 0, 0, "%stransformer.resblocks.%d.%s%s", P, l, map[i][1],
                       t);
    }
    return -1;
}

/* Prefix of text encoder i in the single file, and whether it is OpenCLIP. */
static const char *text_prefix(const vkl_sd_config *c, int i, int *openclip)
{
    *openclip = (c->family == VKL_SD_FAMILY_SD2 && i == 0) ||
                (c->family == VKL_SD_FAMILY_SDXL && i == 1);
    if (c->family == VKL_SD_FAMILY_SDXL)
        return i == 0 ? "conditioner.embedders.0.transformer." : "conditioner.embedders.1.model.";
    return *openclip ? "cond_stage_model.model." : "cond_stage_model.transformer.";
}

int vkl_sd_ldm_source_name(const vkl_sd_config *c, const char *internal, vkl_sd_src_name *out,
                           int max)
{
    const char *r;
    if (max < 2) return -1;
    if ((r = after(internal, "unet."))) return unet_name(&c->unet, r, out);
    if ((r = after(internal, "vae."))) return vae_name(&c->vae, r, out);
    int i = (r = after(internal, "text_encoder_2.")) ? 1 : -1;
    if (i < 0 && (r = after(internal, "text_encoder."))) i = 0;
    if (i < 0 || i >= c->n_text_encoders) return -1;
    int openclip;
    const char *P = text_prefix(c, i, &openclip);
    if (openclip) return openclip_name(P, r, out);
    if (!after(r, "text_model.")) return -1;
    if (put(&out[0], VKL_SD_X_NONE, 0, 0, "%s%s", P, r) < 0) return -1;
    /* Checkpoints saved with transformers < 4.? lack the text_model level. */
    if (put(&out[1], VKL_SD_X_NONE, 0, 0, "%s%s", P, r + strlen("text_model.")) < 0) return -1;
    return 2;
}

int vkl_sd_ldm_key_ignorable(const vkl_sd_config *c, const char *name)
{
    /* Diffusion schedule buffers and training state that LatentDiffusion
     * registers next to the weights; vklora recomputes the schedule. */
    static const char *buffers[] = {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
        "logvar", "cond_stage_model.model.logit_scale", "cond_stage_model.model.text_projection",
        "conditioner.embedders.1.model.logit_scale"};
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        if (!strcmp(name, buffers[i])) return 1;
    if (after(name, "model_ema.")) return 1; /* EMA copy of the UNet */
    size_t n = strlen(name);
    if (n >= 13 && !strcmp(name + n - 13, ".position_ids")) return 1;
    /* SD 2.x conditions on OpenCLIP's penultimate layer, so the last
     * resblock(s) beyond the configured depth are never used. */
    const char *r;
    int l;
    if (c->family == VKL_SD_FAMILY_SD2 &&
        (r = after(name, "cond_stage_model.model.transformer.resblocks.")) && num(r, &l) &&
        l >= c->te[0].layers)
        return 1;
    return 0;
}
