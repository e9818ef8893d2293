/* Opening lm train's run (lm_train_internal.h): the model and data, the
 * adapter, the trainer and its logs, the --resume state, held-out scoring. */
#include "lm_train_internal.h"

#include "app.h"
#include "lm_adalora_args.h"
#include "lm_gen_args.h"
#include "peft_config.h"
#include "rng.h"

#include "llama/llama_lora_init.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *vkl_app_lm_net_name(int n)
{
    return n == NET_IA3 ? "ia3" : n == NET_DORA ? "dora" : n == NET_ADALORA ? "adalora" : n == NET_DYLORA ? "dylora" : "lora";
}

/* Moves ceil(fraction * n) rows, picked by a permutation drawn from seed,
 * out of d into val (at least one row stays on each side). */
static int hold_out(vkl_app_lm_data *d, vkl_app_lm_data *val, float fraction, uint64_t seed, vkl_err *e)
{
    int n = d->n, nv = (int)ceil(fraction * n), L = d->L;
    if (nv >= n) nv = n - 1;
    if (nv < 1) return vkl_fail(e, "--val-fraction %g of %d samples leaves no sample on one side", fraction, n);
    int *perm = malloc(sizeof(int) * (size_t)n);
    unsigned char *is_val = calloc((size_t)n, 1);
    size_t sz = (size_t)nv * L;
    *val = (vkl_app_lm_data){.n = nv, .L = L, .ids = malloc(sizeof(int32_t) * sz), .labels = malloc(sizeof(int32_t) * sz),
                             .attn = malloc(sizeof(int) * sz)};
    if (!perm || !is_val || !val->ids || !val->labels || !val->attn) {
        free(perm);
        free(is_val);
        return vkl_fail(e, "out of host memory");
    }
    uint64_t rng = seed ^ 0x686f6c646f7574ull;
    for (int i = 0; i < n; i++) perm[i] = i;
    vkl_shuffle_ints(perm, n, &rng);
    for (int i = 0; i < nv; i++) is_val[perm[i]] = 1;
    int kv = 0, kt = 0;
    for (int i = 0; i < n; i++) {
        size_t src = (size_t)i * L;
        vkl_app_lm_data *to = is_val[i] ? val : d;
        size_t dst = (size_t)(is_val[i] ? kv++ : kt++) * L;
        memmove(to->ids + dst, d->ids + src, sizeof(int32_t) * L);
        memmove(to->labels + dst, d->labels + src, sizeof(int32_t) * L);
        memmove(to->attn + dst, d->attn + src, sizeof(int) * L);
    }
    d->n = kt;
    d->tokens = 0;
    for (size_t i = 0; i < (size_t)kt * L; i++) d->tokens += d->attn[i];
    for (size_t i = 0; i < sz; i++) val->tokens += val->attn[i];
    free(perm);
    free(is_val);
    return 0;
}

