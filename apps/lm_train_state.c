#include "lm_train_state.h"
#include "io/text.h"

#include "io/dir.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void remove_dir(const char *dir)
{
    static const char *const names[] = {"state.safetensors", "state.json", "train_log.csv"};
    char p[4300];
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
}

/* Calls fn(tensor, name) for every trained tensor and its optimiser state. */
typedef int (*each_fn)(void *user, vkl_tensor *t, const char *name, vkl_err *e);
static int each(vkl_llama_train *tr, each_fn fn, void *user, vkl_err *e)
{
    vkl_adamw *opt = vkl_llama_train_optimizer(tr);
    for (int i = 0; i < vkl_llama_train_count(tr); i++) {
        if (fn(user, vkl_llama_train_param(tr, i), vkl_llama_train_key(tr, i), e)) return -1;
        vkl_tensor *st[2];
        const char *sn[2];
        int k = vkl_adamw_state(opt, i, st, sn);
        for (int j = 0; j < k; j++) {
            char name[600];
            snprintf(name, sizeof name, "%s.adam.%s", vkl_llama_train_key(tr, i), sn[j]);
            if (fn(user, st[j], name, e)) return -1;
        }
    }
    return 0;
}

typedef struct writer {
    vkl_st_writer *w;
    vkl_ctx *c;
} writer;

static int add_one(void *user, vkl_tensor *t, const char *name, vkl_err *e)
{
    writer *wr = user;
    size_t bytes = (size_t)vkl_tensor_nelem(t) * (t->dtype == VKL_U8 ? 1 : 4);
    void *buf = malloc(bytes + 1);
    if (!buf) return vkl_fail(e, "out of host memory");
    vkl_dtype dt = t->dtype == VKL_U8 ? VKL_U8 : VKL_F32;
    int rc = vkl_tensor_download(wr->c, t, buf, dt, e) || vkl_st_writer_add(wr->w, name, dt, t->ndim, t->shape, buf, e);
    free(buf);
    return rc;
}

static int write_text(const char *path, const char *text, vkl_err *e)
{
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0; /* on disk before the folder is swapped in */
    ok = (f && fclose(f) == 0) && ok;
    return ok ? 0 : vkl_fail(e, "cannot write %s", path);
}

