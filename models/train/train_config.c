/* Training settings: defaults, setting by name (shared by the command line
 * and --config files), and the JSON written beside each run's output. */
#include "io/text.h"
#include "train/sd_trainer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void vkl_train_config_default(vkl_train_config *c)
{
    memset(c, 0, sizeof *c);
    vkl_dataset_opts_default(&c->data);
    c->rank = 16;
    c->alpha = 16;
    c->lr = 1e-4f;
    c->te_lr = -1;
    c->grad_accum = 1;
    c->loraplus_ratio = 1;
    c->network_kind = VKL_LORA_KIND_LORA;
    c->dylora_unit = 1;
    c->lokr_factor = -1;
    c->lr_schedule = "constant";
    c->weight_decay = 1e-2f;
    c->max_grad_norm = 1.0f;
    c->optim_bits = 32;
    c->clip_skip = 1;
    c->keep_last = 3;
    c->sample_steps = 20;
    c->weight_dtype = VKL_F16;
    c->save_dtype = VKL_F32;
}

static int as_int(const char *v, int lo, int hi, int *out, const char *key, vkl_err *e)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || !*v || *end || x < lo || x > hi) return vkl_fail(e, "%s: '%s' is not an integer in [%d, %d]", key, v, lo, hi);
    *out = (int)x;
    return 0;
}

static int as_float(const char *v, float *out, const char *key, vkl_err *e)
{
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || x != x) return vkl_fail(e, "%s: '%s' is not a number", key, v);
    *out = (float)x;
    return 0;
}

static int as_bool(const char *v, int *out, const char *key, vkl_err *e)
{
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes")) *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no")) *out = 0;
    else return vkl_fail(e, "%s: '%s' is not true or false", key, v);
    return 0;
}

/* Strings given by name are copied into the config's list, which lives
 * until vkl_train_config_free (the config's fields point into it). */
struct vkl_train_strings {
    struct vkl_train_strings *next;
    char s[];
};

static const char *keep_in(vkl_train_config *c, const char *v)
{
    size_t n = strlen(v) + 1;
    struct vkl_train_strings *k = malloc(sizeof *k + n);
    if (!k) return NULL;
    memcpy(k->s, v, n);
    k->next = c->strings;
    c->strings = k;
    return k->s;
}
#define keep(v) keep_in(c, v)

void vkl_train_config_free(vkl_train_config *c)
{
    while (c->strings) {
        struct vkl_train_strings *n = c->strings->next;
        free(c->strings);
        c->strings = n;
    }
}

