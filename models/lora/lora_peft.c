/* diffusers and PEFT keys, adapter_config.json, and the PEFT writer.
 *   PEFT:      <module>.lora_A.weight, .lora_B.weight, .lora_magnitude_vector,
 *              <module>.ia3_l (IA3; lora_ia3.c has its config)
 *   diffusers: <module>.lora.down.weight / .lora.up.weight (UNet),
 *              <module>.lora_linear_layer.down.weight / .up.weight (text encoder),
 *              <attn>.processor.to_q_lora.down.weight (attention processors)
 * Roots: unet., text_encoder., text_encoder_2. kept; base_model.model. (PEFT
 * save_pretrained) dropped; bare UNet paths get unet. */
#include "lora/lora_file.h"
#include "io/text.h"
#include "io/dir.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static size_t strip(const char *key, const char *suffix)
{
    size_t n = strlen(key), m = strlen(suffix);
    return n > m && !strcmp(key + n - m, suffix) ? n - m : 0;
}

size_t vkl_lora_peft_part(const char *key, int *role, vkl_lora_format *fmt)
{
    static const struct {
        const char *suffix;
        int role;
        vkl_lora_format fmt;
    } tab[] = {
        {".lora_A.weight", VKL_LORA_DOWN, VKL_LORA_FMT_PEFT},
        {".lora_B.weight", VKL_LORA_UP, VKL_LORA_FMT_PEFT},
        {".lora_A.default.weight", VKL_LORA_DOWN, VKL_LORA_FMT_PEFT},
        {".lora_B.default.weight", VKL_LORA_UP, VKL_LORA_FMT_PEFT},
        {".lora_magnitude_vector.weight", VKL_LORA_MAG, VKL_LORA_FMT_PEFT},
        {".lora_magnitude_vector", VKL_LORA_MAG, VKL_LORA_FMT_PEFT},
        {".ia3_l", VKL_LORA_IA3, VKL_LORA_FMT_PEFT},
        {".ia3_l.default", VKL_LORA_IA3, VKL_LORA_FMT_PEFT},
        {".lora.down.weight", VKL_LORA_DOWN, VKL_LORA_FMT_DIFFUSERS},
        {".lora.up.weight", VKL_LORA_UP, VKL_LORA_FMT_DIFFUSERS},
        {".lora_linear_layer.down.weight", VKL_LORA_DOWN, VKL_LORA_FMT_DIFFUSERS},
        {".lora_linear_layer.up.weight", VKL_LORA_UP, VKL_LORA_FMT_DIFFUSERS},
        {"_lora.down.weight", VKL_LORA_DOWN, VKL_LORA_FMT_DIFFUSERS},
        {"_lora.up.weight", VKL_LORA_UP, VKL_LORA_FMT_DIFFUSERS},
        {".alpha", -1, VKL_LORA_FMT_DIFFUSERS},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        size_t n = strip(key, tab[i].suffix);
        if (n) {
            *role = tab[i].role;
            *fmt = tab[i].fmt;
            return n;
        }
    }
    return 0;
}

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

int vkl_lora_peft_module_name(const char *prefix, char *out, size_t size)
{
    const char *s = prefix;
    if (starts(s, "base_model.model.")) s += strlen("base_model.model.");
    static const char *unet_roots[] = {"down_blocks.", "mid_block.", "up_blocks.", "conv_in", "conv_out",
                                       "time_embedding.", "add_embedding.", "conv_norm_out"};
    const char *root = "";
    for (size_t i = 0; i < sizeof unet_roots / sizeof *unet_roots; i++)
        if (starts(s, unet_roots[i])) root = "unet.";
    int k = snprintf(out, size, "%s%s", root, s);
    if (k < 0 || (size_t)k >= size) return -1;
    /* attention processors: attn1.processor.to_q_lora -> attn1.to_q, to_out_lora -> to_out.0 */
    char *p = strstr(out, ".processor.");
    if (p) {
        memmove(p, p + strlen(".processor"), strlen(p + strlen(".processor")) + 1);
        size_t n = strlen(out);
        if (n >= 6 && !strcmp(out + n - 6, "to_out")) {
            if (n + 3 > size) return -1;
            strcat(out, ".0");
        }
    }
    return 0;
}

/* PEFT's pattern keys name a module by a dotted suffix of its path. */
static const cJSON *pattern(const cJSON *pat, const char *name)
{
    const cJSON *it, *best = NULL;
    size_t bl = 0, n = strlen(name);
    cJSON_ArrayForEach(it, pat)
    {
        size_t k = strlen(it->string);
        if (k > n || strcmp(name + n - k, it->string)) continue;
        if (k < n && name[n - k - 1] != '.') continue;
        if (k > bl) best = it, bl = k;
    }
    return best;
}

