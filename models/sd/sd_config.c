#include "sd/sd_config.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>

const char *vkl_sd_family_name(vkl_sd_family f)
{
    switch (f) {
    case VKL_SD_FAMILY_SD1: return "SD1";
    case VKL_SD_FAMILY_SD2: return "SD2";
    case VKL_SD_FAMILY_SDXL: return "SDXL";
    default: return "unknown";
    }
}

int vkl_sd_family_heads(vkl_sd_family f, int channels)
{
    if (channels <= 0) return -1;
    if (f == VKL_SD_FAMILY_SD1) return channels % 8 == 0 ? 8 : -1;
    if (f == VKL_SD_FAMILY_SD2 || f == VKL_SD_FAMILY_SDXL)
        return channels % 64 == 0 ? channels / 64 : -1;
    return -1;
}

static void text_defaults(vkl_sd_text_config *t, vkl_sd_act act)
{
    t->act = act;
    t->max_positions = 77;
    t->vocab = 49408;
    /* The CLIP configs shipped with SD checkpoints carry these legacy ids; the
     * tokenizer, not the config, decides the real BOS/EOS/pad. */
    t->bos_id = 0;
    t->eos_id = 2;
    t->pad_id = 1;
    t->layer_norm_eps = 1e-5f;
}

void vkl_sd_config_family_defaults(vkl_sd_config *c, vkl_sd_family f)
{
    memset(c, 0, sizeof *c);
    c->family = f;
    vkl_sd_unet_config *u = &c->unet;
    u->in_channels = 4;
    u->out_channels = 4;
    u->norm_num_groups = 32;
    u->norm_eps = 1e-5f;
    u->transformer_norm_eps = 1e-6f;
    u->layer_norm_eps = 1e-5f;
    u->flip_sin_to_cos = 1;
    u->freq_shift = 0;
    u->use_linear_projection = f != VKL_SD_FAMILY_SD1;
    u->sample_size = f == VKL_SD_FAMILY_SDXL ? 128 : f == VKL_SD_FAMILY_SD2 ? 96 : 64;
    if (f == VKL_SD_FAMILY_SDXL) {
        u->add_text_time = 1;
        u->addition_time_embed_dim = 256;
    }
    vkl_sd_vae_config *v = &c->vae;
    v->in_channels = 3;
    v->out_channels = 3;
    v->latent_channels = 4;
    v->norm_num_groups = 32;
    v->norm_eps = 1e-6f;
    v->scaling_factor = f == VKL_SD_FAMILY_SDXL ? 0.13025f : 0.18215f;
    v->sample_size = u->sample_size * 8;
    c->n_text_encoders = f == VKL_SD_FAMILY_SDXL ? 2 : 1;
    text_defaults(&c->te[0], f == VKL_SD_FAMILY_SD2 ? VKL_SD_ACT_GELU : VKL_SD_ACT_QUICK_GELU);
    if (f == VKL_SD_FAMILY_SDXL) text_defaults(&c->te[1], VKL_SD_ACT_GELU);
    vkl_sd_sched_config *s = &c->sched;
    s->beta_schedule = VKL_SD_BETA_SCALED_LINEAR;
    s->beta_start = 0.00085f;
    s->beta_end = 0.012f;
    s->train_steps = 1000;
    /* 2.x 768px checkpoints are v-prediction; 2.x-base (512px) is epsilon and
     * needs its yaml or scheduler config to say so. */
    s->prediction = f == VKL_SD_FAMILY_SD2 ? VKL_SD_PRED_V : VKL_SD_PRED_EPSILON;
    s->steps_offset = 1;
    s->set_alpha_to_one = 0;
    s->clip_sample = 0;
    /* SDXL base's scheduler_config.json: "leading" (diffusers uses it for
     * single files too) */
    s->timestep_spacing = f == VKL_SD_FAMILY_SDXL ? 1 : 0;
}

static int positive(int v, const char *field, vkl_err *e)
{
    if (v <= 0) return vkl_fail(e, "config: %s must be positive (got %d)", field, v);
    return 0;
}

static int validate_text(const vkl_sd_text_config *t, int i, vkl_err *e)
{
    char f[64];
    const int *vals[] = {&t->hidden, &t->layers, &t->heads, &t->intermediate, &t->max_positions,
                         &t->vocab};
    const char *names[] = {"hidden", "layers", "heads", "intermediate", "max_positions", "vocab"};
    for (int k = 0; k < 6; k++) {
        snprintf(f, sizeof f, "text_encoder%s.%s", i ? "_2" : "", names[k]);
        if (positive(*vals[k], f, e)) return -1;
    }
    if (t->hidden % t->heads)
        return vkl_fail(e, "config: text_encoder%s hidden %d not divisible by heads %d",
                        i ? "_2" : "", t->hidden, t->heads);
    return 0;
}