int vkl_train_config_set(vkl_train_config *c, const char *k, const char *v, vkl_err *e)
{
    vkl_dataset_opts *d = &c->data;
    if (!strcmp(k, "model")) c->model = keep(v);
    else if (!strcmp(k, "images")) d->images_dir = keep(v);
    else if (!strcmp(k, "output") || !strcmp(k, "o")) c->output = keep(v);
    else if (!strcmp(k, "tokenizer")) c->tokenizer = keep(v);
    else if (!strcmp(k, "model-config")) c->model_config = keep(v);
    else if (!strcmp(k, "caption-ext")) d->caption_ext = keep(v);
    else if (!strcmp(k, "caption")) d->default_caption = keep(v);
    else if (!strcmp(k, "trigger")) d->caption.trigger = keep(v);
    else if (!strcmp(k, "lr-schedule")) c->lr_schedule = keep(v);
    else if (!strcmp(k, "sample-prompts")) c->sample_prompts = keep(v);
    else if (!strcmp(k, "resume")) c->resume = keep(v);
    else if (!strcmp(k, "network")) {
        /* loha, lokr and dora keep --network-conv as set (locon = lora + conv) */
        if (!strcmp(v, "lora") || !strcmp(v, "locon")) {
            c->network_kind = VKL_LORA_KIND_LORA;
            c->network_conv = v[2] == 'c';
        } else if (!strcmp(v, "loha")) c->network_kind = VKL_LORA_KIND_LOHA;
        else if (!strcmp(v, "lokr")) c->network_kind = VKL_LORA_KIND_LOKR;
        else if (!strcmp(v, "dora")) c->network_kind = VKL_LORA_KIND_DORA;
        else if (!strcmp(v, "dylora")) c->network_kind = VKL_LORA_KIND_LORA; /* --network-conv as set */
        else if (!strcmp(v, "full")) c->full = 1;
        else return vkl_fail(e, "network: '%s' is not lora, locon, loha, lokr, dora, dylora or full", v);
        c->dylora = !strcmp(v, "dylora");
        if (strcmp(v, "full")) c->full = 0;
    } else if (!strcmp(k, "ema-decay")) {
        if (as_float(v, &c->ema_decay, k, e)) return -1;
        if (!(c->ema_decay >= 0 && c->ema_decay < 1)) return vkl_fail(e, "ema-decay: %s is not in [0, 1)", v);
    } else if (!strcmp(k, "save-precision")) {
        if (!strcmp(v, "fp16") || !strcmp(v, "f16")) c->save_dtype = VKL_F16;
        else if (!strcmp(v, "float") || !strcmp(v, "f32") || !strcmp(v, "fp32")) c->save_dtype = VKL_F32;
        else return vkl_fail(e, "save-precision: fp16 or float, not '%s'", v);
    } else if (!strcmp(k, "network-conv")) return as_bool(v, &c->network_conv, k, e);
    else if (!strcmp(k, "lokr-factor")) {
        if (as_int(v, -1, 1 << 20, &c->lokr_factor, k, e)) return -1;
        if (!c->lokr_factor) return vkl_fail(e, "lokr-factor: -1 or a positive factor, not 0");
    } else if (!strcmp(k, "resolution")) {
        c->resolution_given = 1;
        return as_int(v, 8, 4096, &d->resolution, k, e);
    }
    else if (!strcmp(k, "rank") || !strcmp(k, "network-dim")) return as_int(v, 1, 1024, &c->rank, k, e);
    else if (!strcmp(k, "dylora-unit")) return as_int(v, 1, 1024, &c->dylora_unit, k, e);
    else if (!strcmp(k, "alpha")) return as_float(v, &c->alpha, k, e);
    else if (!strcmp(k, "lr")) return as_float(v, &c->lr, k, e);
    else if (!strcmp(k, "te-lr")) {
        if (as_float(v, &c->te_lr, k, e)) return -1;
        if (c->te_lr < 0) return vkl_fail(e, "te-lr: '%s' is negative", v);
    } else if (!strcmp(k, "grad-accum")) return as_int(v, 1, 4096, &c->grad_accum, k, e);
    else if (!strcmp(k, "loraplus-ratio")) return as_float(v, &c->loraplus_ratio, k, e);
    else if (!strcmp(k, "warmup")) return as_int(v, 0, 1 << 30, &c->warmup, k, e);
    else if (!strcmp(k, "cycles")) return as_int(v, 1, 1000, &c->cycles, k, e);
    else if (!strcmp(k, "weight-decay")) return as_float(v, &c->weight_decay, k, e);
    else if (!strcmp(k, "max-grad-norm")) return as_float(v, &c->max_grad_norm, k, e);
    else if (!strcmp(k, "optimizer") || !strcmp(k, "optimizer-type")) {
        /* kohya spells them AdamW and AdamW8bit */
        if (!strcasecmp(v, "adamw")) c->optim_bits = 32;
        else if (!strcasecmp(v, "adamw8bit")) c->optim_bits = 8;
        else return vkl_fail(e, "%s: '%s' is not an optimizer vklora has (adamw, adamw8bit)", k, v);
    }
    else if (!strcmp(k, "max-steps")) return as_int(v, 1, 1 << 30, &c->max_steps, k, e);
    else if (!strcmp(k, "epochs")) return as_int(v, 1, 1 << 20, &c->epochs, k, e);
    else if (!strcmp(k, "batch")) return as_int(v, 1, 256, &d->batch_size, k, e);
    else if (!strcmp(k, "seed")) {
        char *end;
        errno = 0;
        d->seed = strtoull(v, &end, 10);
        if (errno || !*v || *end) return vkl_fail(e, "seed: '%s' is not a number", v);
    } else if (!strcmp(k, "min-snr-gamma")) return as_float(v, &c->min_snr_gamma, k, e);
    else if (!strcmp(k, "noise-offset")) return as_float(v, &c->noise_offset, k, e);
    else if (!strcmp(k, "clip-skip")) return as_int(v, 1, 12, &c->clip_skip, k, e);
    else if (!strcmp(k, "save-every")) return as_int(v, 0, 1 << 30, &c->save_every, k, e);
    else if (!strcmp(k, "keep-last")) return as_int(v, 1, 1000, &c->keep_last, k, e);
    else if (!strcmp(k, "sample-every")) return as_int(v, 0, 1 << 30, &c->sample_every, k, e);
    else if (!strcmp(k, "sample-steps")) return as_int(v, 1, 200, &c->sample_steps, k, e);
    else if (!strcmp(k, "keep-tokens")) return as_int(v, 0, 1000, &d->caption.keep_tokens, k, e);
    else if (!strcmp(k, "caption-dropout-rate")) {
        float x;
        if (as_float(v, &x, k, e)) return -1;
        d->caption.dropout_rate = x;
    } else if (!strcmp(k, "caption-tag-dropout-rate")) {
        float x;
        if (as_float(v, &x, k, e)) return -1;
        d->caption.tag_dropout_rate = x;
    } else if (!strcmp(k, "shuffle-caption")) return as_bool(v, &d->caption.shuffle, k, e);
    else if (!strcmp(k, "flip")) return as_bool(v, &d->flip, k, e);
    else if (!strcmp(k, "bucket")) return as_bool(v, &d->bucket, k, e);
    else if (!strcmp(k, "bucket-no-upscale")) return as_bool(v, &d->bucket_no_upscale, k, e);
    else if (!strcmp(k, "checkpointing")) return as_bool(v, &c->checkpointing, k, e);
    else if (!strcmp(k, "cache-latents-to-disk")) return as_bool(v, &c->cache_to_disk, k, e);
    /* kohya's cache_text_encoder_outputs_to_disk (a --config file's underscores read as dashes) */
    else if (!strcmp(k, "cache-text-embeddings-to-disk") || !strcmp(k, "cache-text-encoder-outputs-to-disk"))
        return as_bool(v, &c->cache_te_to_disk, k, e);
    else if (!strcmp(k, "train-ff")) return as_bool(v, &c->train_ff, k, e);
    else if (!strcmp(k, "train-te")) return as_bool(v, &c->train_te, k, e);
    else if (!strcmp(k, "weights")) {
        if (!strcmp(v, "f16")) c->weight_dtype = VKL_F16;
        else if (!strcmp(v, "f32")) c->weight_dtype = VKL_F32;
        else if (!strcmp(v, "nf4")) c->weight_dtype = VKL_NF4;
        else if (!strcmp(v, "nf4dq")) c->weight_dtype = VKL_NF4_DQ;
        else return vkl_fail(e, "weights: f16, f32, nf4 or nf4dq, not '%s'", v);
    } else if (!strcmp(k, "mixed-precision")) {
        if (!strcmp(v, "no")) c->mixed_precision = 0;
        else if (!strcmp(v, "fp16")) c->mixed_precision = 1;
        else return vkl_fail(e, "mixed-precision: no or fp16, not '%s' (bf16 activations are not supported)", v);
    } else return vkl_fail(e, "unknown training setting '%s'", k);
    return 0;
}