int vkl_lora_peft_apply_config(vkl_lora *l, const char *path, vkl_err *e)
{
    cJSON *j = vkl_read_json_object(path, 1 << 20, e);
    if (!j) return -1;
    int rc = 0;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "r");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(j, "rank_pattern");
    const cJSON *ap = cJSON_GetObjectItemCaseSensitive(j, "alpha_pattern");
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(j, "peft_type");
    if (pt && cJSON_IsString(pt) && !strcmp(pt->valuestring, "IA3")) {
        rc = vkl_lora_ia3_apply_config(l, j, path, e);
        goto done;
    }
    if (pt && cJSON_IsString(pt) && strcmp(pt->valuestring, "LORA")) {
        rc = vkl_fail(e, "%s: peft_type %s (only LORA and IA3 adapters are read)", path, pt->valuestring);
        goto done;
    }
    for (int i = 0; i < l->n; i++)
        if (l->m[i].kind == VKL_LORA_KIND_IA3) {
            rc = vkl_fail(e, "%s: module %s has an IA3 vector but the config's peft_type is not IA3", path,
                          l->m[i].name);
            goto done;
        }
    if (!cJSON_IsNumber(r) || !cJSON_IsNumber(a) || r->valuedouble < 1) {
        rc = vkl_fail(e, "%s: needs numbers r (>= 1) and lora_alpha", path);
        goto done;
    }
    l->rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_rslora"));
    l->has_config = 1;
    for (int i = 0; i < l->n; i++) {
        vkl_lora_module *m = &l->m[i];
        const cJSON *x = cJSON_IsObject(rp) ? pattern(rp, m->name) : NULL;
        const cJSON *y = cJSON_IsObject(ap) ? pattern(ap, m->name) : NULL;
        double rank = x && cJSON_IsNumber(x) ? x->valuedouble : r->valuedouble;
        double alpha = y && cJSON_IsNumber(y) ? y->valuedouble : a->valuedouble;
        if ((int)rank != m->rank) {
            rc = vkl_fail(e, "%s: rank %g for %s but its tensors have rank %d", path, rank, m->name, m->rank);
            goto done;
        }
        m->alpha = (float)alpha;
        m->has_alpha = 1;
        /* a kohya copy stores alpha in the dtype of the factors, as kohya saves */
        m->alpha_dtype = m->t[VKL_LORA_DOWN].data ? m->t[VKL_LORA_DOWN].dtype : VKL_F32;
        m->scale = l->rslora ? alpha / sqrt(rank) : alpha / rank;
    }
done:
    cJSON_Delete(j);
    return rc;
}

/* ---- writer ---- */

static int write_text_atomic(const char *path, const char *text, vkl_err *e)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= sizeof tmp)
        return vkl_fail(e, "%s: path too long", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return vkl_fail(e, "%s: cannot create a temporary file", path);
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t k = write(fd, text + off, n - off);
        if (k <= 0) break;
        off += (size_t)k;
    }
    /* mkstemp creates 0600; a config is as readable as any other file */
    int ok = off == n && fchmod(fd, 0644) == 0 && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || vkl_rename_durable(tmp, path) != 0) {
        unlink(tmp);
        return vkl_fail(e, "%s: write failed", path);
    }
    return 0;
}

static const char *strip_root(const char *n)
{
    static const char *roots[] = {"unet.", "text_encoder.", "text_encoder_2."};
    for (size_t i = 0; i < 3; i++)
        if (starts(n, roots[i])) return n + strlen(roots[i]);
    return n;
}

static double peft_alpha(const vkl_lora *l, const vkl_lora_module *m)
{
    if (l->rslora || m->has_alpha) return m->alpha;
    return m->scale * m->rank;
}

static char *config_json(const vkl_lora *l, vkl_err *e)
{
    /* r and lora_alpha: the most common pair; the rest go to the patterns */
    int best = 0, bestc = -1, dora = 0;
    for (int i = 0; i < l->n; i++) {
        int c = 0;
        for (int k = 0; k < l->n; k++)
            c += l->m[k].rank == l->m[i].rank && peft_alpha(l, &l->m[k]) == peft_alpha(l, &l->m[i]);
        if (c > bestc) best = i, bestc = c;
        dora |= l->m[i].kind == VKL_LORA_KIND_DORA;
    }
    int r = l->m[best].rank;
    double a = peft_alpha(l, &l->m[best]);
    cJSON *j = cJSON_CreateObject(), *rp = cJSON_CreateObject(), *ap = cJSON_CreateObject(),
          *tm = cJSON_CreateArray();
    for (int i = 0; i < l->n; i++) {
        const char *s = strip_root(l->m[i].name);
        if (l->m[i].rank != r && !cJSON_GetObjectItemCaseSensitive(rp, s)) cJSON_AddNumberToObject(rp, s, l->m[i].rank);
        if (peft_alpha(l, &l->m[i]) != a && !cJSON_GetObjectItemCaseSensitive(ap, s))
            cJSON_AddNumberToObject(ap, s, peft_alpha(l, &l->m[i]));
        int seen = 0;
        for (int k = 0; k < i && !seen; k++) seen = !strcmp(strip_root(l->m[k].name), s);
        if (!seen) cJSON_AddItemToArray(tm, cJSON_CreateString(s));
    }
    cJSON_AddStringToObject(j, "peft_type", "LORA");
    cJSON_AddNumberToObject(j, "r", r);
    cJSON_AddNumberToObject(j, "lora_alpha", a);
    cJSON_AddItemToObject(j, "rank_pattern", rp);
    cJSON_AddItemToObject(j, "alpha_pattern", ap);
    cJSON_AddItemToObject(j, "target_modules", tm);
    cJSON_AddBoolToObject(j, "use_dora", dora);
    cJSON_AddBoolToObject(j, "use_rslora", l->rslora);
    cJSON_AddStringToObject(j, "bias", "none");
    cJSON_AddNumberToObject(j, "lora_dropout", 0);
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s) vkl_fail(e, "out of memory");
    return s;
}