int vkl_sd_vae_config_validate(const vkl_sd_vae_config *v, vkl_err *e)
{
    if (v->n_levels < 1 || v->n_levels > VKL_SD_MAX_LEVELS)
        return vkl_fail(e, "config: vae has %d levels (supported 1..%d)", v->n_levels,
                        VKL_SD_MAX_LEVELS);
    if (positive(v->layers_per_block, "vae.layers_per_block", e) ||
        positive(v->latent_channels, "vae.latent_channels", e) ||
        positive(v->norm_num_groups, "vae.norm_num_groups", e) ||
        positive(v->in_channels, "vae.in_channels", e) ||
        positive(v->out_channels, "vae.out_channels", e))
        return -1;
    for (int l = 0; l < v->n_levels; l++)
        if (v->block_out_channels[l] <= 0 || v->block_out_channels[l] % v->norm_num_groups)
            return vkl_fail(e, "config: vae level %d has %d channels, not a positive multiple of "
                               "%d norm groups", l, v->block_out_channels[l], v->norm_num_groups);
    if (!(v->scaling_factor > 0) || !(v->norm_eps > 0))
        return vkl_fail(e, "config: vae scaling_factor %g and norm eps %g must be positive",
                        v->scaling_factor, v->norm_eps);
    return 0;
}

int vkl_sd_config_validate(const vkl_sd_config *c, vkl_err *e)
{
    const vkl_sd_unet_config *u = &c->unet;
    if (u->n_levels < 1 || u->n_levels > VKL_SD_MAX_LEVELS)
        return vkl_fail(e, "config: unet has %d levels (supported 1..%d)", u->n_levels,
                        VKL_SD_MAX_LEVELS);
    if (positive(u->layers_per_block, "unet.layers_per_block", e) ||
        positive(u->in_channels, "unet.in_channels", e) ||
        positive(u->out_channels, "unet.out_channels", e) ||
        positive(u->norm_num_groups, "unet.norm_num_groups", e) ||
        positive(u->time_proj_dim, "unet.time_proj_dim", e) ||
        positive(u->time_embed_dim, "unet.time_embed_dim", e) ||
        positive(u->cross_attention_dim, "unet.cross_attention_dim", e))
        return -1;
    for (int l = 0; l < u->n_levels; l++) {
        int ch = u->block_out_channels[l];
        if (ch <= 0 || ch % u->norm_num_groups)
            return vkl_fail(e, "config: unet level %d has %d channels, not a positive multiple of "
                               "%d norm groups", l, ch, u->norm_num_groups);
        int attn = u->down_attn[l] || u->up_attn[u->n_levels - 1 - l];
        if (attn && (u->heads[l] <= 0 || ch % u->heads[l]))
            return vkl_fail(e, "config: unet level %d: %d channels not divisible by %d heads", l,
                            ch, u->heads[l]);
        if (u->down_attn[l] && u->transformer_layers[l] <= 0)
            return vkl_fail(e, "config: unet level %d has attention but %d transformer layers", l,
                            u->transformer_layers[l]);
    }
    int top = u->block_out_channels[u->n_levels - 1];
    if (u->mid_attn && (u->mid_heads <= 0 || top % u->mid_heads || u->mid_transformer_layers <= 0))
        return vkl_fail(e, "config: unet mid block: %d channels, %d heads, %d transformer layers",
                        top, u->mid_heads, u->mid_transformer_layers);
    if (vkl_sd_vae_config_validate(&c->vae, e)) return -1;
    if (c->n_text_encoders < 1 || c->n_text_encoders > VKL_SD_MAX_TEXT_ENCODERS)
        return vkl_fail(e, "config: %d text encoders", c->n_text_encoders);
    for (int i = 0; i < c->n_text_encoders; i++)
        if (validate_text(&c->te[i], i, e)) return -1;
    if (c->sched.train_steps <= 0 || !(c->sched.beta_start > 0) ||
        !(c->sched.beta_end > c->sched.beta_start))
        return vkl_fail(e, "config: scheduler betas %g..%g over %d steps are not a schedule",
                        c->sched.beta_start, c->sched.beta_end, c->sched.train_steps);
    return 0;
}

typedef struct {
    char *buf;
    size_t size, len;
    int n;
} diff_out;

static void diff_add(diff_out *d, const char *fmt, ...) VKL_PRINTF(2, 3);
static void diff_add(diff_out *d, const char *fmt, ...)
{
    d->n++;
    if (!d->buf || d->len + 1 >= d->size) return;
    if (d->len) {
        int k = snprintf(d->buf + d->len, d->size - d->len, "; ");
        if (k > 0) d->len += (size_t)k;
        if (d->len >= d->size) { d->len = d->size - 1; return; }
    }
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(d->buf + d->len, d->size - d->len, fmt, ap);
    va_end(ap);
    if (k > 0) d->len += (size_t)k;
    if (d->len >= d->size) d->len = d->size - 1;
}