/* What a resumed run must share with the saved one (not its length). */
static char *options_json(const vkl_app_lm_train_args *a)
{
    cJSON *j = cJSON_CreateObject();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->seed);
    cJSON_AddStringToObject(j, "model", a->model);
    cJSON_AddStringToObject(j, "data", a->data);
    cJSON_AddStringToObject(j, "network", vkl_app_lm_net_name(a->net));
    if (a->net == NET_DYLORA) cJSON_AddNumberToObject(j, "dylora_unit", a->unit);
    cJSON_AddItemToObject(j, "targets", vkl_app_json_strings(a->targets, a->nt));
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "rank", a->rank);
    cJSON_AddNumberToObject(j, "alpha", a->alpha);
    cJSON_AddNumberToObject(j, "rslora", a->rslora);
    cJSON_AddNumberToObject(j, "loraplus", a->loraplus);
    cJSON_AddNumberToObject(j, "batch", a->batch);
    cJSON_AddNumberToObject(j, "seq_len", a->seq_len);
    /* not --grad-accum: ranks x grad-accum is what must stay (the state's split) */
    cJSON_AddNumberToObject(j, "packing", a->packing);
    cJSON_AddNumberToObject(j, "lr", a->lr);
    cJSON_AddNumberToObject(j, "weight_decay", a->wd);
    cJSON_AddNumberToObject(j, "max_grad_norm", a->max_grad_norm);
    cJSON_AddNumberToObject(j, "schedule", (double)a->sched);
    cJSON_AddNumberToObject(j, "warmup", a->warmup);
    cJSON_AddNumberToObject(j, "val_fraction", a->val_fraction);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int build_adapter(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, vkl_err *e)
{
    vkl_lora_use use = {&r->l, 1.0f, 1.0f};
    if (a->net == NET_ADALORA) return 0; /* built once the run's length (its total_step) is known */
    if (a->net == NET_IA3)
        return vkl_llama_ia3_init(r->m, a->targets, a->nt, a->ff, a->nf, &r->l, e) ||
               vkl_llama_ia3_build(r->m, &use, 1, &r->ia3, e);
    vkl_llama_lora_opts o = {.targets = a->targets, .nt = a->nt, .rank = a->rank, .alpha = a->alpha,
                             .rslora = a->rslora, .dora = a->net == NET_DORA, .seed = a->seed};
    if (vkl_llama_lora_init(r->m, &o, &r->l, e)) return -1;
    if (a->net == NET_DYLORA)
        return vkl_dylora_mark(&r->l, a->unit, a->rank, a->alpha, e) || vkl_lora_set_build(r->c, &use, 1, &r->set, e) ||
                       vkl_dylora_new(r->c, r->set, &r->l, a->unit, a->seed, &r->dy, e)
                   ? -1
                   : 0;
    return a->net == NET_DORA ? vkl_llama_dora_build(r->m, &r->l, 1.0f, &r->dora, e)
                              : vkl_lora_set_build(r->c, &use, 1, &r->set, e);
}

/* The model, its tokenizer, the data (and held-out data) and the adapter. */
static int open_model_data(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, vkl_err *e)
{
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_dtype wdt = a->weights_given ? a->weights : vkl_app_lm_model_dtype(a->model);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, wdt, &r->m, e) ||
        vkl_app_lm_tok_open(a->model, a->tok, r->m->cfg.vocab, &r->tok, e))
        return -1;
    if (r->dist && !a->quiet && !vkl_app_quiet) { /* which device each rank drives */
        const char *how = vkl_app_device_choice();
        fprintf(stderr, "lm train: rank %d of %d (local %d): %s%s%s%s\n", r->R, r->P, r->dist->local_rank,
                vkl_ctx_caps(r->c)->name, *how ? " (" : "", how, *how ? ")" : "");
    }
    const vkl_llama_config *cfg = &r->m->cfg;
    if (a->chat && vkl_chat_from_name(a->chat, &r->tok.chat, e)) return -1;
    if (vkl_app_lm_data_load(a->data, &r->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0, a->seq_len, a->packing,
                             &r->data, e))
        return -1;
    if (a->val_data && vkl_app_lm_data_load(a->val_data, &r->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0,
                                            a->seq_len, a->packing, &r->val, e))
        return -1;
    if (a->val_fraction > 0 && hold_out(&r->data, &r->val, a->val_fraction, a->seed, e)) return -1;
    return build_adapter(a, r, e);
}

/* The run's length, the AdaLoRA schedule it sets, the trainer, the batch
 * buffers and the loss log (rank 0's). */
