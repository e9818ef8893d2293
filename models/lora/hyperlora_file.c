/* HyperLoRA networks as safetensors files (hyperlora.h): the four
 * parameters, the condition's centre, and what rebuilds the adapters'
 * layout (targets, rank, alpha, the modules with their shapes). */
#include "lora/hyperlora_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KIND "hyperlora"

static int add_tensor(vkl_st_writer *w, vkl_ctx *c, const char *name, vkl_tensor *t, vkl_err *e)
{
    float *x = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    if (!x) return vkl_fail(e, "out of host memory");
    int rc = vkl_tensor_download(c, t, x, VKL_F32, e) || vkl_st_writer_add(w, name, VKL_F32, t->ndim, t->shape, x, e);
    free(x);
    return rc ? -1 : 0;
}

static int meta_num(vkl_st_writer *w, const char *key, double v, vkl_err *e)
{
    char s[64];
    snprintf(s, sizeof s, "%.9g", v);
    return vkl_st_writer_meta(w, key, s, e);
}

/* [[name, out, in], ...] of the template's modules (in: the down factor's row length). */
static char *modules_json(const vkl_lora *l)
{
    cJSON *a = cJSON_CreateArray();
    for (int k = 0; a && k < l->n; k++) {
        const vkl_lora_module *m = &l->m[k];
        cJSON *x = cJSON_CreateArray();
        cJSON_AddItemToArray(x, cJSON_CreateString(m->name ? m->name : m->kname));
        cJSON_AddItemToArray(x, cJSON_CreateNumber((double)m->t[VKL_LORA_UP].shape[0]));
        cJSON_AddItemToArray(x, cJSON_CreateNumber((double)m->t[VKL_LORA_DOWN].shape[1]));
        cJSON_AddItemToArray(a, x);
    }
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

int vkl_hyperlora_save(vkl_hyperlora *h, const vkl_hyperlora_meta *m, const char *extra_key, const char *extra_json,
                       const char *path, vkl_err *e)
{
    vkl_st_writer *w = vkl_st_writer_new();
    if (!w) return vkl_fail(e, "out of host memory");
    char *mods = modules_json(h->tmpl);
    int rc = mods ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; !rc && i < VKL_HYPERLORA_PARAMS; i++) rc = add_tensor(w, h->c, vkl_hyperlora_param_name(i), h->p[i], e);
    rc = rc || vkl_st_writer_add(w, "hyper.cond_mean", VKL_F32, 1, (int64_t[]){h->D}, h->mean, e) ||
         vkl_st_writer_meta(w, "vklora_kind", KIND, e) || vkl_st_writer_meta(w, "targets", m->targets, e) ||
         meta_num(w, "rank", m->rank, e) || meta_num(w, "alpha", m->alpha, e) || meta_num(w, "hidden", h->H, e) ||
         meta_num(w, "cond_dim", h->D, e) || meta_num(w, "cond_scale", h->scale, e) ||
         vkl_st_writer_meta(w, "base_model", m->base, e) || vkl_st_writer_meta(w, "modules", mods, e) ||
         (extra_key && extra_json && vkl_st_writer_meta(w, extra_key, extra_json, e)) ||
         vkl_st_writer_finish(w, path, e);
    free(mods);
    vkl_st_writer_free(w);
    return rc ? -1 : 0;
}

static int meta_int(const vkl_st_file *f, const char *key, long lo, long hi, long *v, vkl_err *e)
{
    const char *s = vkl_st_meta_get(f, key);
    char *end;
    errno = 0;
    long x = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || x < lo || x > hi)
        return vkl_fail(e, "%s: metadata %s is %s%s%s (expected an integer in [%ld, %ld])", vkl_st_path(f), key,
                        s ? "\"" : "missing", s ? s : "", s ? "\"" : "", lo, hi);
    *v = x;
    return 0;
}

static int meta_float(const vkl_st_file *f, const char *key, double *v, vkl_err *e)
{
    const char *s = vkl_st_meta_get(f, key);
    char *end;
    double x = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || !isfinite(x) || x <= 0)
        return vkl_fail(e, "%s: metadata %s is %s (expected a number > 0)", vkl_st_path(f), key, s ? s : "missing");
    *v = x;
    return 0;
}

static int read_meta(const vkl_st_file *f, vkl_hyperlora_meta *m, double *scale, vkl_err *e)
{
    memset(m, 0, sizeof *m);
    const char *kind = vkl_st_meta_get(f, "vklora_kind");
    if (!kind || strcmp(kind, KIND))
        return vkl_fail(e, "%s is not a HyperLoRA network (no vklora_kind \"" KIND "\" in its metadata)", vkl_st_path(f));
    const char *t = vkl_st_meta_get(f, "targets"), *b = vkl_st_meta_get(f, "base_model");
    if (!t || !*t || strlen(t) >= sizeof m->targets) return vkl_fail(e, "%s: metadata targets missing or too long", vkl_st_path(f));
    snprintf(m->targets, sizeof m->targets, "%s", t);
    snprintf(m->base, sizeof m->base, "%s", b ? b : "");
    long rank, hidden, dim;
    double alpha;
    if (meta_int(f, "rank", 1, 65536, &rank, e) || meta_int(f, "hidden", 1, 65536, &hidden, e) ||
        meta_int(f, "cond_dim", 1, 1 << 20, &dim, e) || meta_float(f, "alpha", &alpha, e) ||
        meta_float(f, "cond_scale", scale, e))
        return -1;
    m->rank = (int)rank;
    m->hidden = (int)hidden;
    m->cond_dim = (int)dim;
    m->alpha = (float)alpha;
    return 0;
}

