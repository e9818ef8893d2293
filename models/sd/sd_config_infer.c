/* Family detection and configuration inference from the tensor names and
 * shapes of an original single-file checkpoint. Sizes come from shapes;
 * the number of levels, layers per block and attention placement come from
 * which block indices exist; conventions shapes cannot carry (heads, norm
 * groups, prediction type) come from the family. */
#include "sd/sd_layout.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const int64_t *shp(const vkl_sd_keys *k, int *nd, const char *fmt, ...) VKL_PRINTF(3, 4);
static const int64_t *shp(const vkl_sd_keys *k, int *nd, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    int d = 0;
    const int64_t *s = vkl_sd_keys_shape(k, name, &d);
    if (nd) *nd = d;
    return s;
}

static int has(const vkl_sd_keys *k, const char *fmt, ...) VKL_PRINTF(2, 3);
static int has(const vkl_sd_keys *k, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return vkl_sd_keys_find(k, name) >= 0;
}

/* Shape of a required 2-D+ tensor; error names it. */
static int need(const vkl_sd_keys *k, const char *name, int min_ndim, const int64_t **s, vkl_err *e)
{
    int nd = 0;
    *s = vkl_sd_keys_shape(k, name, &nd);
    if (!*s) return vkl_fail(e, "required tensor %s is missing", name);
    if (nd < min_ndim) return vkl_fail(e, "tensor %s has %d dimensions, expected %d", name, nd,
                                       min_ndim);
    return 0;
}

/* Largest index i such that "<prefix>.<i>." starts some key, +1 (0 when none). */
static int count_indexed(const vkl_sd_keys *k, const char *prefix)
{
    size_t lp = strlen(prefix);
    int n = 0;
    for (int i = 0; i < k->n; i++) {
        const char *s = k->v[i].name;
        if (strncmp(s, prefix, lp) || s[lp] < '0' || s[lp] > '9') continue;
        char *end;
        long x = strtol(s + lp, &end, 10);
        if (*end == '.' && x >= 0 && x < 100000 && x + 1 > n) n = (int)x + 1;
    }
    return n;
}

int vkl_sd_detect_family(const vkl_sd_keys *k, vkl_sd_family *f, vkl_err *e)
{
    const char *U = "model.diffusion_model.";
    if (!vkl_sd_keys_count_prefix(k, U)) {
        char first[300] = "";
        size_t len = 0;
        for (int i = 0; i < k->n && i < 3; i++)
            len += (size_t)snprintf(first + len, sizeof first - len, "%s%s", i ? ", " : "",
                                    k->v[k->order ? k->order[i] : i].name);
        return vkl_fail(e, "not a Stable Diffusion single-file checkpoint: no %s* tensors "
                           "(%d tensors%s%s)", U, k->n, k->n ? ", first: " : "", first);
    }
    if (vkl_sd_keys_count_prefix(k, "conditioner.embedders.0.model."))
        return vkl_fail(e, "SDXL refiner checkpoints (OpenCLIP-only conditioner) are not "
                           "supported");
    if (vkl_sd_keys_count_prefix(k, "conditioner.embedders.") ||
        has(k, "%slabel_emb.0.0.weight", U)) {
        *f = VKL_SD_FAMILY_SDXL;
        return 0;
    }
    if (vkl_sd_keys_count_prefix(k, "cond_stage_model.model.")) {
        *f = VKL_SD_FAMILY_SD2;
        return 0;
    }
    if (vkl_sd_keys_count_prefix(k, "cond_stage_model.transformer.")) {
        *f = VKL_SD_FAMILY_SD1;
        return 0;
    }
    /* No text encoder stored: fall back on the UNet's context width. */
    int ctx = 0;
    for (int i = 0; i < k->n && !ctx; i++) {
        const char *s = strstr(k->v[i].name, ".attn2.to_k.weight");
        if (s && !strncmp(k->v[i].name, U, strlen(U)) && k->v[i].ndim == 2)
            ctx = (int)k->v[i].shape[1];
    }
    if (ctx == 768) *f = VKL_SD_FAMILY_SD1;
    else if (ctx == 1024) *f = VKL_SD_FAMILY_SD2;
    else if (ctx == 2048) *f = VKL_SD_FAMILY_SDXL;
    else
        return vkl_fail(e, "unknown Stable Diffusion family: no text encoder tensors "
                           "(cond_stage_model.*, conditioner.embedders.*) and UNet context width "
                           "%d is none of 768 (1.x), 1024 (2.x), 2048 (XL)", ctx);
    return 0;
}

static int attn_depth(const vkl_sd_keys *k, const char *block)
{
    int d = 0;
    while (has(k, "%s.transformer_blocks.%d.norm1.weight", block, d)) d++;
    return d;
}