static int check_module(const vkl_lora_module *m, vkl_err *e)
{
    const char *n = vkl_lora_module_label(m);
    if (!m->name)
        return vkl_fail(e, "%s: kohya name without its model path; give the model (--model) to resolve it", n);
    if (m->kind != VKL_LORA_KIND_LORA && m->kind != VKL_LORA_KIND_DORA)
        return vkl_fail(e, "%s: %s modules have no PEFT LoRA form (write kohya/LyCORIS instead)", n,
                        vkl_lora_kind_name(m->kind));
    if (m->t[VKL_LORA_MID].data) return vkl_fail(e, "%s: Tucker LoCon (lora_mid) has no PEFT LoRA form", n);
    const vkl_lora_tensor *g = &m->t[VKL_LORA_MAG];
    if (g->data && g->ndim > 1 && g->shape[0] != m->wshape[0])
        return vkl_fail(e, "%s: input-axis DoRA magnitude; PEFT only has the output-axis form", n);
    return 0;
}

int vkl_lora_save_peft(const vkl_lora *l, const char *path, const char *config_path, vkl_err *e)
{
    if (!l->n) return vkl_fail(e, "%s: adapter has no modules", path);
    int ia3 = 0;
    for (int i = 0; i < l->n; i++) ia3 += l->m[i].kind == VKL_LORA_KIND_IA3;
    if (ia3 && ia3 != l->n)
        return vkl_fail(e, "%s: IA3 modules cannot be written together with other kinds in one PEFT adapter", path);
    for (int i = 0; i < l->n; i++)
        if (ia3 ? vkl_lora_ia3_check(&l->m[i], e) : check_module(&l->m[i], e)) return -1;
    vkl_st_writer *w = vkl_st_writer_new();
    if (!w) return vkl_fail(e, "out of memory");
    int rc = 0;
    for (int i = 0; i < l->n && !rc; i++) {
        const vkl_lora_module *m = &l->m[i];
        char key[1024];
        const char *root = starts(m->name, "unet.") || starts(m->name, "text_encoder") ? "" : "base_model.model.";
        static const struct {
            int role;
            const char *suffix;
        } parts[] = {{VKL_LORA_DOWN, "lora_A.weight"}, {VKL_LORA_UP, "lora_B.weight"},
                     {VKL_LORA_MAG, "lora_magnitude_vector"}, {VKL_LORA_IA3, "ia3_l"}};
        for (size_t k = 0; k < 4 && !rc; k++) {
            const vkl_lora_tensor *t = &m->t[parts[k].role];
            if (!t->data) continue;
            if ((size_t)snprintf(key, sizeof key, "%s%s.%s", root, m->name, parts[k].suffix) >= sizeof key) {
                rc = vkl_fail(e, "key too long: %s", m->name);
                break;
            }
            int64_t n1 = (int64_t)vkl_lora_tensor_nelem(t);
            rc = parts[k].role == VKL_LORA_MAG ? vkl_lora_tensor_write(w, key, t, 1, &n1, e) : vkl_lora_tensor_write(w, key, t, t->ndim, t->shape, e);
        }
    }
    int has_format = 0;
    for (int i = 0; i < l->n_meta && !rc; i++) {
        has_format |= !strcmp(l->meta_key[i], "format");
        rc = vkl_st_writer_meta(w, l->meta_key[i], l->meta_val[i], e);
    }
    if (!rc && !has_format) rc = vkl_st_writer_meta(w, "format", "pt", e);
    char *cfg = rc ? NULL : ia3 ? vkl_lora_ia3_config_json(l, e) : config_json(l, e);
    if (!rc && !cfg) rc = -1;
    if (!rc) rc = vkl_st_writer_finish(w, path, e);
    if (!rc) rc = write_text_atomic(config_path, cfg, e);
    free(cfg);
    vkl_st_writer_free(w);
    return rc;
}
