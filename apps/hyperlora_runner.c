#include "hyperlora_runner.h"

#include "app.h"
#include "out_folder.h"
#include "progress.h"
#include "stop_signal.h"

#include "io/dir.h"
#include "rng.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Where each tensor the family's step differentiates sits in the network's output. */
static int map_grads(const vkl_app_hyper_family *f, vkl_app_hyper_run *r, vkl_err *e)
{
    int np = f->param_count(f->self);
    r->goff = malloc(sizeof(int64_t) * (size_t)np);
    r->dout = malloc(sizeof(float) * (size_t)vkl_hyperlora_outputs(r->hy));
    if (!r->goff || !r->dout) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < np; i++) {
        const char *key;
        const vkl_tensor *p, *g;
        f->param(f->self, i, &key, &p, &g);
        r->goff[i] = -1;
        for (int k = 0; k < r->tmpl.n && r->goff[i] < 0; k++)
            for (int role = VKL_LORA_DOWN; role <= VKL_LORA_UP; role++) {
                char want[1024];
                snprintf(want, sizeof want, "%s%s%s", f->key_prefix, r->tmpl.m[k].name, f->key_suffix[role]);
                if (!strcmp(key, want) && vkl_tensor_nelem(p) == (int64_t)vkl_lora_tensor_nelem(&r->tmpl.m[k].t[role]))
                    r->goff[i] = vkl_hyperlora_offset(r->hy, k, role);
            }
        if (r->goff[i] < 0) return vkl_fail(e, "trained tensor %s has no place in the hypernetwork's output", key);
    }
    return 0;
}

/* The emitted factors into the adapter set's device tensors. */
static int upload_adapter(vkl_app_hyper_run *r, vkl_err *e)
{
    for (int k = 0; k < r->tmpl.n; k++) {
        const vkl_lora_slot *sl = vkl_lora_set_find(r->set, r->tmpl.m[k].name);
        if (!sl) return vkl_fail(e, "module %s has no place in the adapter set", r->tmpl.m[k].name);
        if (vkl_lora_slot_upload(r->c, sl, &r->tmpl.m[k], e)) return -1;
    }
    return 0;
}

static char *tasks_json(const vkl_app_hyper_run *r)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < r->nt; i++) cJSON_AddItemToArray(a, cJSON_CreateString(r->tasks[i].description));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

/* The family's setup, then the network: its centre from the tasks' conditions, AdamW, the gradients' places. */
static int setup(const vkl_app_hyper_family *f, const vkl_app_hyper_train_opts *o, vkl_app_hyper_run *r, vkl_err *e)
{
    if (f->setup(f->self, r, e) || vkl_hyperlora_new(r->c, &r->tmpl, r->D, o->hidden, o->seed, &r->hy, e)) return -1;
    float *mean = malloc(sizeof(float) * (size_t)r->D), scale;
    if (!mean) return vkl_fail(e, "out of host memory");
    vkl_hyperlora_centre_of(r->cond, r->nt, r->D, mean, &scale);
    int rc = vkl_hyperlora_set_centre(r->hy, mean, scale, e);
    free(mean);
    vkl_adamw_opts ho;
    vkl_adamw_opts_default(&ho);
    ho.lr = o->lr;
    ho.weight_decay = o->wd;
    ho.max_grad_norm = o->max_grad_norm;
    return rc || vkl_hyperlora_train_begin(r->hy, &ho, e) || map_grads(f, r, e) ? -1 : 0;
}

static int train(const vkl_app_hyper_family *f, const vkl_app_hyper_train_opts *o, const char *tmp_log,
                 const char *tmp_out, vkl_app_hyper_run *r, vkl_err *e)
{
    if (setup(f, o, r, e)) return -1;
    if (!(r->log = fopen(tmp_log, "w"))) return vkl_fail(e, "cannot create %s: %s", tmp_log, strerror(errno));
    fprintf(r->log, "step,task,loss,lr,seconds\n");
    if (!vkl_app_quiet)
        fprintf(stderr, "%s: %d tasks, %d adapter modules (%lld numbers emitted), hidden %d, %d steps of batch %d%s\n",
                f->cmd, r->nt, r->tmpl.n, (long long)vkl_hyperlora_outputs(r->hy), o->hidden, o->steps, o->batch,
                r->shape);
    uint64_t g = o->seed ^ 0x68797065726c6full;
    int round[VKL_APP_HYPER_MAX_TASKS], cnt[VKL_APP_HYPER_MAX_TASKS] = {0};
    double sum[VKL_APP_HYPER_MAX_TASKS] = {0};
    int np = f->param_count(f->self), every = o->steps >= 20 ? o->steps / 10 : 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 1; t <= o->steps; t++) {
        int j = (t - 1) % r->nt;
        if (!j) {
            for (int i = 0; i < r->nt; i++) round[i] = i;
            vkl_shuffle_ints(round, r->nt, &g);
        }
        int k = round[j];
        const float *cond = r->cond + (size_t)k * r->D;
        if (vkl_app_stop_check(e)) return -1;
        float loss;
        if (vkl_hyperlora_emit(r->hy, cond, NULL, &r->tmpl, e) || upload_adapter(r, e) ||
            f->step(f->self, r, k, t, &g, &loss, e))
            return vkl_err_prefix(e, "step %d: ", t), -1;
        for (int i = 0; i < np; i++) {
            const char *key;
            const vkl_tensor *p, *gr;
            f->param(f->self, i, &key, &p, &gr);
            if (vkl_tensor_download(r->c, gr, r->dout + r->goff[i], VKL_F32, e)) return -1;
        }
        if (vkl_hyperlora_train_step(r->hy, cond, r->dout, t, o->lr, e)) return vkl_err_prefix(e, "step %d: ", t), -1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        fprintf(r->log, "%d,%d,%.6f,%g,%.3f\n", t, k + 1, (double)loss, (double)o->lr, sec);
        sum[k] += loss;
        cnt[k]++;
        if (!vkl_app_quiet && (t % every == 0 || t == o->steps)) {
            fprintf(stderr, "step %d/%d  mean loss per task since last report:", t, o->steps);
            for (int i = 0; i < r->nt; i++) {
                if (cnt[i]) fprintf(stderr, " %d: %.4f", i + 1, sum[i] / cnt[i]);
                sum[i] = 0;
                cnt[i] = 0;
            }
            fprintf(stderr, "  (%.2f s/step)\n", sec / t);
        }
    }
    int bad = fclose(r->log);
    r->log = NULL;
    if (bad) return vkl_fail(e, "cannot write %s", tmp_log);
    vkl_hyperlora_meta meta = {.rank = o->rank, .alpha = o->alpha, .hidden = o->hidden, .cond_dim = r->D};
    snprintf(meta.targets, sizeof meta.targets, "%s", f->targets);
    snprintf(meta.base, sizeof meta.base, "%s", o->model);
    char *tj = tasks_json(r);
    if (!tj) return vkl_fail(e, "out of host memory");
    int rc = vkl_hyperlora_save(r->hy, &meta, "tasks", tj, tmp_out, e);
    free(tj);
    return rc;
}

