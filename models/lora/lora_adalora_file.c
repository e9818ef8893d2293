/* PEFT AdaLoRA adapter files (lora_adalora.h): the writer of what `lm train
 * --network adalora` trains, and a reader that turns an AdaLoRA adapter into
 * plain LoRA modules (down = A * E, up = B, scale = scaling / (init_r +
 * 1e-5)), so every LoRA path (run-time application, merging, conversion)
 * takes it unchanged. */
#include "lora/lora_adalora.h"
#include "io/text.h"

#include "io/dir.h"
#include "sd/sd_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PART[3] = {"lora_A", "lora_E", "lora_B"};

/* ---- writer ---- */

/* A float option as the decimal it was given in (0.85, not 0.850000023841858). */
static double shortest(float x)
{
    char b[32];
    snprintf(b, sizeof b, "%.7g", x);
    return strtod(b, NULL);
}

static int kept_count(const vkl_adalora_module *m)
{
    int k = 0;
    for (int q = 0; q < m->r; q++) k += !m->keep || m->keep[q];
    return k;
}

/* The kept rows of A and E, the kept columns of B (PEFT's resize_state_dict_by_rank_pattern). */
static int add_module(vkl_st_writer *w, const vkl_adalora_module *m, vkl_err *e)
{
    int k = kept_count(m);
    size_t na = (size_t)k * m->in, nb = (size_t)m->out * k;
    float *a = malloc(sizeof(float) * (na + 1)), *ev = malloc(sizeof(float) * ((size_t)k + 1)),
          *b = malloc(sizeof(float) * (nb + 1));
    int rc = a && ev && b ? 0 : vkl_fail(e, "out of host memory");
    for (int q = 0, j = 0; !rc && q < m->r; q++) {
        if (m->keep && !m->keep[q]) continue;
        memcpy(a + (size_t)j * m->in, m->a + (size_t)q * m->in, sizeof(float) * (size_t)m->in);
        ev[j] = m->e[q];
        for (int o = 0; o < m->out; o++) b[(size_t)o * k + j] = m->b[(size_t)o * m->r + q];
        j++;
    }
    const float *data[3] = {a, ev, b};
    int64_t shapes[3][2] = {{k, m->in}, {k, 1}, {m->out, k}};
    for (int p = 0; p < 3 && !rc; p++) {
        char key[640];
        if ((size_t)snprintf(key, sizeof key, "base_model.model.%s.%s", m->name, PART[p]) >= sizeof key)
            rc = vkl_fail(e, "module name too long: %s", m->name);
        else
            rc = vkl_st_writer_add(w, key, VKL_F32, 2, shapes[p], data[p], e);
    }
    free(a);
    free(ev);
    free(b);
    return rc;
}

