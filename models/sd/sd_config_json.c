/* diffusers / transformers config.json -> vkl_sd_config. Absent or null keys
 * keep the value already in the struct (the family default), as diffusers
 * falls back to its class defaults. */
#include "sd/sd_config.h"
#include "io/text.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

static const cJSON *item(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

/* A JSON number that is a whole int of at most 2^24 in magnitude: no real
 * config value comes near, and the bound keeps derived sizes (4 * channels,
 * channels * heads) inside int. */
#define CFG_INT_LIMIT 16777216.0
static int is_int(const cJSON *x)
{
    return cJSON_IsNumber(x) && fabs(x->valuedouble) <= CFG_INT_LIMIT &&
           x->valuedouble == (double)(int)x->valuedouble;
}

static int get_int(const cJSON *o, const char *key, int *dst, const char *label, vkl_err *e)
{
    const cJSON *it = item(o, key);
    if (!it) return 0;
    if (!is_int(it))
        return vkl_fail(e, "%s: \"%s\" is not an integer within ±16777216", label, key);
    *dst = (int)it->valuedouble;
    return 0;
}

static int get_float(const cJSON *o, const char *key, float *dst, const char *label, vkl_err *e)
{
    const cJSON *it = item(o, key);
    if (!it) return 0;
    if (!cJSON_IsNumber(it)) return vkl_fail(e, "%s: \"%s\" is not a number", label, key);
    *dst = (float)it->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *key, int *dst, const char *label, vkl_err *e)
{
    const cJSON *it = item(o, key);
    if (!it) return 0;
    if (!cJSON_IsBool(it)) return vkl_fail(e, "%s: \"%s\" is not true/false", label, key);
    *dst = cJSON_IsTrue(it);
    return 0;
}

static const char *get_str(const cJSON *o, const char *key)
{
    const cJSON *it = item(o, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* An int or a list of ints, broadcast / checked against n entries.
 * Returns 1 when present, 0 when absent, -1 on error. */
static int get_int_per_level(const cJSON *o, const char *key, int *dst, int n, const char *label,
                             vkl_err *e)
{
    const cJSON *it = item(o, key);
    if (!it) return 0;
    if (cJSON_IsNumber(it)) {
        if (!is_int(it)) return vkl_fail(e, "%s: \"%s\" is not an integer within ±16777216", label, key);
        for (int i = 0; i < n; i++) dst[i] = (int)it->valuedouble;
        return 1;
    }
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != n)
        return vkl_fail(e, "%s: \"%s\" must be an integer or a list of %d integers", label, key, n);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, it) {
        if (!is_int(x))
            return vkl_fail(e, "%s: \"%s\"[%d] is not an integer within ±16777216 (nested lists are not supported)",
                            label, key, i);
        dst[i++] = (int)x->valuedouble;
    }
    return 1;
}

static int get_int_list(const cJSON *o, const char *key, int *dst, int max, int *n,
                        const char *label, vkl_err *e)
{
    const cJSON *it = item(o, key);
    if (!it) return 0;
    if (!cJSON_IsArray(it)) return vkl_fail(e, "%s: \"%s\" is not a list", label, key);
    int k = cJSON_GetArraySize(it);
    if (k < 1 || k > max)
        return vkl_fail(e, "%s: \"%s\" has %d entries (supported 1..%d)", label, key, k, max);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, it) {
        if (!is_int(x)) return vkl_fail(e, "%s: \"%s\"[%d] is not an integer within ±16777216", label, key, i);
        dst[i++] = (int)x->valuedouble;
    }
    *n = k;
    return 0;
}

/* Block type lists: each entry must be one of two names (with / without attention). */
static int get_block_types(const cJSON *o, const char *key, const char *with, const char *without,
                           int *dst, int n, const char *label, vkl_err *e)
{
    const cJSON *it = item(o, key);
    if (!it) return 0;
    if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != n)
        return vkl_fail(e, "%s: \"%s\" must list %d block types", label, key, n);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, it) {
        const char *s = cJSON_IsString(x) ? x->valuestring : "";
        if (!strcmp(s, with)) dst[i] = 1;
        else if (!strcmp(s, without)) dst[i] = 0;
        else
            return vkl_fail(e, "%s: %s[%d] = \"%s\" is not supported (only %s, %s)", label, key, i,
                            s, with, without);
        i++;
    }
    return 0;
}

