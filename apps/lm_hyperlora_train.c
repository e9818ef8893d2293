/* vklora lm hyperlora train (research option): trains a HyperLoRA network
 * (lora/hyperlora.h) on several tasks, each a description and lm train's
 * data. Each step picks a task (every task once per round, the rounds'
 * orders drawn from --seed), emits its adapter from the description's
 * condition, runs a LoRA training step of the language model on a batch of
 * the task's data with gradients only (the adapter is not updated), and
 * takes the gradient of the loss with respect to the emitted factors back
 * through the network (an AdamW step on W1, b1, W2, b2). */
#include "lm_hyperlora_cmd.h"

#include "app.h"
#include "out_folder.h"
#include "lm_data.h"
#include "lm_gen_args.h"
#include "progress.h"
#include "stop_signal.h"

#include "io/dir.h"
#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
#include "lora/hyperlora.h"
#include "rng.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct run {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    vkl_app_hyper_task tasks[VKL_APP_HYPER_MAX_TASKS];
    int nt;
    vkl_app_lm_data data[VKL_APP_HYPER_MAX_TASKS];
    int *order[VKL_APP_HYPER_MAX_TASKS]; /* each task's sample order and position in it */
    int pos[VKL_APP_HYPER_MAX_TASKS];
    float *cond;                         /* [nt, D] */
    vkl_lora tmpl;
    vkl_lora_set *set;
    vkl_llama_train *tr;
    vkl_hyperlora *hy;
    int64_t *goff;                       /* offset in o of each trained tensor */
    float *dout;
    int32_t *ids, *labels;
    int *attn;
    FILE *log;
} run;

static void run_free(run *r)
{
    if (r->log) fclose(r->log);
    free(r->ids);
    free(r->labels);
    free(r->attn);
    free(r->dout);
    free(r->goff);
    vkl_hyperlora_free(r->hy);
    vkl_llama_train_free(r->tr);
    vkl_lora_set_free(r->set);
    vkl_lora_free(&r->tmpl);
    free(r->cond);
    for (int i = 0; i < r->nt; i++) {
        vkl_app_lm_data_free(&r->data[i]);
        free(r->order[i]);
    }
    vkl_app_hyper_tasks_free(r->tasks, r->nt);
    vkl_app_lm_tok_free(&r->tok);
    vkl_llama_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}

/* Where each tensor the LM step differentiates sits in the network's output:
 * keys base_model.model.<module>.lora_A.weight / .lora_B.weight. */
static int map_grads(run *r, vkl_err *e)
{
    int np = vkl_llama_train_count(r->tr);
    r->goff = malloc(sizeof(int64_t) * (size_t)np);
    r->dout = malloc(sizeof(float) * (size_t)vkl_hyperlora_outputs(r->hy));
    if (!r->goff || !r->dout) return vkl_fail(e, "out of host memory");
    const char *root = "base_model.model.";
    for (int i = 0; i < np; i++) {
        const char *key = vkl_llama_train_key(r->tr, i);
        r->goff[i] = -1;
        for (int k = 0; k < r->tmpl.n && r->goff[i] < 0; k++)
            for (int role = VKL_LORA_DOWN; role <= VKL_LORA_UP; role++) {
                char want[1024];
                snprintf(want, sizeof want, "%s%s.%s", root, r->tmpl.m[k].name, role == VKL_LORA_DOWN ? "lora_A.weight" : "lora_B.weight");
                if (!strcmp(key, want) &&
                    vkl_tensor_nelem(vkl_llama_train_param(r->tr, i)) ==
                        (int64_t)vkl_lora_tensor_nelem(&r->tmpl.m[k].t[role]))
                    r->goff[i] = vkl_hyperlora_offset(r->hy, k, role);
            }
        if (r->goff[i] < 0) return vkl_fail(e, "trained tensor %s has no place in the hypernetwork's output", key);
    }
    return 0;
}

/* The emitted factors into the adapter set's device tensors. */
static int upload_adapter(run *r, vkl_err *e)
{
    for (int k = 0; k < r->tmpl.n; k++) {
        const vkl_lora_slot *sl = vkl_lora_set_find(r->set, r->tmpl.m[k].name);
        if (!sl) return vkl_fail(e, "module %s has no place in the adapter set", r->tmpl.m[k].name);
        if (vkl_lora_slot_upload(r->c, sl, &r->tmpl.m[k], e)) return -1;
    }
    return 0;
}