static char *config_json(const vkl_adalora_module *m, int n, const vkl_adalora_config *c, int have_pattern,
                         const char *const *targets, int nt, const char *base)
{
    cJSON *j = cJSON_CreateObject(), *tm = cJSON_CreateArray();
    if (!j || !tm) {
        cJSON_Delete(j);
        cJSON_Delete(tm);
        return NULL;
    }
    for (int i = 0; i < nt; i++) cJSON_AddItemToArray(tm, cJSON_CreateString(targets[i]));
    cJSON_AddStringToObject(j, "peft_type", "ADALORA");
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    if (base) cJSON_AddStringToObject(j, "base_model_name_or_path", base);
    else cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddItemToObject(j, "target_modules", tm);
    cJSON_AddNumberToObject(j, "r", 8); /* LoraConfig's default; AdaLoRA ignores it */
    cJSON_AddNumberToObject(j, "lora_alpha", shortest(c->lora_alpha));
    cJSON_AddNumberToObject(j, "lora_dropout", 0);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(j, "init_lora_weights", 1);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    cJSON_AddBoolToObject(j, "use_rslora", 0);
    cJSON_AddBoolToObject(j, "use_dora", 0);
    cJSON_AddNumberToObject(j, "init_r", c->init_r);
    cJSON_AddNumberToObject(j, "target_r", c->target_r);
    cJSON_AddNumberToObject(j, "tinit", c->tinit);
    cJSON_AddNumberToObject(j, "tfinal", c->tfinal);
    cJSON_AddNumberToObject(j, "deltaT", c->delta_t);
    cJSON_AddNumberToObject(j, "beta1", shortest(c->beta1));
    cJSON_AddNumberToObject(j, "beta2", shortest(c->beta2));
    cJSON_AddNumberToObject(j, "orth_reg_weight", shortest(c->orth_reg_weight));
    cJSON_AddNumberToObject(j, "total_step", c->total_step);
    if (have_pattern) {
        cJSON *rp = cJSON_CreateObject();
        for (int i = 0; rp && i < n; i++) {
            char key[640];
            snprintf(key, sizeof key, "%s.lora_E", m[i].name);
            cJSON *v = cJSON_CreateArray();
            for (int q = 0; v && q < m[i].r; q++) cJSON_AddItemToArray(v, cJSON_CreateBool(!m[i].keep || m[i].keep[q]));
            cJSON_AddItemToObject(rp, key, v);
        }
        cJSON_AddItemToObject(j, "rank_pattern", rp);
    } else {
        cJSON_AddNullToObject(j, "rank_pattern");
    }
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

int vkl_adalora_save_peft(const vkl_adalora_module *m, int n, const vkl_adalora_config *c, int have_pattern,
                          const char *const *targets, int nt, const char *base, const char *st_path,
                          const char *config_path, vkl_err *e)
{
    if (n < 1) return vkl_fail(e, "%s: adapter has no modules", st_path);
    for (int i = 0; i < n; i++)
        if (!m[i].name || m[i].r != c->init_r || m[i].in < 1 || m[i].out < 1 || !m[i].a || !m[i].e || !m[i].b)
            return vkl_fail(e, "%s: AdaLoRA module %d (%s) is incomplete or not of rank init_r %d", st_path, i,
                            m[i].name ? m[i].name : "?", c->init_r);
    vkl_st_writer *w = vkl_st_writer_new();
    if (!w) return vkl_fail(e, "out of host memory");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) rc = add_module(w, &m[i], e);
    if (!rc) rc = vkl_st_writer_meta(w, "format", "pt", e);
    char *cfg = rc ? NULL : config_json(m, n, c, have_pattern, targets, nt, base);
    if (!rc && !cfg) rc = vkl_fail(e, "out of host memory");
    if (!rc) rc = vkl_st_writer_finish(w, st_path, e);
    if (!rc) rc = vkl_write_text_atomic(config_path, cfg, e);
    free(cfg);
    vkl_st_writer_free(w);
    return rc;
}

/* ---- reader ---- */

int vkl_adalora_config_file_is(const char *path)
{
    vkl_err e = {{0}};
    cJSON *j = vkl_read_json_object(path, 1 << 24, &e);
    const cJSON *pt = j ? cJSON_GetObjectItemCaseSensitive(j, "peft_type") : NULL;
    int is = cJSON_IsString(pt) && !strcmp(pt->valuestring, "ADALORA");
    cJSON_Delete(j);
    return is;
}

/* The part of a key (0 A, 1 E, 2 B) and its prefix length, or -1. */
static int part_of(const char *key, size_t *plen)
{
    size_t n = strlen(key);
    for (int p = 0; p < 3; p++) {
        size_t m = strlen(PART[p]);
        if (n > m + 1 && key[n - m - 1] == '.' && !strcmp(key + n - m, PART[p])) {
            *plen = n - m - 1;
            return p;
        }
    }
    return -1;
}

typedef struct group {
    char prefix[512];
    const vkl_st_tensor *t[3];
} group;

/* One module: checks the shapes of A [k, in], E [k, 1] (or [k]) and B [out,
 * k], keeps the ranks the pattern keeps, folds E into A. */