static int infer_unet(const vkl_sd_keys *k, vkl_sd_family fam, vkl_sd_unet_config *u, vkl_err *e)
{
    const char *U = "model.diffusion_model.";
    char name[256], blk[256];
    const int64_t *s;
    snprintf(name, sizeof name, "%sinput_blocks.0.0.weight", U);
    if (need(k, name, 4, &s, e)) return -1;
    u->in_channels = (int)s[1];
    snprintf(name, sizeof name, "%sout.2.weight", U);
    if (need(k, name, 4, &s, e)) return -1;
    u->out_channels = (int)s[0];
    snprintf(name, sizeof name, "%stime_embed.0.weight", U);
    if (need(k, name, 2, &s, e)) return -1;
    u->time_embed_dim = (int)s[0];
    u->time_proj_dim = (int)s[1];

    snprintf(name, sizeof name, "%sinput_blocks.", U);
    int nin = count_indexed(k, name);
    int first_down = 0;
    for (int i = 1; i < nin && !first_down; i++)
        if (has(k, "%sinput_blocks.%d.0.op.weight", U, i)) first_down = i;
    int L = first_down ? first_down - 1 : nin - 1;
    if (L < 1 || nin % (L + 1))
        return vkl_fail(e, "UNet: %d input blocks with the first downsampler at %d do not form "
                           "levels of equal depth", nin, first_down);
    int n = nin / (L + 1);
    if (n > VKL_SD_MAX_LEVELS)
        return vkl_fail(e, "UNet: %d levels (at most %d supported)", n, VKL_SD_MAX_LEVELS);
    u->n_levels = n;
    u->layers_per_block = L;
    int linear = -1, ctx = 0;
    for (int b = 0; b < n; b++) {
        int idx = 1 + b * (L + 1);
        snprintf(name, sizeof name, "%sinput_blocks.%d.0.out_layers.3.weight", U, idx);
        if (need(k, name, 4, &s, e)) return -1;
        u->block_out_channels[b] = (int)s[0];
        snprintf(blk, sizeof blk, "%sinput_blocks.%d.1", U, idx);
        int nd;
        const int64_t *pi = shp(k, &nd, "%s.proj_in.weight", blk);
        u->down_attn[b] = pi != NULL;
        u->transformer_layers[b] = pi ? attn_depth(k, blk) : 0;
        if (pi) {
            linear = nd == 2;
            const int64_t *kk = shp(k, &nd, "%s.transformer_blocks.0.attn2.to_k.weight", blk);
            if (kk && nd == 2) ctx = (int)kk[1];
        }
    }
    for (int i = 0; i < n; i++) {
        snprintf(blk, sizeof blk, "%soutput_blocks.%d.1", U, i * (L + 1));
        u->up_attn[i] = has(k, "%s.proj_in.weight", blk);
    }
    snprintf(blk, sizeof blk, "%smiddle_block.1", U);
    int nd;
    const int64_t *pi = shp(k, &nd, "%s.proj_in.weight", blk);
    u->mid_attn = pi != NULL;
    if (pi) {
        u->mid_transformer_layers = attn_depth(k, blk);
        if (linear < 0) linear = nd == 2;
        const int64_t *kk = shp(k, &nd, "%s.transformer_blocks.0.attn2.to_k.weight", blk);
        if (kk && nd == 2 && !ctx) ctx = (int)kk[1];
    }
    if (!ctx) return vkl_fail(e, "UNet: no cross-attention (attn2.to_k) found; not a "
                                 "text-conditioned Stable Diffusion UNet");
    u->cross_attention_dim = ctx;
    u->use_linear_projection = linear > 0;
    for (int b = 0; b < n; b++) {
        u->heads[b] = vkl_sd_family_heads(fam, u->block_out_channels[b]);
        if (u->heads[b] < 0) {
            int attn = u->down_attn[b] || u->up_attn[n - 1 - b];
            if (attn)
                return vkl_fail(e, "UNet level %d: %d channels do not fit the %s head rule (%s); "
                                   "the model's yaml must say num_heads or num_head_channels",
                                b, u->block_out_channels[b], vkl_sd_family_name(fam),
                                fam == VKL_SD_FAMILY_SD1 ? "8 heads" : "heads of width 64");
            u->heads[b] = 0;
        }
    }
    u->mid_heads = u->heads[n - 1];
    const int64_t *adm = shp(k, &nd, "%slabel_emb.0.0.weight", U);
    u->add_text_time = adm != NULL;
    if (adm) u->projection_class_embeddings_input_dim = (int)adm[1];
    else {
        u->addition_time_embed_dim = 0;
        u->projection_class_embeddings_input_dim = 0;
    }
    return 0;
}

