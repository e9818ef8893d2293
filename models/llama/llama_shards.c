#include "llama/llama_shards.h"
#include "io/text.h"


#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int add_shard(vkl_llama_shards *s, const char *dir, const char *file, vkl_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    for (int i = 0; i < s->n; i++)
        if (!strcmp(vkl_st_path(s->f[i]), path)) return 0;
    vkl_st_file **g = realloc(s->f, sizeof *g * (size_t)(s->n + 1));
    if (!g) return vkl_fail(e, "out of host memory");
    s->f = g;
    if (vkl_st_open(path, &s->f[s->n], e)) return -1;
    s->n++;
    return 0;
}

int vkl_llama_shards_open(const char *dir, vkl_llama_shards *s, vkl_err *e)
{
    memset(s, 0, sizeof *s);
    struct stat st;
    char single[4096];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    snprintf(s->label, sizeof s->label, "%s/model.safetensors.index.json", dir);
    if (!stat(single, &st) || stat(s->label, &st)) { /* without either, the error names model.safetensors */
        snprintf(s->label, sizeof s->label, "%s", single);
        return add_shard(s, dir, "model.safetensors", e);
    }
    char *text = NULL;
    if (vkl_read_text_file(s->label, 1 << 26, &text, NULL, e)) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    int rc = cJSON_IsObject(map) ? 0 : vkl_fail(e, "%s: no weight_map object", s->label);
    for (const cJSON *v = map ? map->child : NULL; v && !rc; v = v->next) {
        /* shard names are plain file names in the folder */
        if (!cJSON_IsString(v) || !v->valuestring[0] || strchr(v->valuestring, '/') || !strcmp(v->valuestring, "..") ||
            !strcmp(v->valuestring, "."))
            rc = vkl_fail(e, "%s: weight_map entry %s does not name a file in the folder", s->label, v->string);
        else
            rc = add_shard(s, dir, v->valuestring, e);
    }
    if (!rc && !s->n) rc = vkl_fail(e, "%s: the weight_map is empty", s->label);
    cJSON_Delete(j);
    if (rc) vkl_llama_shards_close(s);
    return rc;
}

const vkl_st_tensor *vkl_llama_shards_find(const vkl_llama_shards *s, const char *name, const vkl_st_file **file)
{
    for (int i = 0; i < s->n; i++) {
        const vkl_st_tensor *t = vkl_st_find(s->f[i], name);
        if (t) {
            *file = s->f[i];
            return t;
        }
    }
    return NULL;
}

void vkl_llama_shards_close(vkl_llama_shards *s)
{
    for (int i = 0; i < s->n; i++) vkl_st_close(s->f[i]);
    free(s->f);
    s->f = NULL;
    s->n = 0;
}