const char *vkl_train_optimizer_name(const vkl_train_config *c) { return c->optim_bits == 8 ? "adamw8bit" : "adamw"; }

/* The shortest decimal that reads back as x (0.995f, not 0.99500000476837158),
 * so the settings file shows values as they were given. */
static double as_given(float x)
{
    char buf[32];
    for (int prec = 6; prec < 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x) return strtod(buf, NULL);
    }
    return (double)x;
}

/* p made absolute: realpath when it exists, else its folder's realpath and
 * its name (an output not yet written). malloc'd. */
static char *abs_path(const char *p)
{
    char buf[PATH_MAX];
    if (realpath(p, buf)) return strdup(buf);
    const char *sl = strrchr(p, '/');
    char dir[PATH_MAX];
    if (!sl) snprintf(dir, sizeof dir, ".");
    else if (sl == p) snprintf(dir, sizeof dir, "/");
    else snprintf(dir, sizeof dir, "%.*s", (int)(sl - p), p);
    if (!realpath(dir, buf)) return strdup(p);
    size_t n = strlen(buf);
    snprintf(buf + n, sizeof buf - n, "%s%s", buf[n - 1] == '/' ? "" : "/", sl ? sl + 1 : p);
    return strdup(buf);
}

/* Absolute path target relative to absolute folder base, when it lies inside
 * it ("images/x"); NULL otherwise (the caller keeps it absolute: a folder
 * moved with its settings file keeps its own files, and outside paths stay
 * as they were). malloc'd. */
static char *rel_path(const char *target, const char *base)
{
    size_t n = strlen(base);
    if (strncmp(target, base, n) || (target[n] != '/' && target[n])) return NULL;
    const char *rest = target[n] ? target + n + 1 : target + n;
    return strdup(*rest ? rest : ".");
}