static void run_free(const vkl_app_hyper_family *f, vkl_app_hyper_run *r)
{
    if (r->log) fclose(r->log);
    free(r->goff);
    free(r->dout);
    vkl_hyperlora_free(r->hy);
    f->free(f->self); /* the step and the model, which use the set and the context */
    vkl_lora_set_free(r->set);
    vkl_lora_free(&r->tmpl);
    free(r->cond);
    vkl_app_hyper_tasks_free(r->tasks, r->nt);
    if (r->c) vkl_ctx_destroy(r->c);
}

int vkl_app_hyper_train_run(const vkl_app_hyper_family *f, const vkl_app_hyper_train_opts *o)
{
    if (vkl_app_out_file_refuse(f->cmd, o->out, o->force)) return 1;
    vkl_err e = {{0}};
    char tmp_out[4300], tmp_log[4300];
    snprintf(tmp_out, sizeof tmp_out, "%s.tmp-%ld", o->out, (long)getpid());
    snprintf(tmp_log, sizeof tmp_log, "%s.tmp-%ld", o->log, (long)getpid());
    vkl_app_hyper_run r;
    memset(&r, 0, sizeof r);
    vkl_app_stop_catch(); /* a signal stops the run after its step, leaving nothing behind */
    int rc = train(f, o, tmp_log, tmp_out, &r, &e);
    vkl_app_stop_restore();
    run_free(f, &r);
    if (!rc && (vkl_rename_durable(tmp_log, o->log) || vkl_rename_durable(tmp_out, o->out)))
        rc = vkl_fail(&e, "cannot rename the outputs into place (%s, %s): %s", o->out, o->log, strerror(errno));
    if (rc) {
        unlink(tmp_out);
        unlink(tmp_log);
        vkl_app_print_error(f->cmd, e.msg);
        return vkl_app_stop_requested() ? 130 : 1;
    }
    if (!vkl_app_quiet) fprintf(stderr, "%s: wrote %s and %s\n", f->cmd, o->out, o->log);
    return 0;
}

/* ---- the train|emit front ends ---- */

int vkl_app_hyper_subcommand(const char *cmd, int argc, char **argv, void (*usage)(FILE *))
{
    if (argc >= 2 && !strcmp(argv[1], "train")) return 1;
    if (argc >= 2 && !strcmp(argv[1], "emit")) return 0;
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return -1;
    }
    fprintf(stderr, "vklora %s: %s%s (expected train or emit)\n", cmd,
            argc >= 2 ? "unknown subcommand " : "missing subcommand", argc >= 2 ? argv[1] : "");
    usage(stderr);
    return -2;
}

int vkl_app_hyper_log_name(const char *out, char *buf, size_t cap)
{
    const char *dot = strrchr(out, '.'), *slash = strrchr(out, '/');
    int stem = dot && (!slash || dot > slash) ? (int)(dot - out) : (int)strlen(out);
    return (size_t)snprintf(buf, cap, "%.*s_log.csv", stem, out) >= cap ? -1 : 0;
}

int vkl_app_hyper_check_tasks(const char *cmd, const char *tasks)
{
    struct stat st;
    if (!stat(tasks, &st) && S_ISREG(st.st_mode)) return 0;
    fprintf(stderr, "vklora %s: tasks file %s: %s\n", cmd, tasks, errno == ENOENT ? "no such file" : "not a readable file");
    return 1;
}

int vkl_app_hyper_check_description(const char *cmd, const char *description)
{
    const char *s = description;
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') s++;
    if (*s) return 0;
    fprintf(stderr, "vklora %s: --description is empty\n", cmd);
    return 2;
}