int vkl_app_lm_state_save(const char *dir, vkl_ctx *c, vkl_llama_train *tr, const vkl_app_lm_state *s,
                          const char *options, const char *log_path, vkl_err *e)
{
    char tmp[4200], p[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", dir, (long)getpid());
    remove_dir(tmp);
    if (mkdir(tmp, 0755)) return vkl_fail(e, "cannot create %s", tmp);
    writer wr = {vkl_st_writer_new(), c};
    snprintf(p, sizeof p, "%s/state.safetensors", tmp);
    int64_t nx = (int64_t)s->n_extra;
    int rc = !wr.w ? vkl_fail(e, "out of host memory")
                   : each(tr, add_one, &wr, e) || (s->extra && vkl_st_writer_add(wr.w, "extra", VKL_F32, 1, &nx, s->extra, e)) ||
                         vkl_st_writer_finish(wr.w, p, e);
    vkl_st_writer_free(wr.w);
    cJSON *j = cJSON_CreateObject();
    char rng[32];
    snprintf(rng, sizeof rng, "%llu", (unsigned long long)s->rng);
    cJSON_AddNumberToObject(j, "step", s->step);
    cJSON_AddNumberToObject(j, "epoch", s->epoch);
    cJSON_AddNumberToObject(j, "pos", s->pos);
    cJSON_AddNumberToObject(j, "ranks", s->ranks);
    cJSON_AddNumberToObject(j, "grad_accum", s->grad_accum);
    cJSON_AddStringToObject(j, "rng", rng);
    cJSON_AddItemToObject(j, "order", cJSON_CreateIntArray(s->order, s->n));
    cJSON_AddItemToObject(j, "options", cJSON_Parse(options));
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(p, sizeof p, "%s/state.json", tmp);
    if (!rc) rc = text ? write_text(p, text, e) : vkl_fail(e, "out of host memory");
    free(text);
    char *log = NULL;
    snprintf(p, sizeof p, "%s/train_log.csv", tmp);
    if (!rc) rc = vkl_read_text_file(log_path, (size_t)1 << 30, &log, NULL, e) || write_text(p, log, e);
    free(log);
    /* swapped in whole: a kill at any moment leaves the previous state or this one */
    if (!rc) rc = vkl_dir_replace_atomic(tmp, dir, e);
    if (rc) remove_dir(tmp);
    return rc;
}

typedef struct reader {
    vkl_st_file *f;
    vkl_ctx *c;
} reader;

static int read_one(void *user, vkl_tensor *t, const char *name, vkl_err *e)
{
    reader *r = user;
    const vkl_st_tensor *st = vkl_st_find(r->f, name);
    if (!st || (int64_t)st->nelem != vkl_tensor_nelem(t))
        return vkl_fail(e, "the saved state has no tensor %s of %lld elements", name, (long long)vkl_tensor_nelem(t));
    vkl_dtype dt = t->dtype == VKL_U8 ? VKL_U8 : VKL_F32;
    void *buf = malloc(st->nelem * 4 + 1);
    if (!buf) return vkl_fail(e, "out of host memory");
    int rc = vkl_st_read(r->f, st, dt, buf, e) || vkl_tensor_upload(r->c, t, buf, dt, e);
    free(buf);
    return rc;
}

int vkl_app_lm_state_load(const char *dir, vkl_ctx *c, vkl_llama_train *tr, vkl_app_lm_state *s, const char *options,
                          FILE *log, vkl_err *e)
{
    char p[4300], *text = NULL;
    snprintf(p, sizeof p, "%s/state.json", dir);
    if (vkl_read_text_file(p, (size_t)1 << 28, &text, NULL, e)) return vkl_err_prefix(e, "--resume: "), -1;
    cJSON *j = cJSON_Parse(text), *want = cJSON_Parse(options);
    free(text);
    cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "options");
    const cJSON *order = cJSON_GetObjectItemCaseSensitive(j, "order");
    const cJSON *rng = cJSON_GetObjectItemCaseSensitive(j, "rng");
    int rc = 0;
    if (!j || !cJSON_IsArray(order) || !cJSON_IsString(rng) || !cJSON_IsObject(o) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "step")) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "epoch")) ||
        !cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "pos")))
        rc = vkl_fail(e, "%s: not a state this command wrote", p);
    int saved_ranks = 1, saved_accum = 1;
    if (!rc) {
        /* the split of the global batch; a state written before ranks were
         * recorded kept --grad-accum among its options */
        const cJSON *rk = cJSON_GetObjectItemCaseSensitive(j, "ranks"), *ga = cJSON_GetObjectItemCaseSensitive(j, "grad_accum");
        cJSON *old = cJSON_DetachItemFromObjectCaseSensitive(o, "grad_accum");
        if (cJSON_IsNumber(rk)) saved_ranks = rk->valueint;
        if (cJSON_IsNumber(ga)) saved_accum = ga->valueint;
        else if (cJSON_IsNumber(old)) saved_accum = old->valueint;
        cJSON_Delete(old);
    }
    if (!rc && saved_ranks * saved_accum != s->ranks * s->grad_accum) {
        /* the micro-batches of a step are the step's share of the sample order */
        rc = vkl_fail(e, "%s was saved with %d rank(s) x --grad-accum %d = %d micro-batches per step, this run has "
                         "%d x %d = %d (choose --grad-accum so that ranks x grad-accum = %d)", p, saved_ranks,
                      saved_accum, saved_ranks * saved_accum, s->ranks, s->grad_accum, s->ranks * s->grad_accum,
                      saved_ranks * saved_accum);
    } else if (!rc && !cJSON_Compare(o, want, 1)) {
        char *a = cJSON_PrintUnformatted(o), *b = cJSON_PrintUnformatted(want);
        rc = vkl_fail(e, "%s was saved with other options (%.300s) than this run's (%.300s)", p, a ? a : "?", b ? b : "?");
        free(a);
        free(b);
    } else if (!rc && cJSON_GetArraySize(order) != s->n) {
        rc = vkl_fail(e, "%s: %d samples saved, the data has %d", p, cJSON_GetArraySize(order), s->n);
    }
    if (!rc) {
        s->step = cJSON_GetObjectItemCaseSensitive(j, "step")->valueint;
        s->epoch = cJSON_GetObjectItemCaseSensitive(j, "epoch")->valueint;
        s->pos = cJSON_GetObjectItemCaseSensitive(j, "pos")->valueint;
        s->rng = strtoull(rng->valuestring, NULL, 10);
        int i = 0;
        for (const cJSON *x = order->child; x; x = x->next, i++) s->order[i] = x->valueint;
    }
    cJSON_Delete(j);
    cJSON_Delete(want);
    reader r = {NULL, c};
    snprintf(p, sizeof p, "%s/state.safetensors", dir);
    if (!rc) rc = vkl_st_open(p, &r.f, e) || each(tr, read_one, &r, e);
    if (!rc && s->extra) {
        const vkl_st_tensor *x = vkl_st_find(r.f, "extra");
        if (!x || x->nelem != (uint64_t)s->n_extra)
            rc = vkl_fail(e, "%s: the saved state has no extra array of %zu values (AdaLoRA's allocator)", p, s->n_extra);
        else
            rc = vkl_st_read(r.f, x, VKL_F32, s->extra, e);
    }
    vkl_st_close(r.f);
    /* the log's rows up to the saved step (its header is already written) */
    snprintf(p, sizeof p, "%s/train_log.csv", dir);
    if (!rc) rc = vkl_read_text_file(p, (size_t)1 << 30, &text, NULL, e);
    for (char *line = rc ? NULL : strchr(text, '\n'); line && line[1];) {
        char *next = strchr(line + 1, '\n');
        int st = atoi(line + 1);
        if (log && st >= 1 && st <= s->step) fprintf(log, "%.*s\n", (int)((next ? next : line + strlen(line)) - line - 1), line + 1);
        line = next;
    }
    if (!rc) free(text);
    return rc;
}