static void di(diff_out *d, const char *f, int a, int b)
{
    if (a != b) diff_add(d, "%s: %d vs %d", f, a, b);
}

static void df(diff_out *d, const char *f, float a, float b)
{
    /* Values from JSON text and from code constants may differ in the last bit. */
    if (fabsf(a - b) > 1e-6f * fmaxf(fabsf(a), fabsf(b))) diff_add(d, "%s: %g vs %g", f, a, b);
}

static void dl(diff_out *d, const char *f, const int *a, const int *b, int n)
{
    char name[64];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s[%d]", f, i);
        di(d, name, a[i], b[i]);
    }
}

static void diff_text(diff_out *d, const vkl_sd_text_config *a, const vkl_sd_text_config *b,
                      const char *p)
{
    char f[64];
#define TI(x) (snprintf(f, sizeof f, "%s.%s", p, #x), di(d, f, a->x, b->x))
    TI(hidden); TI(layers); TI(heads); TI(intermediate); TI(act); TI(max_positions);
    TI(vocab); TI(bos_id); TI(eos_id); TI(pad_id); TI(projection_dim);
#undef TI
    snprintf(f, sizeof f, "%s.layer_norm_eps", p);
    df(d, f, a->layer_norm_eps, b->layer_norm_eps);
}

int vkl_sd_config_diff(const vkl_sd_config *a, const vkl_sd_config *b, char *buf, size_t size)
{
    diff_out d = {buf, size, 0, 0};
    if (buf && size) buf[0] = 0;
    di(&d, "family", a->family, b->family);
    const vkl_sd_unet_config *ua = &a->unet, *ub = &b->unet;
#define UI(x) di(&d, "unet." #x, ua->x, ub->x)
#define UF(x) df(&d, "unet." #x, ua->x, ub->x)
    UI(in_channels); UI(out_channels); UI(n_levels); UI(layers_per_block); UI(mid_attn);
    UI(mid_heads); UI(mid_transformer_layers); UI(cross_attention_dim);
    UI(use_linear_projection); UI(upcast_attention); UI(norm_num_groups); UI(time_proj_dim);
    UI(time_embed_dim); UI(flip_sin_to_cos); UI(freq_shift); UI(add_text_time);
    UI(addition_time_embed_dim); UI(projection_class_embeddings_input_dim); UI(sample_size);
    UF(norm_eps); UF(transformer_norm_eps); UF(layer_norm_eps);
    int n = ua->n_levels < ub->n_levels ? ua->n_levels : ub->n_levels;
    dl(&d, "unet.block_out_channels", ua->block_out_channels, ub->block_out_channels, n);
    dl(&d, "unet.down_attn", ua->down_attn, ub->down_attn, n);
    dl(&d, "unet.up_attn", ua->up_attn, ub->up_attn, n);
    dl(&d, "unet.heads", ua->heads, ub->heads, n);
    dl(&d, "unet.transformer_layers", ua->transformer_layers, ub->transformer_layers, n);
#undef UI
#undef UF
    const vkl_sd_vae_config *va = &a->vae, *vb = &b->vae;
#define VI(x) di(&d, "vae." #x, va->x, vb->x)
    VI(in_channels); VI(out_channels); VI(n_levels); VI(layers_per_block); VI(latent_channels);
    VI(norm_num_groups); VI(sample_size);
#undef VI
    df(&d, "vae.norm_eps", va->norm_eps, vb->norm_eps);
    df(&d, "vae.scaling_factor", va->scaling_factor, vb->scaling_factor);
    n = va->n_levels < vb->n_levels ? va->n_levels : vb->n_levels;
    dl(&d, "vae.block_out_channels", va->block_out_channels, vb->block_out_channels, n);
    di(&d, "n_text_encoders", a->n_text_encoders, b->n_text_encoders);
    n = a->n_text_encoders < b->n_text_encoders ? a->n_text_encoders : b->n_text_encoders;
    for (int i = 0; i < n && i < VKL_SD_MAX_TEXT_ENCODERS; i++)
        diff_text(&d, &a->te[i], &b->te[i], i ? "text_encoder_2" : "text_encoder");
    const vkl_sd_sched_config *sa = &a->sched, *sb = &b->sched;
#define SI(x) di(&d, "scheduler." #x, sa->x, sb->x)
    SI(beta_schedule); SI(train_steps); SI(prediction); SI(steps_offset); SI(set_alpha_to_one); SI(timestep_spacing);
    SI(clip_sample);
#undef SI
    df(&d, "scheduler.beta_start", sa->beta_start, sb->beta_start);
    df(&d, "scheduler.beta_end", sa->beta_end, sb->beta_end);
    return d.n;
}
