#include "train/train_resume.h"

#include "io/dir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int vkl_train_refuse_existing(const char *const *paths, int n, int force, const char *resume_hint, vkl_err *e)
{
    if (force) return 0;
    struct stat st;
    for (int i = 0; i < n; i++)
        if (paths[i] && !stat(paths[i], &st))
            return vkl_fail(e, "%s exists (an earlier run's); pass --force to replace it%s%s", paths[i],
                            resume_hint ? ", or --resume " : "", resume_hint ? resume_hint : "");
    return 0;
}

/* Settings that make the run what it is: with another value, the saved
 * weights and moments belong to a different run. */
static const char *const defining[] = {
    "model",    "images", "tokenizer", "model-config", "network",     "network-conv", "lokr-factor", "resolution",
    "rank",     "alpha",  "batch",     "grad-accum",  "seed",         "train-te",    "train-ff",
    "bucket",   "bucket-no-upscale",   "flip",        "caption-ext",  "caption",     "trigger",
    "clip-skip", "weights", "optimizer", "ema-decay",
};
/* Settings that only say where and how often files are written. */
static const char *const operational[] = {"output", "save-every", "keep-last", "sample-prompts", "sample-every",
                                          "sample-steps", "checkpointing", "cache-latents-to-disk",
                                          "cache-text-embeddings-to-disk"};

static int listed(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}

static char *text_of(const cJSON *v)
{
    if (!v) return strdup("(not set)");
    if (cJSON_IsString(v)) return strdup(v->valuestring);
    char *s = cJSON_PrintUnformatted(v);
    return s ? s : strdup("?");
}

static int check_key(const char *k, const cJSON *saved, const cJSON *now, int step, cJSON *changes, vkl_err *e)
{
    if (listed(k, operational, sizeof operational / sizeof *operational)) return 0;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(saved, k), *b = cJSON_GetObjectItemCaseSensitive(now, k);
    if (a && b && cJSON_Compare(a, b, 1)) return 0;
    char *was = text_of(a), *is = text_of(b);
    int rc = 0;
    if (listed(k, defining, sizeof defining / sizeof *defining)) {
        rc = vkl_fail(e, "the state was saved with --%s %s and this run has --%s %s: that is another run "
                         "(give it another -o, or --force to start over)", k, was, k, is);
    } else {
        vkl_log(VKL_LOG_WARN, "resuming at step %d with --%s %s (the run so far had %s); recorded in the settings "
                "file", step, k, is, was);
        cJSON *c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "step", step);
        cJSON_AddStringToObject(c, "setting", k);
        cJSON_AddItemToObject(c, "was", a ? cJSON_Duplicate(a, 1) : cJSON_CreateNull());
        cJSON_AddItemToObject(c, "now", b ? cJSON_Duplicate(b, 1) : cJSON_CreateNull());
        cJSON_AddItemToArray(changes, c);
    }
    free(was);
    free(is);
    return rc;
}

int vkl_train_check_resume(const cJSON *saved, const cJSON *now, int step, cJSON *changes, vkl_err *e)
{
    for (const cJSON *it = now->child; it; it = it->next)
        if (check_key(it->string, saved, now, step, changes, e)) return -1;
    /* a setting the saved run had and this one lacks */
    for (const cJSON *it = saved->child; it; it = it->next)
        if (!cJSON_GetObjectItemCaseSensitive(now, it->string) && check_key(it->string, saved, now, step, changes, e))
            return -1;
    return 0;
}

int vkl_train_log_cut(const char *path, int step, double *seconds, vkl_err *e)
{
    *seconds = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : vkl_fail(e, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap), line[512];
    if (!out) {
        fclose(f);
        return vkl_fail(e, "out of host memory");
    }
    out[0] = 0;
    int first = 1;
    while (fgets(line, sizeof line, f)) {
        if (!first) {
            /* step is the first column, seconds the last */
            char *end;
            long s = strtol(line, &end, 10);
            if (end == line || *end != ',' || s > step) continue;
            const char *comma = strrchr(line, ',');
            if (comma) *seconds = strtod(comma + 1, NULL);
        }
        first = 0;
        size_t len = strlen(line);
        if (n + len + 1 > cap) {
            char *p = realloc(out, cap = 2 * (n + len + 1));
            if (!p) {
                free(out);
                fclose(f);
                return vkl_fail(e, "out of host memory");
            }
            out = p;
        }
        memcpy(out + n, line, len + 1);
        n += len;
    }
    fclose(f);
    int rc = vkl_write_text_atomic(path, out, e);
    free(out);
    return rc;
}

int vkl_train_state_commit(const char *base, int step, int (*write)(void *user, const char *dir, vkl_err *e),
                           void *user, vkl_err *e)
{
    char dir[1200], tmp[1300], latest[1200], prev[64] = "";
    snprintf(dir, sizeof dir, "%.1100s/step-%06d", base, step);
    snprintf(tmp, sizeof tmp, "%.1100s/.step-%06d.tmp", base, step);
    snprintf(latest, sizeof latest, "%.1100s/latest", base);
    FILE *f = fopen(latest, "r");
    if (f) {
        if (!fgets(prev, sizeof prev, f)) prev[0] = 0;
        fclose(f);
        prev[strcspn(prev, "\n")] = 0;
    }
    vkl_err ig = {{0}};
    if (vkl_mkdir_p(base)) return vkl_fail(e, "cannot create %s: %s", base, strerror(errno));
    vkl_dir_remove(tmp, &ig); /* a leftover of a run killed while saving */
    if (vkl_mkdir_p(tmp)) return vkl_fail(e, "cannot create %s: %s", tmp, strerror(errno));
    if (write(user, tmp, e) || vkl_dir_replace_atomic(tmp, dir, e)) {
        vkl_dir_remove(tmp, &ig);
        return -1;
    }
    char name[64];
    snprintf(name, sizeof name, "step-%06d\n", step);
    if (vkl_write_text_atomic(latest, name, e)) return -1;
    if (prev[0] && strncmp(prev, name, strlen(prev))) {
        char old[1200];
        snprintf(old, sizeof old, "%.1100s/%.60s", base, prev);
        vkl_dir_remove(old, &ig);
    }
    return 0;
}

int vkl_train_state_json_save(const char *dir, cJSON *j, const vkl_ds_iter *it, vkl_err *e)
{
    char *iter = vkl_ds_iter_save(it), path[1300];
    cJSON_AddItemToObject(j, "data", iter ? cJSON_Parse(iter) : cJSON_CreateNull());
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    free(iter);
    snprintf(path, sizeof path, "%.1200s/state.json", dir);
    int rc = text ? vkl_write_text_atomic(path, text, e) : vkl_fail(e, "out of host memory");
    free(text);
    return rc;
}