static int build(const vkl_st_file *f, const group *g, const cJSON *pattern, int init_r, float scale,
                 const vkl_lora_opts *o, vkl_lora *l, int *unmatched, vkl_err *e)
{
    const vkl_st_tensor *A = g->t[0], *E = g->t[1], *B = g->t[2];
    *unmatched = 0;
    for (int p = 0; p < 3; p++) {
        if (!g->t[p]) return vkl_fail(e, "module %s has no %s tensor", g->prefix, PART[p]);
        vkl_dtype dt = g->t[p]->dtype;
        if (dt != VKL_F32 && dt != VKL_F16 && dt != VKL_BF16 && dt != VKL_F64)
            return vkl_fail(e, "tensor %s: dtype %s, expected f32, f16 or bf16", g->t[p]->name, vkl_dtype_name(dt));
    }
    int64_t k = A->ndim == 2 ? A->shape[0] : -1, in = A->ndim == 2 ? A->shape[1] : -1;
    int64_t out = B->ndim == 2 ? B->shape[0] : -1;
    int e_ok = (E->ndim == 2 && E->shape[1] == 1 && E->shape[0] == k) || (E->ndim == 1 && E->shape[0] == k);
    if (k < 0 || in < 1 || out < 1 || B->shape[1] != k || !e_ok)
        return vkl_fail(e, "module %s: lora_A %lld x %lld, lora_E and lora_B do not form [r, in], [r, 1], [out, r]",
                        g->prefix, (long long)(A->ndim ? A->shape[0] : 0), (long long)(A->ndim > 1 ? A->shape[1] : 0));
    char name[512];
    if (vkl_lora_peft_module_name(g->prefix, name, sizeof name)) return vkl_fail(e, "key too long: %s", g->prefix);
    /* rank_pattern names the E parameter as the adapted model's named_parameters
     * do: the key's path without PEFT's base_model.model. root, + ".lora_E" */
    const char *path = g->prefix;
    if (!strncmp(path, "base_model.model.", 17)) path += 17;
    char pkey[600];
    snprintf(pkey, sizeof pkey, "%s.lora_E", path);
    const cJSON *pat = pattern ? cJSON_GetObjectItemCaseSensitive(pattern, pkey) : NULL;
    if (pattern && cJSON_IsObject(pattern) && !pat)
        return vkl_fail(e, "module %s: rank_pattern has no entry %s", g->prefix, pkey);
    unsigned char keep[4096];
    int kept = (int)k;
    if (k > 4096) return vkl_fail(e, "module %s: rank %lld above 4096", g->prefix, (long long)k);
    memset(keep, 1, sizeof keep);
    if (pat) {
        if (!cJSON_IsArray(pat) || cJSON_GetArraySize(pat) != init_r)
            return vkl_fail(e, "rank_pattern %s: expected a list of init_r = %d booleans", pkey, init_r);
        kept = 0;
        for (int q = 0; q < init_r; q++) {
            const cJSON *x = cJSON_GetArrayItem(pat, q);
            if (!cJSON_IsBool(x) && !cJSON_IsNumber(x))
                return vkl_fail(e, "rank_pattern %s: entry %d is not a boolean", pkey, q);
            keep[q] = cJSON_IsTrue(x) || (cJSON_IsNumber(x) && x->valuedouble != 0);
            kept += keep[q];
        }
        /* PEFT saves the kept ranks only; a file still holding all init_r drops the others here */
        if (k == kept) memset(keep, 1, sizeof keep);
        else if (k != init_r)
            return vkl_fail(e, "module %s has rank %lld but rank_pattern keeps %d of init_r %d", g->prefix, (long long)k,
                            kept, init_r);
    } else if (k > init_r) {
        return vkl_fail(e, "module %s has rank %lld, more than init_r %d", g->prefix, (long long)k, init_r);
    }
    if (!kept) return 0; /* every rank dropped: the module changes nothing */
    const vkl_lora_targets *tg = o ? o->targets : NULL;
    int ti = tg ? vkl_lora_targets_find(tg, name) : -1;
    if (tg && ti < 0) return *unmatched = 1, 0;
    float *a = malloc(sizeof(float) * (size_t)(k * in)), *ev = malloc(sizeof(float) * (size_t)k),
          *b = malloc(sizeof(float) * (size_t)(out * k));
    int rc = a && ev && b ? 0 : vkl_fail(e, "out of host memory");
    rc = rc || vkl_st_read(f, A, VKL_F32, a, e) || vkl_st_read(f, E, VKL_F32, ev, e) || vkl_st_read(f, B, VKL_F32, b, e);
    vkl_lora_module *m = rc ? NULL : vkl_lora_add_module(l, e);
    if (!rc && !m) rc = -1;
    if (!rc) {
        m->name = strdup(name);
        m->source = strdup(g->prefix);
        m->kname = malloc(strlen(name) + 16);
        if (!m->name || !m->source || !m->kname) rc = vkl_fail(e, "out of host memory");
        else if (vkl_lora_kohya_name(name, 0, m->kname, strlen(name) + 16)) rc = vkl_fail(e, "module name too long: %s", name);
    }
    float *down = rc ? NULL : vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], 2, (int64_t[]){kept, in}, e);
    float *up = down ? vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], 2, (int64_t[]){out, kept}, e) : NULL;
    if (!rc && !up) rc = -1;
    for (int64_t q = 0, j = 0; !rc && q < k; q++) {
        if (!keep[q]) continue;
        for (int64_t i = 0; i < in; i++) down[j * in + i] = a[q * in + i] * ev[q];
        for (int64_t i = 0; i < out; i++) up[i * kept + j] = b[i * k + q];
        j++;
    }
    if (!rc) {
        m->t[VKL_LORA_DOWN].dtype = A->dtype == VKL_F64 ? VKL_F32 : A->dtype;
        m->t[VKL_LORA_UP].dtype = B->dtype == VKL_F64 ? VKL_F32 : B->dtype;
        /* alpha / rank = the AdaLoRA scale, for writers that store alpha */
        m->alpha = (float)((double)scale * kept);
        m->has_alpha = 1;
        rc = vkl_lora_module_finish(m, ti >= 0 ? &tg->v[ti] : NULL, e);
        m->scale = scale;
    }
    free(a);
    free(ev);
    free(b);
    return rc;
}