static int open_trainer(const vkl_app_lm_train_args *a, const char *tmp, vkl_app_lm_run *r, vkl_err *e)
{
    int B = a->batch, L = a->seq_len, n = r->data.n, N = a->grad_accum, GB = r->P * N * B;
    int per_epoch = (n + GB - 1) / GB;
    long long want = a->steps ? a->steps : (long long)(a->epochs ? a->epochs : 1) * per_epoch;
    if (want > 100000000) return vkl_fail(e, "%lld steps (%d per epoch): more than 100000000", want, per_epoch);
    r->total = (int)want;
    r->GB = GB;
    if (a->net == NET_ADALORA) {
        vkl_adalora_config ac = a->ada;
        if (!ac.total_step) ac.total_step = r->total;
        if (vkl_llama_adalora_init(r->m, &ac, a->targets, a->nt, a->seed, &r->ada, e) ||
            vkl_llama_adalora_alloc_new(r->ada, &r->alloc, e))
            return -1;
    }
    vkl_llama_train_opts to = {.loraplus_ratio = a->loraplus, .ia3 = r->ia3, .adalora = r->ada, .grad_accum = N,
                               .dist = r->dist, .dylora = r->dy};
    vkl_adamw_opts_default(&to.adam);
    to.adam.lr = a->lr;
    to.adam.weight_decay = a->wd;
    to.adam.max_grad_norm = a->max_grad_norm;
    if (vkl_llama_train_new(r->m, r->set, r->dora, B, L, &to, &r->tr, e)) return -1;
    if ((size_t)snprintf(r->log_path, sizeof r->log_path, "%s/train_log.csv", tmp) >= sizeof r->log_path)
        return vkl_fail(e, "path too long: %s", tmp);
    r->log = r->R ? NULL : fopen(r->log_path, "w");
    size_t bl = (size_t)GB * L;
    r->ids = malloc(sizeof(int32_t) * bl);
    r->labels = malloc(sizeof(int32_t) * bl);
    r->attn = malloc(sizeof(int) * bl);
    r->order = malloc(sizeof(int) * (size_t)n);
    if (!r->R && !r->log) return vkl_fail(e, "cannot create %s", r->log_path);
    if (!r->ids || !r->labels || !r->attn || !r->order) return vkl_fail(e, "out of host memory");
    /* the columns of vklora train's log */
    if (r->log) fprintf(r->log, "step,epoch,loss,lr,grad_norm,skipped,seconds\n");
    if (!a->quiet && !r->R) {
        char split[96] = "";
        if (GB != B) snprintf(split, sizeof split, " (batch %d x gradient accumulation %d x %d ranks)", B, N, r->P);
        fprintf(stderr, "lm train: %s, %d modules, %d samples of %d tokens (%lld real), %d steps of batch %d%s\n",
                a->net == NET_IA3       ? "IA3"
                : a->net == NET_DORA    ? "DoRA"
                : a->net == NET_ADALORA ? "AdaLoRA"
                : a->net == NET_DYLORA  ? "DyLoRA"
                                        : "LoRA",
                r->ada ? r->ada->n : r->l.n, n, L, r->data.tokens, r->total, GB, split);
    }
    return 0;
}

/* The options a resume must find again, and with --resume the saved state:
 * the trained tensors, the data order and position, the log's rows so far.
 * 2: the state is the last step's and the output is written (nothing to do). */