/* A path setting as written: absolute, or relative to the settings file's folder. */
static void add_path(cJSON *j, const char *key, const char *p, const char *base_dir)
{
    if (!p) return;
    char *a = abs_path(p), *r = a && base_dir && a[0] == '/' ? rel_path(a, base_dir) : NULL;
    cJSON_AddStringToObject(j, key, r ? r : a ? a : p);
    free(r);
    free(a);
}

char *vkl_train_config_json(const vkl_train_config *c, const char *json_path)
{
    cJSON *j = cJSON_CreateObject();
    const vkl_dataset_opts *d = &c->data;
    char *base = NULL;
    if (json_path) {
        char *a = abs_path(json_path), *sl = a ? strrchr(a, '/') : NULL;
        if (sl) {
            *sl = 0;
            base = a[0] ? a : strdup("/");
            if (base != a) free(a);
        } else free(a);
    }
#define S(k, v) if (v) cJSON_AddStringToObject(j, k, v)
#define P(k, v) add_path(j, k, v, base)
#define N(k, v) cJSON_AddNumberToObject(j, k, (double)(v))
#define F(k, v) cJSON_AddNumberToObject(j, k, as_given(v))
#define B(k, v) cJSON_AddBoolToObject(j, k, (v) != 0)
    P("model", c->model);
    P("images", d->images_dir);
    P("output", c->output);
    P("tokenizer", c->tokenizer);
    P("model-config", c->model_config);
    S("caption-ext", d->caption_ext);
    S("caption", d->default_caption);
    S("trigger", d->caption.trigger);
    if (c->full) {
        cJSON_AddStringToObject(j, "network", "full");
        F("ema-decay", c->ema_decay);
        cJSON_AddStringToObject(j, "save-precision", c->save_dtype == VKL_F16 ? "fp16" : "float");
    } else {
        cJSON_AddStringToObject(j, "network", c->dylora ? "dylora"
                                              : c->network_kind == VKL_LORA_KIND_LORA && c->network_conv
                                                  ? "locon"
                                                  : vkl_lora_kind_name(c->network_kind));
    }
    if (c->dylora) {
        B("network-conv", c->network_conv);
        N("dylora-unit", c->dylora_unit);
    }
    if (c->network_kind != VKL_LORA_KIND_LORA) B("network-conv", c->network_conv);
    if (c->network_kind == VKL_LORA_KIND_LOKR) N("lokr-factor", c->lokr_factor);
    N("resolution", d->resolution);
    N("rank", c->rank);
    F("alpha", c->alpha);
    F("lr", c->lr);
    if (c->te_lr >= 0) F("te-lr", c->te_lr);
    N("grad-accum", c->grad_accum);
    F("loraplus-ratio", c->loraplus_ratio);
    S("lr-schedule", c->lr_schedule);
    N("warmup", c->warmup);
    /* 0 is "not given" for these three, and not a value --config accepts */
    if (c->cycles) N("cycles", c->cycles);
    F("weight-decay", c->weight_decay);
    F("max-grad-norm", c->max_grad_norm);
    cJSON_AddStringToObject(j, "optimizer", vkl_train_optimizer_name(c));
    if (c->max_steps) N("max-steps", c->max_steps);
    if (c->epochs) N("epochs", c->epochs);
    N("batch", d->batch_size);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)d->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    F("min-snr-gamma", c->min_snr_gamma);
    F("noise-offset", c->noise_offset);
    N("clip-skip", c->clip_skip);
    N("keep-tokens", d->caption.keep_tokens);
    F("caption-dropout-rate", (float)d->caption.dropout_rate);
    F("caption-tag-dropout-rate", (float)d->caption.tag_dropout_rate);
    B("shuffle-caption", d->caption.shuffle);
    B("flip", d->flip);
    B("bucket", d->bucket);
    B("bucket-no-upscale", d->bucket_no_upscale);
    B("checkpointing", c->checkpointing);
    B("cache-latents-to-disk", c->cache_to_disk);
    B("cache-text-embeddings-to-disk", c->cache_te_to_disk);
    B("train-ff", c->train_ff);
    B("train-te", c->train_te);
    N("save-every", c->save_every);
    N("keep-last", c->keep_last);
    P("sample-prompts", c->sample_prompts);
    N("sample-every", c->sample_every);
    N("sample-steps", c->sample_steps);
    cJSON_AddStringToObject(j, "weights", c->weight_dtype == VKL_F32 ? "f32" : c->weight_dtype == VKL_NF4 ? "nf4"
                                     : c->weight_dtype == VKL_NF4_DQ ? "nf4dq" : "f16");
    cJSON_AddStringToObject(j, "mixed-precision", c->mixed_precision ? "fp16" : "no");