static int infer_vae(const vkl_sd_keys *k, vkl_sd_vae_config *v, vkl_err *e)
{
    const char *F = "first_stage_model.";
    char name[256];
    const int64_t *s;
    snprintf(name, sizeof name, "%sencoder.conv_in.weight", F);
    if (need(k, name, 4, &s, e)) return -1;
    v->in_channels = (int)s[1];
    snprintf(name, sizeof name, "%sdecoder.conv_out.weight", F);
    if (need(k, name, 4, &s, e)) return -1;
    v->out_channels = (int)s[0];
    snprintf(name, sizeof name, "%sdecoder.conv_in.weight", F);
    if (need(k, name, 4, &s, e)) return -1;
    v->latent_channels = (int)s[1];
    snprintf(name, sizeof name, "%sencoder.down.", F);
    int n = count_indexed(k, name);
    if (n < 1 || n > VKL_SD_MAX_LEVELS)
        return vkl_fail(e, "VAE: %d encoder levels (%sencoder.down.N) (supported 1..%d)", n, F,
                        VKL_SD_MAX_LEVELS);
    v->n_levels = n;
    for (int b = 0; b < n; b++) {
        snprintf(name, sizeof name, "%sencoder.down.%d.block.0.conv1.weight", F, b);
        if (need(k, name, 4, &s, e)) return -1;
        v->block_out_channels[b] = (int)s[0];
    }
    snprintf(name, sizeof name, "%sencoder.down.0.block.", F);
    v->layers_per_block = count_indexed(k, name);
    return 0;
}

/* HF CLIP text model stored under prefix P (ending in "text_model." or not). */
static int infer_clip(const vkl_sd_keys *k, const char *P, vkl_sd_text_config *t, vkl_err *e)
{
    char name[256], pre[200];
    const int64_t *s;
    snprintf(pre, sizeof pre, "%stext_model.", P);
    if (!vkl_sd_keys_count_prefix(k, pre)) snprintf(pre, sizeof pre, "%s", P);
    snprintf(name, sizeof name, "%sembeddings.token_embedding.weight", pre);
    if (need(k, name, 2, &s, e)) return -1;
    t->vocab = (int)s[0];
    t->hidden = (int)s[1];
    snprintf(name, sizeof name, "%sembeddings.position_embedding.weight", pre);
    if (need(k, name, 2, &s, e)) return -1;
    t->max_positions = (int)s[0];
    snprintf(name, sizeof name, "%sencoder.layers.", pre);
    t->layers = count_indexed(k, name);
    snprintf(name, sizeof name, "%sencoder.layers.0.mlp.fc1.weight", pre);
    if (need(k, name, 2, &s, e)) return -1;
    t->intermediate = (int)s[0];
    return 0;
}

static int infer_openclip(const vkl_sd_keys *k, const char *P, int drop_last, int projection,
                          vkl_sd_text_config *t, vkl_err *e)
{
    char name[256];
    const int64_t *s;
    snprintf(name, sizeof name, "%stoken_embedding.weight", P);
    if (need(k, name, 2, &s, e)) return -1;
    t->vocab = (int)s[0];
    t->hidden = (int)s[1];
    snprintf(name, sizeof name, "%spositional_embedding", P);
    if (need(k, name, 2, &s, e)) return -1;
    t->max_positions = (int)s[0];
    snprintf(name, sizeof name, "%stransformer.resblocks.", P);
    t->layers = count_indexed(k, name) - (drop_last ? 1 : 0);
    snprintf(name, sizeof name, "%stransformer.resblocks.0.mlp.c_fc.weight", P);
    if (need(k, name, 2, &s, e)) return -1;
    t->intermediate = (int)s[0];
    if (projection) {
        snprintf(name, sizeof name, "%stext_projection", P);
        if (need(k, name, 2, &s, e)) return -1;
        t->projection_dim = (int)s[1];
    }
    return 0;
}

int vkl_sd_config_infer_ldm(const vkl_sd_keys *k, vkl_sd_family f, vkl_sd_config *c, vkl_err *e)
{
    vkl_sd_config_family_defaults(c, f);
    if (infer_unet(k, f, &c->unet, e)) {
        vkl_err_prefix(e, "inferring the UNet configuration: ");
        return -1;
    }
    if (infer_vae(k, &c->vae, e)) {
        vkl_err_prefix(e, "inferring the VAE configuration: ");
        return -1;
    }
    int rc;
    if (f == VKL_SD_FAMILY_SD1)
        rc = infer_clip(k, "cond_stage_model.transformer.", &c->te[0], e);
    else if (f == VKL_SD_FAMILY_SD2) /* conditioning is the penultimate layer */
        rc = infer_openclip(k, "cond_stage_model.model.", 1, 0, &c->te[0], e);
    else
        rc = infer_clip(k, "conditioner.embedders.0.transformer.", &c->te[0], e) ||
             infer_openclip(k, "conditioner.embedders.1.model.", 0, 1, &c->te[1], e);
    if (rc) {
        vkl_err_prefix(e, "inferring the text encoder configuration: ");
        return -1;
    }
    for (int i = 0; i < c->n_text_encoders; i++) {
        /* CLIP and OpenCLIP text towers use heads of width 64; 0 = unknown. */
        vkl_sd_text_config *t = &c->te[i];
        t->heads = t->hidden % 64 == 0 ? t->hidden / 64 : 0;
    }
    if (c->unet.add_text_time && c->te[1].projection_dim > 0) {
        int rest = c->unet.projection_class_embeddings_input_dim - c->te[1].projection_dim;
        if (rest > 0 && rest % 6 == 0) c->unet.addition_time_embed_dim = rest / 6;
    }
    return 0;
}