static int open_state(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, vkl_err *e)
{
    int n = r->data.n;
    r->rng = a->seed ^ 0x6c6d747261696eull;
    r->pos = n, r->epoch = -1, r->start = 1; /* pos n: reshuffle first */
    char *opts = options_json(a);
    snprintf(r->statedir, sizeof r->statedir, "%s.state", a->out);
    r->ls = (vkl_app_lm_state){.n = n, .order = r->order, .ranks = r->P, .grad_accum = a->grad_accum};
    if (r->ada && opts) { /* a resume must also find the same AdaLoRA schedule */
        char *o2 = vkl_app_adalora_options(opts, &r->ada->cfg);
        free(opts);
        opts = o2;
        r->ls.n_extra = vkl_adalora_alloc_state_size(r->alloc);
        r->ls.extra = r->ada_state = malloc(sizeof(float) * r->ls.n_extra);
        if (!r->ls.extra) return free(opts), vkl_fail(e, "out of host memory");
    }
    r->opts = opts;
    if (!opts) return vkl_fail(e, "out of host memory");
    if (!a->resume) return 0;
    vkl_app_lm_state *ls = &r->ls;
    if (vkl_app_lm_state_load(r->statedir, r->c, r->tr, ls, opts, r->log, e) ||
        (r->alloc && vkl_adalora_alloc_state_set(r->alloc, r->ada_state, e)))
        return -1;
    r->start = ls->step + 1;
    if (r->dy) vkl_dylora_skip(r->dy, ls->step); /* the ranks the saved steps drew */
    r->epoch = ls->epoch;
    r->pos = ls->pos;
    r->rng = ls->rng;
    if (r->start > r->total) {
        /* a run killed after its last state but before its output was
         * written: write it now from the state; with the output there,
         * there is nothing to do */
        char done[4300];
        struct stat sd;
        snprintf(done, sizeof done, "%s/adapter_model.safetensors", a->out);
        if (!stat(done, &sd)) {
            if (!a->quiet && !r->R)
                fprintf(stderr, "lm train: %s is at step %d of %d and %s is written: nothing to do\n", r->statedir,
                        ls->step, r->total, a->out);
            return 2;
        }
    }
    if (!a->quiet && !r->R)
        fprintf(stderr, "lm train: resuming from step %d of %d (%s)%s\n", ls->step, r->total, r->statedir,
                r->start > r->total ? ": writing the adapter" : "");
    return 0;
}

/* Held-out scores (rank 0's, as its files): eval_log.csv, and the score
 * before training when the run starts at step 1. */
static int open_eval(const vkl_app_lm_train_args *a, const char *tmp, vkl_app_lm_run *r, vkl_err *e)
{
    if (!r->val.n || r->R) return 0;
    if ((size_t)snprintf(r->eval_path, sizeof r->eval_path, "%s/eval_log.csv", tmp) >= sizeof r->eval_path)
        return vkl_fail(e, "path too long: %s", tmp);
    if (!(r->elog = fopen(r->eval_path, "w"))) return vkl_fail(e, "cannot create %s", r->eval_path);
    fprintf(r->elog, "step,loss,perplexity,tokens\n");
    return vkl_app_lm_eval_new_ada(r->m, r->set, r->dora, r->ia3, r->ada, a->seq_len, &r->ev, e) ||
                   (r->start == 1 && vkl_app_lm_evaluate(a, r, 0, e))
               ? -1
               : 0;
}

int vkl_app_lm_run_open(const vkl_app_lm_train_args *a, const char *tmp, vkl_app_lm_run *r, vkl_err *e)
{
    /* P ranks share every step: the global batch is P x N micro-batches of B
     * rows, this rank's the R-th group of N */
    r->dist = vkl_dist_active(vkl_app_dist) ? vkl_app_dist : NULL;
    r->P = r->dist ? r->dist->size : 1;
    r->R = r->dist ? r->dist->rank : 0;
    int rc = open_model_data(a, r, e) || open_trainer(a, tmp, r, e) ? -1 : open_state(a, r, e);
    if (rc) return rc;
    r->t0 = vkl_progress_now();
    return open_eval(a, tmp, r, e);
}

void vkl_app_lm_run_free(vkl_app_lm_run *r)
{
    if (r->log) fclose(r->log);
    if (r->elog) fclose(r->elog);
    free(r->opts);
    vkl_app_lm_eval_free(r->ev);
    vkl_app_lm_data_free(&r->val);
    free(r->ids);
    free(r->labels);
    free(r->attn);
    free(r->order);
    vkl_llama_train_free(r->tr);
    vkl_dylora_free(r->dy);
    vkl_lora_set_free(r->set);
    vkl_llama_dora_free(r->dora);
    vkl_llama_ia3_free(r->ia3);
    vkl_llama_adalora_free(r->ada);
    vkl_adalora_alloc_free(r->alloc);
    free(r->ada_state);
    vkl_lora_free(&r->l);
    vkl_app_lm_data_free(&r->data);
    vkl_app_lm_tok_free(&r->tok);
    vkl_llama_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}