static cJSON *parse(const char *text, const char *label, vkl_err *e)
{
    cJSON *j = cJSON_Parse(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        vkl_fail(e, "%s: not a JSON object", label);
        return NULL;
    }
    return j;
}

/* Options whose non-default values change the network in ways vklora does not implement. */
static int unet_reject(const cJSON *j, const char *label, vkl_err *e)
{
    static const struct { const char *key, *ok; } str_opts[] = {
        {"time_embedding_type", "positional"}, {"resnet_time_scale_shift", "default"},
        {"attention_type", "default"},         {"act_fn", "silu"},
    };
    for (size_t i = 0; i < sizeof str_opts / sizeof str_opts[0]; i++) {
        const char *s = get_str(j, str_opts[i].key);
        if (s && strcmp(s, str_opts[i].ok))
            return vkl_fail(e, "%s: %s \"%s\" is not supported (only \"%s\")", label,
                            str_opts[i].key, s, str_opts[i].ok);
    }
    static const char *must_be_null[] = {"class_embed_type", "encoder_hid_dim_type",
                                         "time_cond_proj_dim", "num_class_embeds",
                                         "cross_attention_norm", "timestep_post_act"};
    for (size_t i = 0; i < sizeof must_be_null / sizeof must_be_null[0]; i++)
        if (item(j, must_be_null[i]))
            return vkl_fail(e, "%s: %s is set; this UNet variant is not supported", label,
                            must_be_null[i]);
    static const char *must_be_false[] = {"dual_cross_attention", "only_cross_attention",
                                          "center_input_sample", "class_embeddings_concat"};
    for (size_t i = 0; i < sizeof must_be_false / sizeof must_be_false[0]; i++) {
        int v = 0;
        if (get_bool(j, must_be_false[i], &v, label, e)) return -1;
        if (v) return vkl_fail(e, "%s: %s=true is not supported", label, must_be_false[i]);
    }
    const char *add = get_str(j, "addition_embed_type");
    if (add && strcmp(add, "text_time"))
        return vkl_fail(e, "%s: addition_embed_type \"%s\" is not supported", label, add);
    return 0;
}