#undef S
#undef P
#undef N
#undef F
#undef B
    free(base);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

static int is_path_key(const char *k)
{
    static const char *const keys[] = {"model", "images", "output", "tokenizer", "sample-prompts", "resume",
                                       "model-config"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (!strcmp(k, keys[i])) return 1;
    return 0;
}

/* One setting from a file: relative paths count from the file's folder. */
static int set_from_file(vkl_train_config *c, const char *dir, const char *k, const char *v, vkl_err *e)
{
    if (!is_path_key(k) || !dir || v[0] == '/' || !v[0]) return vkl_train_config_set(c, k, v, e);
    size_t n = strlen(dir) + strlen(v) + 2;
    char *full = malloc(n);
    if (!full) return vkl_fail(e, "out of host memory");
    snprintf(full, n, "%s/%s", dir, v);
    int rc = vkl_train_config_set(c, k, full, e);
    free(full);
    return rc;
}

int vkl_train_config_read(vkl_train_config *c, const char *path, vkl_err *e)
{
    char *buf;
    if (vkl_read_text_file(path, 1 << 20, &buf, NULL, e)) return vkl_err_prefix(e, "config: "), -1;
    const char *sl = strrchr(path, '/');
    char *dir = sl ? strndup(path, (size_t)(sl - path) + (sl == path)) : NULL;
    int rc = 0;
    const char *p = buf;
    while (*p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
    if (*p == '{') {
        cJSON *j = cJSON_Parse(buf);
        if (!j || !cJSON_IsObject(j)) rc = vkl_fail(e, "%s: not a JSON object", path);
        for (cJSON *it = j ? j->child : NULL; it && !rc; it = it->next) {
            char val[64];
            const char *v = val;
            /* what a run recorded about itself, not a setting */
            if (!strcmp(it->string, "resumed-with-changes")) continue;
            if (cJSON_IsString(it)) v = it->valuestring;
            else if (cJSON_IsBool(it)) snprintf(val, sizeof val, "%s", cJSON_IsTrue(it) ? "true" : "false");
            else if (cJSON_IsNumber(it)) snprintf(val, sizeof val, "%.17g", it->valuedouble);
            else {
                rc = vkl_fail(e, "%s: %s is neither a string, a number nor true/false", path, it->string);
                break;
            }
            rc = set_from_file(c, dir, it->string, v, e);
            if (rc) vkl_err_prefix(e, "%s: ", path);
        }
        cJSON_Delete(j);
    } else {
        int lineno = 0;
        for (char *save = NULL, *ln = strtok_r(buf, "\n", &save); ln && !rc; ln = strtok_r(NULL, "\n", &save)) {
            lineno++;
            while (*ln == ' ' || *ln == '\t') ln++;
            if (!*ln || *ln == '#' || *ln == '[' || *ln == '\r') continue;
            char *eq = strchr(ln, '=');
            if (!eq) {
                rc = vkl_fail(e, "%s: line %d is not 'key = value'", path, lineno);
                break;
            }
            char *k = ln, *v = eq + 1, *ke = eq;
            while (ke > k && (ke[-1] == ' ' || ke[-1] == '\t')) ke--;
            *ke = 0;
            while (*v == ' ' || *v == '\t') v++;
            char *end = v + strlen(v);
            while (end > v && (end[-1] == ' ' || end[-1] == '\r' || end[-1] == '\t')) *--end = 0;
            if (*v == '"' && end > v + 1 && end[-1] == '"') {
                v++;
                end[-1] = 0;
            } else {
                char *hash = strchr(v, '#');
                if (hash) {
                    *hash = 0;
                    while (hash > v && (hash[-1] == ' ' || hash[-1] == '\t')) *--hash = 0;
                }
            }
            for (char *q = k; *q; q++)
                if (*q == '_') *q = '-';
            rc = set_from_file(c, dir, k, v, e);
            if (rc) vkl_err_prefix(e, "%s line %d: ", path, lineno);
        }
    }
    free(dir);
    free(buf);
    return rc;
}