/* The next B rows of task k (its samples in a seeded order, reshuffled after each pass). */
static void next_batch(run *r, int k, int B, int L, uint64_t *g)
{
    vkl_app_lm_data *d = &r->data[k];
    for (int b = 0; b < B; b++) {
        if (r->pos[k] == d->n) {
            vkl_shuffle_ints(r->order[k], d->n, g);
            r->pos[k] = 0;
        }
        int s = r->order[k][r->pos[k]++];
        memcpy(r->ids + (size_t)b * L, d->ids + (size_t)s * L, sizeof(int32_t) * (size_t)L);
        memcpy(r->labels + (size_t)b * L, d->labels + (size_t)s * L, sizeof(int32_t) * (size_t)L);
        memcpy(r->attn + (size_t)b * L, d->attn + (size_t)s * L, sizeof(int) * (size_t)L);
    }
}

static char *tasks_json(const run *r)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < r->nt; i++) cJSON_AddItemToArray(a, cJSON_CreateString(r->tasks[i].description));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

static int train(const vkl_app_hyper_args *a, const char *tmp_log, const char *tmp_out, run *r, vkl_err *e)
{
    if (vkl_app_hyper_tasks_load(a->tasks, r->tasks, VKL_APP_HYPER_MAX_TASKS, &r->nt, e)) return -1;
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_dtype wdt = a->weights_given ? a->weights : vkl_app_lm_model_dtype(a->model);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, wdt, &r->m, e) ||
        vkl_app_lm_tok_open(a->model, a->tok, r->m->cfg.vocab, &r->tok, e))
        return -1;
    const vkl_llama_config *cfg = &r->m->cfg;
    int B = a->batch, L = a->seq_len, D = cfg->hidden;
    if (L > cfg->max_pos) return vkl_fail(e, "--seq-len %d exceeds the model's context of %d positions", L, cfg->max_pos);
    r->cond = malloc(sizeof(float) * (size_t)r->nt * D);
    if (!r->cond) return vkl_fail(e, "out of host memory");
    uint64_t g = a->seed ^ 0x68797065726c6full;
    for (int k = 0; k < r->nt; k++) {
        if (vkl_app_lm_data_load(r->tasks[k].data, &r->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0, L, 0,
                                 &r->data[k], e))
            return vkl_err_prefix(e, "%s: ", r->tasks[k].data), -1;
        if (!r->data[k].n) return vkl_fail(e, "%s: no sample", r->tasks[k].data);
        if (!(r->order[k] = malloc(sizeof(int) * (size_t)r->data[k].n))) return vkl_fail(e, "out of host memory");
        for (int i = 0; i < r->data[k].n; i++) r->order[k][i] = i;
        r->pos[k] = r->data[k].n; /* shuffled before the first batch */
        if (vkl_app_hyper_condition(r->m, &r->tok, r->tasks[k].description, r->cond + (size_t)k * D, e))
            return vkl_err_prefix(e, "task %d: ", k + 1), -1;
    }
    vkl_llama_lora_opts lo = {.targets = a->targets, .nt = a->nt, .rank = a->rank, .alpha = a->alpha, .seed = a->seed};
    vkl_lora_use use = {&r->tmpl, 1.0f, 1.0f};
    vkl_llama_train_opts to = {.grad_only = 1};
    vkl_adamw_opts_default(&to.adam);
    if (vkl_llama_lora_init(r->m, &lo, &r->tmpl, e) || vkl_lora_set_build(r->c, &use, 1, &r->set, e) ||
        vkl_llama_train_new(r->m, r->set, NULL, B, L, &to, &r->tr, e) ||
        vkl_hyperlora_new(r->c, &r->tmpl, D, a->hidden, a->seed, &r->hy, e))
        return -1;
    float *mean = malloc(sizeof(float) * (size_t)D), scale;
    if (!mean) return vkl_fail(e, "out of host memory");
    vkl_hyperlora_centre_of(r->cond, r->nt, D, mean, &scale);
    int rc = vkl_hyperlora_set_centre(r->hy, mean, scale, e);
    free(mean);
    vkl_adamw_opts ho;
    vkl_adamw_opts_default(&ho);
    ho.lr = a->lr;
    ho.weight_decay = a->wd;
    ho.max_grad_norm = a->max_grad_norm;
    if (rc || vkl_hyperlora_train_begin(r->hy, &ho, e) || map_grads(r, e)) return -1;
    r->ids = malloc(sizeof(int32_t) * (size_t)B * L);
    r->labels = malloc(sizeof(int32_t) * (size_t)B * L);
    r->attn = malloc(sizeof(int) * (size_t)B * L);
    if (!r->ids || !r->labels || !r->attn) return vkl_fail(e, "out of host memory");
    if (!(r->log = fopen(tmp_log, "w"))) return vkl_fail(e, "cannot create %s: %s", tmp_log, strerror(errno));
    fprintf(r->log, "step,task,loss,lr,seconds\n");
    if (!vkl_app_quiet)
        fprintf(stderr, "lm hyperlora train: %d tasks, %d adapter modules (%lld numbers emitted), hidden %d, %d steps of batch %d\n",
                r->nt, r->tmpl.n, (long long)vkl_hyperlora_outputs(r->hy), a->hidden, a->steps, B);
    int round[VKL_APP_HYPER_MAX_TASKS];
    double sum[VKL_APP_HYPER_MAX_TASKS] = {0};
    int cnt[VKL_APP_HYPER_MAX_TASKS] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int np = vkl_llama_train_count(r->tr), every = a->steps >= 20 ? a->steps / 10 : 1;
    for (int t = 1; t <= a->steps; t++) {
        int j = (t - 1) % r->nt;
        if (!j) {
            for (int i = 0; i < r->nt; i++) round[i] = i;
            vkl_shuffle_ints(round, r->nt, &g);
        }
        int k = round[j];
        const float *cond = r->cond + (size_t)k * D;
        if (vkl_app_stop_check(e)) return -1;
        next_batch(r, k, B, L, &g);
        float loss;
        if (vkl_hyperlora_emit(r->hy, cond, NULL, &r->tmpl, e) || upload_adapter(r, e) ||
            vkl_llama_train_step(r->tr, r->ids, r->labels, r->attn, t, 0.0f, &loss, e))
            return vkl_err_prefix(e, "step %d: ", t), -1;
        for (int i = 0; i < np; i++)
            if (vkl_tensor_download(r->c, vkl_llama_train_grad(r->tr, i), r->dout + r->goff[i], VKL_F32, e)) return -1;
        if (vkl_hyperlora_train_step(r->hy, cond, r->dout, t, a->lr, e)) return vkl_err_prefix(e, "step %d: ", t), -1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        fprintf(r->log, "%d,%d,%.6f,%g,%.3f\n", t, k + 1, (double)loss, (double)a->lr, sec);
        sum[k] += loss;
        cnt[k]++;
        if (!vkl_app_quiet && (t % every == 0 || t == a->steps)) {
            fprintf(stderr, "step %d/%d  mean loss per task since last report:", t, a->steps);
            for (int i = 0; i < r->nt; i++) {
                if (cnt[i]) fprintf(stderr, " %d: %.4f", i + 1, sum[i] / cnt[i]);
                sum[i] = 0;
                cnt[i] = 0;
            }
            fprintf(stderr, "  (%.2f s/step)\n", sec / t);
        }
    }
    if (fclose(r->log)) {
        r->log = NULL;
        return vkl_fail(e, "cannot write %s", tmp_log);
    }
    r->log = NULL;
    vkl_hyperlora_meta meta = {.rank = a->rank, .alpha = a->alpha, .hidden = a->hidden, .cond_dim = D};
    snprintf(meta.targets, sizeof meta.targets, "%s", a->targets_list);
    snprintf(meta.base, sizeof meta.base, "%s", a->model);
    char *tj = tasks_json(r);
    if (!tj) return vkl_fail(e, "out of host memory");
    rc = vkl_hyperlora_save(r->hy, &meta, "tasks", tj, tmp_out, e);
    free(tj);
    return rc;
}