static int load_tensors(const vkl_st_file *f, const cJSON *pattern, int init_r, float scale, const vkl_lora_opts *o,
                        vkl_lora *l, vkl_err *e)
{
    int n = vkl_st_count(f), ng = 0, nbad = 0, rc = 0;
    group *g = calloc((size_t)(n ? n : 1), sizeof *g);
    if (!g) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < n && !rc; i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        size_t plen = 0;
        int p = part_of(t->name, &plen);
        if (p < 0) {
            rc = vkl_fail(e, "key %s is not an AdaLoRA tensor (<module>.lora_A, .lora_E or .lora_B)", t->name);
            break;
        }
        if (plen >= sizeof g->prefix) {
            rc = vkl_fail(e, "key too long: %.80s...", t->name);
            break;
        }
        int k = 0;
        while (k < ng && (strlen(g[k].prefix) != plen || strncmp(g[k].prefix, t->name, plen))) k++;
        if (k == ng) {
            memcpy(g[ng].prefix, t->name, plen);
            g[ng++].prefix[plen] = 0;
        }
        if (g[k].t[p]) rc = vkl_fail(e, "module %s has two %s tensors", g[k].prefix, PART[p]);
        g[k].t[p] = t;
    }
    if (!rc && !ng) rc = vkl_fail(e, "no adapter tensors");
    for (int i = 0; i < ng && !rc; i++) {
        int um = 0;
        rc = build(f, &g[i], pattern, init_r, scale, o, l, &um, e);
        nbad += um;
    }
    if (!rc && nbad) {
        if (!o->allow_unmatched)
            rc = vkl_fail(e, "%d module%s no weight of the %s model", nbad, nbad > 1 ? "s match" : " matches",
                          o->targets->model_kind);
        else
            l->n_unmatched = nbad;
    }
    free(g);
    return rc;
}

int vkl_adalora_load(const char *path, const char *config_path, const vkl_lora_opts *opts, vkl_lora *out, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    cJSON *j = vkl_read_json_object(config_path, 1 << 24, e);
    if (!j) return -1;
    vkl_adalora_config c;
    vkl_adalora_config_default(&c);
    const cJSON *ir = cJSON_GetObjectItemCaseSensitive(j, "init_r");
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rank_pattern");
    int rc = 0;
    if (ir && (!cJSON_IsNumber(ir) || ir->valuedouble < 1 || ir->valuedouble > 4096 || ir->valuedouble != floor(ir->valuedouble)))
        rc = vkl_fail(e, "%s: init_r must be an integer from 1 to 4096", config_path);
    else if (al && (!cJSON_IsNumber(al) || !isfinite(al->valuedouble) || al->valuedouble < 0))
        rc = vkl_fail(e, "%s: lora_alpha must be a non-negative number", config_path);
    else if (rp && !cJSON_IsNull(rp) && !cJSON_IsObject(rp))
        rc = vkl_fail(e, "%s: rank_pattern must be null or an object", config_path);
    if (!rc) {
        if (ir) c.init_r = (int)ir->valuedouble;
        if (al) c.lora_alpha = (float)al->valuedouble;
        vkl_st_file *f = NULL;
        rc = vkl_st_open(path, &f, e);
        if (!rc) {
            rc = load_tensors(f, cJSON_IsObject(rp) ? rp : NULL, c.init_r, vkl_adalora_scale(&c), opts, out, e);
            for (int i = 0; !rc && i < vkl_st_meta_count(f); i++)
                rc = vkl_lora_meta_set(out, vkl_st_meta_key(f, i), vkl_st_meta_value(f, i), e);
            if (rc) vkl_err_prefix(e, "%s: ", path);
            vkl_st_close(f);
        }
    }
    cJSON_Delete(j);
    if (!rc && !out->n) rc = vkl_fail(e, "%s: every rank of the AdaLoRA adapter was dropped; it changes nothing", path);
    if (rc) {
        vkl_lora_free(out);
        return -1;
    }
    out->format = VKL_LORA_FMT_PEFT;
    out->has_config = 1;
    return 0;
}
