/* vklora lm hyperlora train (research option): trains a HyperLoRA network
 * (lora/hyperlora.h) on several tasks, each a description and lm train's
 * data, through the shared loop of hyperlora_runner.c. The family's part: a
 * description's condition is the language model's mean hidden state; a step
 * is a LoRA training step of the model on a batch of the task's data with
 * gradients only (the adapter is not updated). */
#include "lm_hyperlora_cmd.h"

#include "hyperlora_runner.h"
#include "lm_data.h"
#include "lm_gen_args.h"

#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

typedef struct lm_run {
    const vkl_app_hyper_args *a;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    int nt;
    vkl_app_lm_data data[VKL_APP_HYPER_MAX_TASKS];
    int *order[VKL_APP_HYPER_MAX_TASKS]; /* each task's sample order and position in it */
    int pos[VKL_APP_HYPER_MAX_TASKS];
    vkl_llama_train *tr;
    int32_t *ids, *labels;
    int *attn;
} lm_run;

static void lm_free(void *self)
{
    lm_run *l = self;
    free(l->ids);
    free(l->labels);
    free(l->attn);
    vkl_llama_train_free(l->tr);
    for (int i = 0; i < l->nt; i++) {
        vkl_app_lm_data_free(&l->data[i]);
        free(l->order[i]);
    }
    vkl_app_lm_tok_free(&l->tok);
    vkl_llama_free(l->m);
}

static int lm_setup(void *self, vkl_app_hyper_run *r, vkl_err *e)
{
    lm_run *l = self;
    const vkl_app_hyper_args *a = l->a;
    if (vkl_app_hyper_tasks_load(a->tasks, r->tasks, VKL_APP_HYPER_MAX_TASKS, &r->nt, e)) return -1;
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_dtype wdt = a->weights_given ? a->weights : vkl_app_lm_model_dtype(a->model);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, wdt, &l->m, e) ||
        vkl_app_lm_tok_open(a->model, a->tok, l->m->cfg.vocab, &l->tok, e))
        return -1;
    const vkl_llama_config *cfg = &l->m->cfg;
    int B = a->batch, L = a->seq_len;
    r->D = cfg->hidden;
    if (L > cfg->max_pos) return vkl_fail(e, "--seq-len %d exceeds the model's context of %d positions", L, cfg->max_pos);
    if (!(r->cond = malloc(sizeof(float) * (size_t)r->nt * r->D))) return vkl_fail(e, "out of host memory");
    l->nt = r->nt; /* what lm_free releases: entries not reached yet are zero */
    for (int k = 0; k < r->nt; k++) {
        if (vkl_app_lm_data_load(r->tasks[k].data, &l->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0, L, 0,
                                 &l->data[k], e))
            return vkl_err_prefix(e, "%s: ", r->tasks[k].data), -1;
        if (!l->data[k].n) return vkl_fail(e, "%s: no sample", r->tasks[k].data);
        if (!(l->order[k] = malloc(sizeof(int) * (size_t)l->data[k].n))) return vkl_fail(e, "out of host memory");
        for (int i = 0; i < l->data[k].n; i++) l->order[k][i] = i;
        l->pos[k] = l->data[k].n; /* shuffled before the first batch */
        if (vkl_app_hyper_condition(l->m, &l->tok, r->tasks[k].description, r->cond + (size_t)k * r->D, e))
            return vkl_err_prefix(e, "task %d: ", k + 1), -1;
    }
    vkl_llama_lora_opts lo = {.targets = a->targets, .nt = a->nt, .rank = a->rank, .alpha = a->alpha, .seed = a->seed};
    vkl_lora_use use = {&r->tmpl, 1.0f, 1.0f};
    vkl_llama_train_opts to = {.grad_only = 1};
    vkl_adamw_opts_default(&to.adam);
    if (vkl_llama_lora_init(l->m, &lo, &r->tmpl, e) || vkl_lora_set_build(r->c, &use, 1, &r->set, e) ||
        vkl_llama_train_new(l->m, r->set, NULL, B, L, &to, &l->tr, e))
        return -1;
    l->ids = malloc(sizeof(int32_t) * (size_t)B * L);
    l->labels = malloc(sizeof(int32_t) * (size_t)B * L);
    l->attn = malloc(sizeof(int) * (size_t)B * L);
    if (!l->ids || !l->labels || !l->attn) return vkl_fail(e, "out of host memory");
    return 0;
}

static int lm_param_count(void *self)
{
    return vkl_llama_train_count(((lm_run *)self)->tr);
}

/* keys base_model.model.<module>.lora_A.weight / .lora_B.weight */
static void lm_param(void *self, int i, const char **name, const vkl_tensor **value, const vkl_tensor **grad)
{
    const vkl_llama_train *tr = ((lm_run *)self)->tr;
    *name = vkl_llama_train_key(tr, i);
    *value = vkl_llama_train_param(tr, i);
    *grad = vkl_llama_train_grad(tr, i);
}

/* The next B rows of task k (its samples in a seeded order, reshuffled after each pass), then the step. */
static int lm_step(void *self, vkl_app_hyper_run *r, int k, int t, uint64_t *g, float *loss, vkl_err *e)
{
    (void)r;
    lm_run *l = self;
    vkl_app_lm_data *d = &l->data[k];
    int B = l->a->batch, L = l->a->seq_len;
    for (int b = 0; b < B; b++) {
        if (l->pos[k] == d->n) {
            vkl_shuffle_ints(l->order[k], d->n, g);
            l->pos[k] = 0;
        }
        int s = l->order[k][l->pos[k]++];
        memcpy(l->ids + (size_t)b * L, d->ids + (size_t)s * L, sizeof(int32_t) * (size_t)L);
        memcpy(l->labels + (size_t)b * L, d->labels + (size_t)s * L, sizeof(int32_t) * (size_t)L);
        memcpy(l->attn + (size_t)b * L, d->attn + (size_t)s * L, sizeof(int) * (size_t)L);
    }
    return vkl_llama_train_step(l->tr, l->ids, l->labels, l->attn, t, 0.0f, loss, e);
}

int vkl_app_hyper_train(const vkl_app_hyper_args *a)
{
    lm_run l;
    memset(&l, 0, sizeof l);
    l.a = a;
    const vkl_app_hyper_family f = {
        .cmd = "lm hyperlora train",
        .targets = a->targets_list,
        .key_prefix = "base_model.model.",
        .key_suffix = {".lora_A.weight", ".lora_B.weight"},
        .self = &l,
        .setup = lm_setup,
        .param_count = lm_param_count,
        .param = lm_param,
        .step = lm_step,
        .free = lm_free,
    };
    const vkl_app_hyper_train_opts o = {
        .model = a->model, .out = a->out, .log = a->log, .rank = a->rank, .hidden = a->hidden, .steps = a->steps,
        .batch = a->batch, .force = a->force, .alpha = a->alpha, .lr = a->lr, .wd = a->wd,
        .max_grad_norm = a->max_grad_norm, .seed = a->seed,
    };
    return vkl_app_hyper_train_run(&f, &o);
}
