/* (IA)^3 in PEFT's files (peft/tuners/ia3): the checks of adapter_config.json
 * against the vectors read, and the config written for an all-IA3 adapter.
 *
 * PEFT's rules, applied to the module path relative to the base model
 * (`model.layers.0.mlp.down_proj`; vklora's unet./text_encoder. roots dropped):
 *   target_modules: a list matches a path equal to an entry or ending in
 *     "." + entry; a string is a regex that must match the whole path;
 *     "all-linear" matches every linear layer.
 *   feedforward_modules: a list matches a path that ends with an entry (a
 *     plain suffix, no dot needed); a string is a regex on the whole path.
 *     As lists, feedforward_modules must be a subset of target_modules.
 * A feed-forward module's vector is [1,in] and scales the input; the others'
 * are [out,1] and scale the output, so the shapes already tell which is
 * which: the config must agree with them. Python regexes are run as POSIX
 * extended ones after rewriting the common Python-only spellings ((?:...),
 * \d, \D); a pattern that still does not compile is an error naming it. */
#include "lora/lora_file.h"

#include <cjson/cJSON.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *strip_root(const char *n)
{
    static const char *roots[] = {"unet.", "text_encoder.", "text_encoder_2."};
    for (size_t i = 0; i < sizeof roots / sizeof *roots; i++)
        if (!strncmp(n, roots[i], strlen(roots[i]))) return n + strlen(roots[i]);
    return n;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return k <= n && !strcmp(s + n - k, suffix);
}

/* Whole-string match of a Python regex; -1 when it cannot be compiled. */
static int full_match(const char *pattern, const char *s)
{
    size_t n = strlen(pattern);
    char *ere = malloc(4 * n + 8);
    if (!ere) return -1;
    size_t k = 0;
    ere[k++] = '^';
    ere[k++] = '(';
    for (size_t i = 0; i < n; i++) {
        if (pattern[i] == '(' && pattern[i + 1] == '?' && pattern[i + 2] == ':') {
            ere[k++] = '(';
            i += 2;
        } else if (pattern[i] == '\\' && (pattern[i + 1] == 'd' || pattern[i + 1] == 'D')) {
            memcpy(ere + k, pattern[i + 1] == 'd' ? "[0-9]" : "[^0-9]", pattern[i + 1] == 'd' ? 5 : 6);
            k += pattern[i + 1] == 'd' ? 5 : 6;
            i++;
        } else if (pattern[i] == '\\' && pattern[i + 1]) {
            ere[k++] = pattern[i++];
            ere[k++] = pattern[i];
        } else {
            ere[k++] = pattern[i];
        }
    }
    ere[k++] = ')';
    ere[k++] = '$';
    ere[k] = 0;
    regex_t re;
    int rc = regcomp(&re, ere, REG_EXTENDED | REG_NOSUB);
    free(ere);
    if (rc) return -1;
    rc = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return rc;
}

/* 1/0 for a module path against target_modules or feedforward_modules; -1 on
 * a bad entry (message in e). */
static int matches(const cJSON *spec, const char *field, int suffix_only, const char *path, const char *cfg,
                   vkl_err *e)
{
    if (cJSON_IsString(spec)) {
        if (!suffix_only && !strcmp(spec->valuestring, "all-linear")) return 1;
        int r = full_match(spec->valuestring, path);
        if (r < 0) vkl_fail(e, "%s: %s regex \"%s\" cannot be compiled", cfg, field, spec->valuestring);
        return r;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, spec)
    {
        if (!cJSON_IsString(it)) return vkl_fail(e, "%s: %s holds a non-string entry", cfg, field);
        const char *t = it->valuestring;
        size_t n = strlen(path), k = strlen(t);
        if (suffix_only ? ends_with(path, t) : !strcmp(path, t) || (k < n && ends_with(path, t) && path[n - k - 1] == '.'))
            return 1;
    }
    return 0;
}

