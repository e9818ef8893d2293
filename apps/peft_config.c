#include "peft_config.h"

#include <stdio.h>
#include <stdlib.h>

static void put(cJSON *j, const char *key, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(j, key)) cJSON_ReplaceItemInObjectCaseSensitive(j, key, v);
    else cJSON_AddItemToObject(j, key, v);
}

cJSON *vkl_app_json_strings(const char *const *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* The config as PEFT writes it for a causal LM: the base model's path, the
 * task, and target_modules (feedforward_modules for IA3) as the user named
 * them (suffixes), rather than the expanded per-layer list. */
int vkl_app_peft_finish_config(const char *path, const char *model, const char *const *t, int nt,
                               const char *const *ff, int nf, vkl_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "cannot reopen %s", path);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    if (!j) return vkl_fail(e, "%s: not the JSON just written", path);
    put(j, "base_model_name_or_path", cJSON_CreateString(model));
    put(j, "task_type", cJSON_CreateString("CAUSAL_LM"));
    put(j, "target_modules", vkl_app_json_strings(t, nt));
    if (ff) put(j, "feedforward_modules", vkl_app_json_strings(ff, nf));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    f = s ? fopen(path, "wb") : NULL;
    int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    ok = (f && fclose(f) == 0) && ok;
    free(s);
    return ok ? 0 : vkl_fail(e, "cannot write %s", path);
}