int vkl_sd_unet_config_from_json(const char *text, const char *label, vkl_sd_unet_config *u,
                                 vkl_err *e)
{
    cJSON *j = parse(text, label, e);
    if (!j) return -1;
    int rc = -1;
    if (unet_reject(j, label, e)) goto done;
    if (get_int(j, "in_channels", &u->in_channels, label, e) ||
        get_int(j, "out_channels", &u->out_channels, label, e) ||
        get_int_list(j, "block_out_channels", u->block_out_channels, VKL_SD_MAX_LEVELS,
                     &u->n_levels, label, e))
        goto done;
    if (u->n_levels < 1) {
        vkl_fail(e, "%s: no block_out_channels", label);
        goto done;
    }
    int n = u->n_levels;
    int lpb[VKL_SD_MAX_LEVELS];
    int has = get_int_per_level(j, "layers_per_block", lpb, n, label, e);
    if (has < 0) goto done;
    if (has) {
        for (int i = 1; i < n; i++)
            if (lpb[i] != lpb[0]) {
                vkl_fail(e, "%s: layers_per_block differing per level is not supported", label);
                goto done;
            }
        u->layers_per_block = lpb[0];
    }
    if (get_block_types(j, "down_block_types", "CrossAttnDownBlock2D", "DownBlock2D", u->down_attn,
                        n, label, e) ||
        get_block_types(j, "up_block_types", "CrossAttnUpBlock2D", "UpBlock2D", u->up_attn, n,
                        label, e))
        goto done;
    const char *mid = get_str(j, "mid_block_type");
    if (mid && strcmp(mid, "UNetMidBlock2DCrossAttn")) {
        vkl_fail(e, "%s: mid_block_type \"%s\" is not supported", label, mid);
        goto done;
    }
    u->mid_attn = 1;
    /* diffusers' attention_head_dim is the number of heads unless
     * num_attention_heads is given (a historical misnomer kept for compatibility). */
    has = get_int_per_level(j, "num_attention_heads", u->heads, n, label, e);
    if (has < 0) goto done;
    if (!has && get_int_per_level(j, "attention_head_dim", u->heads, n, label, e) < 0) goto done;
    u->mid_heads = u->heads[n - 1];
    int tl[VKL_SD_MAX_LEVELS];
    for (int i = 0; i < n; i++) tl[i] = 1;
    if (get_int_per_level(j, "transformer_layers_per_block", tl, n, label, e) < 0) goto done;
    for (int i = 0; i < n; i++) u->transformer_layers[i] = u->down_attn[i] ? tl[i] : 0;
    u->mid_transformer_layers = tl[n - 1];
    if (item(j, "reverse_transformer_layers_per_block")) {
        vkl_fail(e, "%s: reverse_transformer_layers_per_block is not supported", label);
        goto done;
    }
    if (get_int(j, "cross_attention_dim", &u->cross_attention_dim, label, e) ||
        get_bool(j, "use_linear_projection", &u->use_linear_projection, label, e) ||
        get_bool(j, "upcast_attention", &u->upcast_attention, label, e) ||
        get_int(j, "norm_num_groups", &u->norm_num_groups, label, e) ||
        get_float(j, "norm_eps", &u->norm_eps, label, e) ||
        get_bool(j, "flip_sin_to_cos", &u->flip_sin_to_cos, label, e) ||
        get_int(j, "freq_shift", &u->freq_shift, label, e) ||
        get_int(j, "sample_size", &u->sample_size, label, e))
        goto done;
    u->time_proj_dim = u->block_out_channels[0];
    u->time_embed_dim = 4 * u->block_out_channels[0];
    if (get_int(j, "time_embedding_dim", &u->time_embed_dim, label, e)) goto done;
    const char *add = get_str(j, "addition_embed_type");
    u->add_text_time = add != NULL;
    if (u->add_text_time) {
        if (get_int(j, "addition_time_embed_dim", &u->addition_time_embed_dim, label, e) ||
            get_int(j, "projection_class_embeddings_input_dim",
                    &u->projection_class_embeddings_input_dim, label, e))
            goto done;
    } else {
        u->addition_time_embed_dim = 0;
        u->projection_class_embeddings_input_dim = 0;
    }
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

int vkl_sd_vae_config_from_json(const char *text, const char *label, vkl_sd_vae_config *v,
                                vkl_err *e)
{
    cJSON *j = parse(text, label, e);
    if (!j) return -1;
    int rc = -1;
    if (get_int(j, "in_channels", &v->in_channels, label, e) ||
        get_int(j, "out_channels", &v->out_channels, label, e) ||
        get_int_list(j, "block_out_channels", v->block_out_channels, VKL_SD_MAX_LEVELS,
                     &v->n_levels, label, e) ||
        get_int(j, "layers_per_block", &v->layers_per_block, label, e) ||
        get_int(j, "latent_channels", &v->latent_channels, label, e) ||
        get_int(j, "norm_num_groups", &v->norm_num_groups, label, e) ||
        get_float(j, "scaling_factor", &v->scaling_factor, label, e) ||
        get_int(j, "sample_size", &v->sample_size, label, e))
        goto done;
    int types[VKL_SD_MAX_LEVELS];
    if (get_block_types(j, "down_block_types", "DownEncoderBlock2D", "DownEncoderBlock2D", types,
                        v->n_levels, label, e) ||
        get_block_types(j, "up_block_types", "UpDecoderBlock2D", "UpDecoderBlock2D", types,
                        v->n_levels, label, e))
        goto done;
    const char *act = get_str(j, "act_fn");
    if (act && strcmp(act, "silu")) {
        vkl_fail(e, "%s: act_fn \"%s\" is not supported (only silu)", label, act);
        goto done;
    }
    if (item(j, "shift_factor") || item(j, "latents_mean")) {
        vkl_fail(e, "%s: shift_factor / latents_mean latent normalisation is not supported", label);
        goto done;
    }
    int quant = 1;
    if (get_bool(j, "use_quant_conv", &quant, label, e) ||
        (!quant && vkl_fail(e, "%s: use_quant_conv=false is not supported", label)))
        goto done;
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

int vkl_sd_text_config_from_json(const char *text, const char *label, int with_projection,
                                 vkl_sd_text_config *t, vkl_err *e)
{
    cJSON *j = parse(text, label, e);
    if (!j) return -1;
    int rc = -1;
    if (get_int(j, "hidden_size", &t->hidden, label, e) ||
        get_int(j, "num_hidden_layers", &t->layers, label, e) ||
        get_int(j, "num_attention_heads", &t->heads, label, e) ||
        get_int(j, "intermediate_size", &t->intermediate, label, e) ||
        get_int(j, "max_position_embeddings", &t->max_positions, label, e) ||
        get_int(j, "vocab_size", &t->vocab, label, e) ||
        get_int(j, "bos_token_id", &t->bos_id, label, e) ||
        get_int(j, "eos_token_id", &t->eos_id, label, e) ||
        get_int(j, "pad_token_id", &t->pad_id, label, e) ||
        get_float(j, "layer_norm_eps", &t->layer_norm_eps, label, e))
        goto done;
    const char *act = get_str(j, "hidden_act");
    if (act) {
        if (!strcmp(act, "quick_gelu")) t->act = VKL_SD_ACT_QUICK_GELU;
        else if (!strcmp(act, "gelu")) t->act = VKL_SD_ACT_GELU;
        else {
            vkl_fail(e, "%s: hidden_act \"%s\" is not supported (quick_gelu, gelu)", label, act);
            goto done;
        }
    }
    t->projection_dim = 0;
    if (with_projection) {
        t->projection_dim = t->hidden;
        if (get_int(j, "projection_dim", &t->projection_dim, label, e)) goto done;
    }
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

int vkl_sd_sched_config_from_json(const char *text, const char *label, vkl_sd_sched_config *s,
                                  vkl_err *e)
{
    cJSON *j = parse(text, label, e);
    if (!j) return -1;
    int rc = -1;
    if (get_float(j, "beta_start", &s->beta_start, label, e) ||
        get_float(j, "beta_end", &s->beta_end, label, e) ||
        get_int(j, "num_train_timesteps", &s->train_steps, label, e) ||
        get_int(j, "steps_offset", &s->steps_offset, label, e) ||
        get_bool(j, "set_alpha_to_one", &s->set_alpha_to_one, label, e) ||
        get_bool(j, "clip_sample", &s->clip_sample, label, e))
        goto done;
    if (item(j, "trained_betas")) {
        vkl_fail(e, "%s: trained_betas is not supported", label);
        goto done;
    }
    const char *b = get_str(j, "beta_schedule");
    if (b) {
        if (!strcmp(b, "scaled_linear")) s->beta_schedule = VKL_SD_BETA_SCALED_LINEAR;
        else if (!strcmp(b, "linear")) s->beta_schedule = VKL_SD_BETA_LINEAR;
        else if (!strcmp(b, "squaredcos_cap_v2")) s->beta_schedule = VKL_SD_BETA_SQUAREDCOS_CAP_V2;
        else {
            vkl_fail(e, "%s: beta_schedule \"%s\" is not supported", label, b);
            goto done;
        }
    }
    const char *sp = get_str(j, "timestep_spacing");
    if (sp) {
        if (!strcmp(sp, "leading")) s->timestep_spacing = 1;
        else if (!strcmp(sp, "linspace")) s->timestep_spacing = 2;
        else if (!strcmp(sp, "trailing")) s->timestep_spacing = 3;
        else {
            vkl_fail(e, "%s: timestep_spacing \"%s\" is not supported (leading, linspace, trailing)", label, sp);
            goto done;
        }
    }
    const char *p = get_str(j, "prediction_type");
    if (p) {
        if (!strcmp(p, "epsilon")) s->prediction = VKL_SD_PRED_EPSILON;
        else if (!strcmp(p, "v_prediction")) s->prediction = VKL_SD_PRED_V;
        else {
            vkl_fail(e, "%s: prediction_type \"%s\" is not supported (epsilon, v_prediction)",
                     label, p);
            goto done;
        }
    }
    rc = 0;
done:
    cJSON_Delete(j);
    return rc;
}

int vkl_sd_family_from_json(const char *unet_json, const char *te_json, int has_text_encoder_2,
                            vkl_sd_family *f, vkl_err *e)
{
    int cross = 0, text_time = 0, gelu = -1;
    if (unet_json) {
        cJSON *j = parse(unet_json, "unet/config.json", e);
        if (!j) return -1;
        const cJSON *c = item(j, "cross_attention_dim");
        if (is_int(c)) cross = (int)c->valuedouble; /* a width beyond int is no known family */
        const char *add = get_str(j, "addition_embed_type");
        text_time = add && !strcmp(add, "text_time");
        cJSON_Delete(j);
    }
    if (te_json) {
        cJSON *j = parse(te_json, "text_encoder/config.json", e);
        if (!j) return -1;
        const char *act = get_str(j, "hidden_act");
        if (act) gelu = !strcmp(act, "gelu");
        cJSON_Delete(j);
    }
    if (text_time || has_text_encoder_2) *f = VKL_SD_FAMILY_SDXL;
    else if (gelu == 1 || (gelu < 0 && cross == 1024)) *f = VKL_SD_FAMILY_SD2;
    else if (gelu == 0 || cross == 768) *f = VKL_SD_FAMILY_SD1;
    else
        return vkl_fail(e, "cannot tell the model family (1.x, 2.x, XL): cross_attention_dim %d, "
                           "no text encoder config", cross);
    return 0;
}

static int read_part(const char *dir, const char *rel, int required, char **out, vkl_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    struct stat st;
    if (stat(path, &st) != 0) {
        *out = NULL;
        return required ? vkl_fail(e, "%s: missing (required in a diffusers model folder)", path)
                        : 0;
    }
    return vkl_read_text_file(path, 1 << 20, out, NULL, e);
}

int vkl_sd_config_read_diffusers(const char *dir, vkl_sd_config *c, vkl_err *e)
{
    char *index = NULL, *unet = NULL, *vae = NULL, *te = NULL, *te2 = NULL, *sched = NULL;
    int rc = -1;
    if (read_part(dir, "model_index.json", 1, &index, e) ||
        read_part(dir, "unet/config.json", 1, &unet, e) ||
        read_part(dir, "vae/config.json", 1, &vae, e) ||
        read_part(dir, "text_encoder/config.json", 1, &te, e) ||
        read_part(dir, "text_encoder_2/config.json", 0, &te2, e) ||
        read_part(dir, "scheduler/scheduler_config.json", 0, &sched, e))
        goto done;
    cJSON *ij = parse(index, "model_index.json", e);
    if (!ij) goto done;
    cJSON_Delete(ij);
    vkl_sd_family fam;
    if (vkl_sd_family_from_json(unet, te, te2 != NULL, &fam, e)) goto done;
    vkl_sd_config_family_defaults(c, fam);
    char label[4200];
#define LABEL(rel) (snprintf(label, sizeof label, "%s/%s", dir, rel), label)
    if (vkl_sd_unet_config_from_json(unet, LABEL("unet/config.json"), &c->unet, e) ||
        vkl_sd_vae_config_from_json(vae, LABEL("vae/config.json"), &c->vae, e) ||
        vkl_sd_text_config_from_json(te, LABEL("text_encoder/config.json"), 0, &c->te[0], e))
        goto done;
    c->n_text_encoders = 1;
    if (te2) {
        if (vkl_sd_text_config_from_json(te2, LABEL("text_encoder_2/config.json"), 1, &c->te[1],
                                         e))
            goto done;
        c->n_text_encoders = 2;
    }
    if (sched &&
        vkl_sd_sched_config_from_json(sched, LABEL("scheduler/scheduler_config.json"), &c->sched,
                                      e))
        goto done;
#undef LABEL
    if (vkl_sd_config_validate(c, e)) {
        vkl_err_prefix(e, "%s: ", dir);
        goto done;
    }
    rc = 0;
done:
    free(index);
    free(unet);
    free(vae);
    free(te);
    free(te2);
    free(sched);
    return rc;
}
