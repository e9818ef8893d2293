#include "lm_hyperlora.h"

#include "llama/llama_condition.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void vkl_app_hyper_tasks_free(vkl_app_hyper_task *t, int n)
{
    for (int i = 0; i < n; i++) {
        free(t[i].description);
        free(t[i].data);
    }
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

/* One line's task; data relative to dir (the tasks file's folder, "" for the current one). */
static int parse_task(const char *line, const char *path, int ln, const char *dir, const char *key, int folder,
                      vkl_app_hyper_task *t, vkl_err *e)
{
    cJSON *j = cJSON_Parse(line);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return vkl_fail(e, "%s line %d: not a JSON object", path, ln);
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "description"), *p = cJSON_GetObjectItemCaseSensitive(j, key);
    int rc = 0;
    if (!cJSON_IsString(d)) rc = vkl_fail(e, "%s line %d: \"description\" missing or not a string", path, ln);
    else if (blank(d->valuestring)) rc = vkl_fail(e, "%s line %d: the description is empty", path, ln);
    else if (!cJSON_IsString(p) || !p->valuestring[0])
        rc = vkl_fail(e, "%s line %d: \"%s\" missing or not a %s name", path, ln, key, folder ? "folder" : "file");
    if (!rc) {
        const char *v = p->valuestring;
        size_t n = strlen(dir) + strlen(v) + 2;
        t->data = malloc(n);
        t->description = strdup(d->valuestring);
        if (!t->data || !t->description) rc = vkl_fail(e, "out of host memory");
        else snprintf(t->data, n, "%s%s", v[0] == '/' ? "" : dir, v);
        struct stat st;
        if (!rc && stat(t->data, &st))
            rc = vkl_fail(e, "%s line %d: %s %s: %s", path, ln, folder ? "image folder" : "data file", t->data,
                          errno == ENOENT ? (folder ? "no such folder" : "no such file") : strerror(errno));
        else if (!rc && !folder && !S_ISREG(st.st_mode))
            rc = vkl_fail(e, "%s line %d: data file %s: a folder, not a file", path, ln, t->data);
        else if (!rc && folder && !S_ISDIR(st.st_mode))
            rc = vkl_fail(e, "%s line %d: image folder %s: not a folder", path, ln, t->data);
    }
    cJSON_Delete(j);
    return rc;
}

int vkl_app_hyper_tasks_load(const char *path, vkl_app_hyper_task *t, int max, int *n, vkl_err *e)
{
    return vkl_app_hyper_tasks_load_ex(path, "data", 0, t, max, n, e);
}

int vkl_app_hyper_tasks_load_ex(const char *path, const char *key, int folder, vkl_app_hyper_task *t, int max, int *n,
                                vkl_err *e)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "tasks file %s: %s", path, strerror(errno));
    char dir[4096] = "";
    const char *slash = strrchr(path, '/');
    if (slash && (size_t)(slash - path + 1) < sizeof dir) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + 1), path);
    size_t cap = 0;
    char *line = NULL;
    int ln = 0, rc = 0;
    for (ssize_t got; !rc && (got = getline(&line, &cap, f)) >= 0;) {
        ln++;
        if (blank(line)) continue;
        if (*n == max) rc = vkl_fail(e, "%s: more than %d tasks", path, max);
        else if (!(rc = parse_task(line, path, ln, dir, key, folder, &t[*n], e))) (*n)++;
        else vkl_app_hyper_tasks_free(&t[*n], 1), memset(&t[*n], 0, sizeof t[*n]);
    }
    free(line);
    fclose(f);
    if (!rc && !*n) rc = vkl_fail(e, "tasks file %s holds no task", path);
    /* one description, one condition: two tasks sharing it could not get different adapters */
    for (int i = 0; !rc && i < *n; i++)
        for (int j = i + 1; !rc && j < *n; j++)
            if (!strcmp(t[i].description, t[j].description))
                rc = vkl_fail(e, "%s: tasks %d and %d have the same description", path, i + 1, j + 1);
    if (rc) {
        vkl_app_hyper_tasks_free(t, *n);
        *n = 0;
    }
    return rc;
}

int vkl_app_hyper_condition(const vkl_llama *m, const vkl_app_lm_tok *tok, const char *description, float *cond,
                            vkl_err *e)
{
    if (!description || blank(description)) return vkl_fail(e, "the description is empty");
    int32_t *ids = NULL;
    int n = 0;
    if (vkl_app_lm_tok_encode(tok, description, m->cfg.bos, &ids, &n, e)) return -1;
    int rc = vkl_llama_mean_hidden(m, ids, n, cond, e);
    free(ids);
    return rc ? vkl_err_prefix(e, "description \"%.60s\": ", description), -1 : 0;
}

int vkl_app_hyper_split_targets(const char *list, char *buf, size_t cap, const char **names, int *n)
{
    *n = 0;
    if (strlen(list) >= cap) return -1;
    snprintf(buf, cap, "%s", list);
    for (char *p = strtok(buf, ","); p; p = strtok(NULL, ",")) {
        if (*n == VKL_APP_HYPER_MAX_TARGETS) return -1;
        names[(*n)++] = p;
    }
    return *n ? 0 : -1;
}