int vkl_hyperlora_read_meta(const char *path, vkl_hyperlora_meta *m, vkl_err *e)
{
    vkl_st_file *f = NULL;
    if (vkl_st_open(path, &f, e)) return -1;
    double scale;
    int rc = read_meta(f, m, &scale, e);
    vkl_st_close(f);
    return rc;
}

/* The file's module list against the template's. */
static int check_modules(const vkl_st_file *f, const vkl_lora *l, vkl_err *e)
{
    const char *s = vkl_st_meta_get(f, "modules");
    cJSON *a = s ? cJSON_Parse(s) : NULL;
    int rc = 0;
    if (!cJSON_IsArray(a)) rc = vkl_fail(e, "%s: metadata modules missing or not a JSON list", vkl_st_path(f));
    else if (cJSON_GetArraySize(a) != l->n)
        rc = vkl_fail(e, "%s holds %d adapter modules but its targets make %d on this model", vkl_st_path(f),
                      cJSON_GetArraySize(a), l->n);
    for (int k = 0; !rc && k < l->n; k++) {
        const cJSON *x = cJSON_GetArrayItem(a, k);
        const cJSON *nm = cJSON_GetArrayItem(x, 0), *o = cJSON_GetArrayItem(x, 1), *in = cJSON_GetArrayItem(x, 2);
        const vkl_lora_module *m = &l->m[k];
        const char *want = m->name ? m->name : m->kname;
        if (!cJSON_IsString(nm) || !cJSON_IsNumber(o) || !cJSON_IsNumber(in))
            rc = vkl_fail(e, "%s: metadata modules entry %d is not [name, out, in]", vkl_st_path(f), k);
        else if (strcmp(nm->valuestring, want))
            rc = vkl_fail(e, "%s: module %d is %s, this model's is %s", vkl_st_path(f), k, nm->valuestring, want);
        else if ((int64_t)o->valuedouble != m->t[VKL_LORA_UP].shape[0] ||
                 (int64_t)in->valuedouble != m->t[VKL_LORA_DOWN].shape[1])
            rc = vkl_fail(e, "%s: module %s is %lld x %lld there but %lld x %lld on this model (another model?)",
                          vkl_st_path(f), want, (long long)o->valuedouble, (long long)in->valuedouble,
                          (long long)m->t[VKL_LORA_UP].shape[0], (long long)m->t[VKL_LORA_DOWN].shape[1]);
    }
    cJSON_Delete(a);
    return rc;
}

static int read_param(const vkl_st_file *f, vkl_ctx *c, const char *name, vkl_tensor *t, vkl_err *e)
{
    const vkl_st_tensor *st = vkl_st_find(f, name);
    if (!st) return vkl_fail(e, "%s has no tensor %s", vkl_st_path(f), name);
    int same = st->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = st->shape[d] == t->shape[d];
    if (!same) {
        char want[64];
        vkl_tensor_describe(t, want, sizeof want);
        return vkl_fail(e, "%s: tensor %s is not shaped %s", vkl_st_path(f), name, want);
    }
    uint64_t n = (uint64_t)vkl_tensor_nelem(t);
    float *x = malloc(sizeof(float) * n);
    if (!x) return vkl_fail(e, "out of host memory");
    int rc = vkl_st_read_f32(f, name, x, n, e);
    for (uint64_t i = 0; !rc && i < n; i++)
        if (!isfinite(x[i])) rc = vkl_fail(e, "%s: tensor %s holds a value that is not finite", vkl_st_path(f), name);
    rc = rc || vkl_tensor_upload(c, t, x, VKL_F32, e);
    free(x);
    return rc ? -1 : 0;
}

int vkl_hyperlora_load(vkl_ctx *c, const char *path, const vkl_lora *tmpl, vkl_hyperlora **out, vkl_err *e)
{
    *out = NULL;
    vkl_st_file *f = NULL;
    if (vkl_st_open(path, &f, e)) return -1;
    vkl_hyperlora_meta m;
    double scale;
    vkl_hyperlora *h = NULL;
    int rc = read_meta(f, &m, &scale, e) || check_modules(f, tmpl, e) ||
             vkl_hyperlora_alloc(c, tmpl, m.cond_dim, m.hidden, &h, e);
    for (int i = 0; !rc && i < VKL_HYPERLORA_PARAMS; i++) rc = read_param(f, c, vkl_hyperlora_param_name(i), h->p[i], e);
    if (!rc) {
        const vkl_st_tensor *st = vkl_st_find(f, "hyper.cond_mean");
        if (!st || st->ndim != 1 || st->shape[0] != h->D)
            rc = vkl_fail(e, "%s: tensor hyper.cond_mean missing or not [%d]", path, h->D);
        else rc = vkl_st_read_f32(f, "hyper.cond_mean", h->mean, (uint64_t)h->D, e) ||
                  vkl_hyperlora_set_centre(h, h->mean, (float)scale, e);
    }
    vkl_st_close(f);
    if (rc) {
        vkl_hyperlora_free(h);
        return -1;
    }
    *out = h;
    return 0;
}