int vkl_lora_ia3_apply_config(vkl_lora *l, const cJSON *j, const char *path, vkl_err *e)
{
    const cJSON *tm = cJSON_GetObjectItemCaseSensitive(j, "target_modules");
    const cJSON *ff = cJSON_GetObjectItemCaseSensitive(j, "feedforward_modules");
    int tm_ok = cJSON_IsString(tm) || cJSON_IsArray(tm), ff_ok = cJSON_IsString(ff) || cJSON_IsArray(ff);
    if (!tm_ok || !ff_ok)
        return vkl_fail(e, "%s: an IA3 config needs target_modules and feedforward_modules (a list or a regex string)",
                        path);
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "fan_in_fan_out")))
        return vkl_fail(e, "%s: fan_in_fan_out (GPT-2 Conv1D layers) is not supported", path);
    if (cJSON_IsArray(tm) && cJSON_IsArray(ff)) {
        const cJSON *it, *t;
        cJSON_ArrayForEach(it, ff)
        {
            int in = 0;
            cJSON_ArrayForEach(t, tm) in |= cJSON_IsString(it) && cJSON_IsString(t) && !strcmp(it->valuestring, t->valuestring);
            if (!in)
                return vkl_fail(e, "%s: feedforward_modules entry %s is not in target_modules (PEFT requires a subset)",
                                path, cJSON_IsString(it) ? it->valuestring : "?");
        }
    }
    for (int i = 0; i < l->n; i++) {
        vkl_lora_module *m = &l->m[i];
        if (m->kind != VKL_LORA_KIND_IA3)
            return vkl_fail(e, "%s: peft_type IA3 but module %s is a %s module", path, vkl_lora_module_label(m),
                            vkl_lora_kind_name(m->kind));
        const char *p = strip_root(m->name);
        int t = matches(tm, "target_modules", 0, p, path, e);
        if (t < 0) return -1;
        if (!t) return vkl_fail(e, "%s: module %s has an IA3 vector but target_modules does not name it", path, p);
        int f = matches(ff, "feedforward_modules", 1, p, path, e);
        if (f < 0) return -1;
        const vkl_lora_tensor *v = &m->t[VKL_LORA_IA3];
        if (v->shape[0] == 1 && v->shape[1] == 1) m->on_input = f; /* a [1,1] vector: only the config tells */
        if (f != m->on_input)
            return vkl_fail(e, "%s: module %s is %sa feed-forward module by feedforward_modules but its ia3_l is "
                               "[%lld,%lld] (feed-forward: [1,in], others: [out,1])",
                            path, p, f ? "" : "not ", (long long)v->shape[0], (long long)v->shape[1]);
    }
    l->has_config = 1;
    return 0;
}

int vkl_lora_ia3_check(const vkl_lora_module *m, vkl_err *e)
{
    const char *n = vkl_lora_module_label(m);
    const vkl_lora_tensor *v = &m->t[VKL_LORA_IA3];
    if (!m->name)
        return vkl_fail(e, "%s: kohya name without its model path; give the model (--model) to resolve it", n);
    if (m->kind != VKL_LORA_KIND_IA3 || !v->data) return vkl_fail(e, "%s: not an IA3 module", n);
    if (v->ndim != 2 || v->shape[m->on_input ? 0 : 1] != 1)
        return vkl_fail(e, "%s: an IA3 vector scaling the %s must be %s", n, m->on_input ? "input" : "output",
                        m->on_input ? "[1,in]" : "[out,1]");
    return 0;
}

char *vkl_lora_ia3_config_json(const vkl_lora *l, vkl_err *e)
{
    cJSON *j = cJSON_CreateObject(), *tm = cJSON_CreateArray(), *ff = cJSON_CreateArray();
    for (int i = 0; i < l->n; i++) {
        const char *s = strip_root(l->m[i].name);
        int seen = 0;
        for (int k = 0; k < i && !seen; k++) seen = !strcmp(strip_root(l->m[k].name), s);
        if (seen) continue;
        cJSON_AddItemToArray(tm, cJSON_CreateString(s));
        if (l->m[i].on_input) cJSON_AddItemToArray(ff, cJSON_CreateString(s));
    }
    cJSON_AddStringToObject(j, "peft_type", "IA3");
    cJSON_AddNullToObject(j, "task_type");
    cJSON_AddNullToObject(j, "base_model_name_or_path");
    cJSON_AddNullToObject(j, "revision");
    cJSON_AddItemToObject(j, "target_modules", tm);
    cJSON_AddItemToObject(j, "feedforward_modules", ff);
    cJSON_AddBoolToObject(j, "fan_in_fan_out", 0);
    cJSON_AddNullToObject(j, "modules_to_save");
    cJSON_AddBoolToObject(j, "init_ia3_weights", 1);
    cJSON_AddBoolToObject(j, "inference_mode", 1);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s) vkl_fail(e, "out of memory");
    return s;
}