int vkl_app_hyper_train(const vkl_app_hyper_args *a)
{
    if (vkl_app_out_file_refuse("lm hyperlora train", a->out, a->force)) return 1;
    vkl_err e = {{0}};
    char tmp_out[4300], tmp_log[4300];
    snprintf(tmp_out, sizeof tmp_out, "%s.tmp-%ld", a->out, (long)getpid());
    snprintf(tmp_log, sizeof tmp_log, "%s.tmp-%ld", a->log, (long)getpid());
    run r;
    memset(&r, 0, sizeof r);
    vkl_app_stop_catch(); /* a signal stops the run after its step, leaving nothing behind */
    int rc = train(a, tmp_log, tmp_out, &r, &e);
    vkl_app_stop_restore();
    run_free(&r);
    if (!rc && (vkl_rename_durable(tmp_log, a->log) || vkl_rename_durable(tmp_out, a->out)))
        rc = vkl_fail(&e, "cannot rename the outputs into place (%s, %s): %s", a->out, a->log, strerror(errno));
    if (rc) {
        unlink(tmp_out);
        unlink(tmp_log);
        vkl_app_print_error("lm hyperlora train", e.msg);
        return vkl_app_stop_requested() ? 130 : 1;
    }
    if (!vkl_app_quiet) fprintf(stderr, "lm hyperlora train: wrote %s and %s\n", a->out, a->log);
    return 0;
}
