/* lm train's steps (lm_train_run.h): the batch of each step in the seeded
 * order, the forward and backward passes over this rank's micro-batches,
 * the loss log, the states, the held-out scores, and the adapter written
 * after the last step. */
#include "lm_train_run.h"
#include "lm_train_internal.h"

#include "app.h"
#include "peft_config.h"
#include "rng.h"
#include "stop_signal.h"

#include "llama/llama_gguf.h"
#include "llama/llama_lora_gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* HF transformers' schedules with warmup (get_*_schedule_with_warmup), s = 0-based step. */
static float lr_at(const vkl_app_lm_train_args *a, int s, int total)
{
    if (s < a->warmup) return a->lr * (float)s / (float)a->warmup;
    if (a->sched == SCHED_CONSTANT) return a->lr;
    double span = total - a->warmup, p = span > 0 ? (s - a->warmup) / span : 1;
    if (a->sched == SCHED_LINEAR) return a->lr * (float)fmax(0.0, 1.0 - p);
    return a->lr * (float)(0.5 * (1.0 + cos(3.14159265358979323846 * p)));
}

/* Tokens whose next token is predicted (a label after it that is not -100)
 * in rows [from, to) of a batch: what the mean loss divides by. */
static long long predicted(const int32_t *labels, int from, int to, int L)
{
    long long n = 0;
    for (int b = from; b < to; b++)
        for (int t = 1; t < L; t++) n += labels[(size_t)b * L + t] != VKL_LLAMA_IGNORE;
    return n;
}

/* Copies the trained tensors into the host adapter by their PEFT keys. */
static int store(vkl_ctx *c, const vkl_llama_train *s, vkl_lora *l, vkl_err *e)
{
    static const struct {
        const char *suffix;
        vkl_lora_role role;
    } parts[] = {{".lora_A.weight", VKL_LORA_DOWN}, {".lora_B.weight", VKL_LORA_UP},
                 {".lora_magnitude_vector", VKL_LORA_MAG}, {".ia3_l", VKL_LORA_IA3}};
    const char *root = "base_model.model.";
    for (int i = 0; i < vkl_llama_train_count(s); i++) {
        const char *key = vkl_llama_train_key(s, i);
        char name[512];
        int role = -1;
        size_t kl = strlen(key);
        for (size_t k = 0; k < sizeof parts / sizeof *parts && role < 0; k++) {
            size_t sl = strlen(parts[k].suffix);
            if (kl > sl + strlen(root) && !strcmp(key + kl - sl, parts[k].suffix) && kl - sl - strlen(root) < sizeof name) {
                memcpy(name, key + strlen(root), kl - sl - strlen(root));
                name[kl - sl - strlen(root)] = 0;
                role = (int)parts[k].role;
            }
        }
        vkl_lora_module *mo = NULL;
        for (int k = 0; role >= 0 && k < l->n && !mo; k++)
            if (!strcmp(l->m[k].name, name)) mo = &l->m[k];
        vkl_tensor *t = vkl_llama_train_param(s, i);
        if (!mo || !mo->t[role].data || (int64_t)vkl_lora_tensor_nelem(&mo->t[role]) != vkl_tensor_nelem(t))
            return vkl_fail(e, "trained tensor %s has no place of %lld elements in the adapter", key,
                            (long long)vkl_tensor_nelem(t));
        if (vkl_tensor_download(c, t, mo->t[role].data, VKL_F32, e)) return vkl_err_prefix(e, "%s: ", key), -1;
    }
    return 0;
}


int vkl_app_lm_evaluate(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, int step, vkl_err *e)
{
    double loss;
    long long tokens;
    /* a DyLoRA adapter is scored at its full rank, not the last step's draw */
    if (r->dy && vkl_dylora_full(r->dy, e)) return -1;
    if (vkl_app_lm_eval_run(r->ev, &r->val, &loss, &tokens, e)) return vkl_err_prefix(e, "held-out loss: "), -1;
    fprintf(r->elog, "%d,%.7g,%.7g,%lld\n", step, loss, exp(loss), tokens);
    fflush(r->elog);
    if (!a->quiet && !vkl_app_quiet)
        fprintf(stderr, "lm train: step %d held-out loss %.4f, perplexity %.3f (%lld tokens)\n", step, loss, exp(loss),
                tokens);
    return 0;
}

/* The step's P x N x B rows in the seeded order, reshuffled at each epoch. */
static void next_batch(const vkl_app_lm_train_args *a, vkl_app_lm_run *r)
{
    int n = r->data.n, L = a->seq_len;
    for (int b = 0; b < r->GB; b++) {
        if (r->pos == n) {
            r->epoch++;
            for (int i = 0; i < n; i++) r->order[i] = i;
            vkl_shuffle_ints(r->order, n, &r->rng);
            r->pos = 0;
        }
        size_t src = (size_t)r->order[r->pos++] * L, dst = (size_t)b * L;
        memcpy(r->ids + dst, r->data.ids + src, sizeof(int32_t) * L);
        memcpy(r->labels + dst, r->data.labels + src, sizeof(int32_t) * L);
        memcpy(r->attn + dst, r->data.attn + src, sizeof(int) * L);
    }
}

/* The forward and backward passes of step t on this rank's micro-batches;
 * the step's loss over the global batch. */
static int forward_backward(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, int t, float lr, float *loss, vkl_err *e)
{
    int B = a->batch, L = a->seq_len, N = a->grad_accum;
    if (N == 1 && !r->dist) return vkl_llama_train_step(r->tr, r->ids, r->labels, r->attn, t, lr, loss, e);
    /* each micro-batch's gradient counts by its share of the step's
     * predicted tokens: the sum is the gradient of the global mean */
    long long all = predicted(r->labels, 0, r->GB, L);
    double l = 0;
    for (int m = r->R * N; m < r->R * N + N; m++) {
        long long own = predicted(r->labels, m * B, m * B + B, L);
        if (!own) continue; /* nothing to predict: no gradient (its mean would be 0/0) */
        float w = (float)((double)own / (double)all), lm;
        size_t at = (size_t)m * B * L;
        if (vkl_llama_train_accumulate(r->tr, r->ids + at, r->labels + at, r->attn + at, w, &lm, e)) return -1;
        l += (double)w * lm;
    }
    if (vkl_dist_sum_f64(r->dist, &l, 1, e) || vkl_llama_train_update(r->tr, t, lr, e)) return -1;
    *loss = (float)l;
    return 0;
}

typedef struct step_report {
    float loss, lr, grad_norm;
    int skipped;
} step_report;

/* One optimiser step, t (1-based), on every rank; a signal on any rank
 * stops every rank before the same step. */
static int train_step(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, int t, step_report *s, vkl_err *e)
{
    int stop = vkl_app_stop_requested();
    if (vkl_dist_any(r->dist, stop, &stop, e)) return -1;
    if (stop) {
        vkl_app_stop_request();
        return vkl_fail(e, "interrupted before step %d; nothing written", t);
    }
    next_batch(a, r);
    *s = (step_report){.lr = lr_at(a, t - 1, r->total)};
    if (r->dy && vkl_dylora_draw(r->dy, e)) return vkl_err_prefix(e, "step %d: ", t), -1;
    if (forward_backward(a, r, t, s->lr, &s->loss, e)) return vkl_err_prefix(e, "step %d: ", t), -1;
    if (!isfinite(s->loss)) return vkl_fail(e, "step %d: the loss is %g; try a lower --lr", t, s->loss);
    int budget = 0;
    if (vkl_adamw_result(vkl_llama_train_optimizer(r->tr), &s->grad_norm, &s->skipped, e)) return -1;
    /* PEFT's update_and_allocate after the optimiser step, on the gradient as clipped; every
     * rank holds the same summed gradient and parameters, so every rank masks the same ranks */
    if (r->ada && vkl_llama_adalora_allocate(r->ada, r->alloc, r->tr, t,
                                             vkl_llama_adalora_clip_factor(a->max_grad_norm, s->grad_norm), &budget, e))
        return vkl_err_prefix(e, "step %d: ", t), -1;
    double same[2] = {s->skipped, s->grad_norm};
    return vkl_dist_check_same(r->dist, same, 2, "the gradient norm and NaN skip of a step", e);
}

/* Step t's row of train_log.csv (rank 0's) and the progress line. */
static void log_step(vkl_app_lm_run *r, int t, const step_report *s)
{
    if (r->log)
        fprintf(r->log, "%d,%d,%.7g,%.7g,%.7g,%d,%.3f\n", t, r->epoch, s->loss, s->lr, s->grad_norm, s->skipped,
                vkl_progress_now() - r->t0);
    char extra[64];
    snprintf(extra, sizeof extra, "loss %.4f lr %.3g", s->loss, s->lr);
    vkl_progress_update(&r->bar, t, extra);
}

/* The state after step t (NAME.state, what --resume reads); rank 0 alone writes. */
static int checkpoint(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, int t, vkl_err *e)
{
    if (r->R) return 0;
    r->ls = (vkl_app_lm_state){t, r->epoch, r->pos, r->data.n, r->P, a->grad_accum, r->rng, r->order,
                               r->ada_state, r->ls.n_extra};
    if (r->alloc) vkl_adalora_alloc_state_get(r->alloc, r->ada_state);
    if (fflush(r->log)) return vkl_fail(e, "cannot write %s", r->log_path);
    return vkl_app_lm_state_save(r->statedir, r->c, r->tr, &r->ls, r->opts, r->log_path, e);
}

/* After the last step: the logs closed, and rank 0 writes the adapter
 * (PEFT, and with --format gguf llama.cpp's file too) into tmp. */
static int finish(const vkl_app_lm_train_args *a, const char *tmp, vkl_app_lm_run *r, vkl_err *e)
{
    if (r->elog) {
        int bad = ferror(r->elog);
        bad |= fclose(r->elog) != 0;
        r->elog = NULL;
        if (bad) return vkl_fail(e, "cannot write %s", r->eval_path);
    }
    if (r->R) return 0; /* rank 0 writes the adapter */
    int bad_log = ferror(r->log);
    bad_log |= fclose(r->log) != 0;
    r->log = NULL;
    if (bad_log) return vkl_fail(e, "cannot write %s", r->log_path);
    char st[4200], cj[4200];
    if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.safetensors", tmp) >= sizeof st ||
        (size_t)snprintf(cj, sizeof cj, "%s/adapter_config.json", tmp) >= sizeof cj)
        return vkl_fail(e, "path too long: %s", tmp);
    if (r->ada) {
        if (!a->quiet)
            fprintf(stderr, "lm train: AdaLoRA total rank %d (target %d = %d x %d modules)\n",
                    vkl_adalora_alloc_total_rank(r->alloc), a->ada.target_r * r->ada->n, a->ada.target_r, r->ada->n);
        if (vkl_llama_adalora_save(r->ada, r->alloc, a->targets, a->nt, a->model, st, cj, e)) return -1;
        if (!a->gguf) return 0;
        /* llama.cpp has no AdaLoRA: the LoRA the folder reads as (down = A * E) */
        vkl_lora fold;
        if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.gguf", tmp) >= sizeof st)
            return vkl_fail(e, "path too long: %s", tmp);
        if ((size_t)snprintf(cj, sizeof cj, "%s/adapter_model.safetensors", tmp) >= sizeof cj ||
            vkl_lora_load(cj, NULL, &fold, e))
            return -1;
        int grc = vkl_llama_lora_save_gguf(&r->m->cfg, &fold, st, e);
        vkl_lora_free(&fold);
        return grc;
    }
    if (r->ia3 ? vkl_llama_ia3_store(r->m, r->ia3, &r->l, e) : store(r->c, r->tr, &r->l, e)) return -1;
    if (vkl_lora_save_peft(&r->l, st, cj, e) ||
        vkl_app_peft_finish_config(cj, a->model, a->targets, a->nt, a->net == NET_IA3 ? a->ff : NULL, a->nf, e))
        return -1;
    if (!a->gguf) return 0;
    if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.gguf", tmp) >= sizeof st) return vkl_fail(e, "path too long: %s", tmp);
    return vkl_llama_lora_save_gguf(&r->m->cfg, &r->l, st, e);
}

/* The run in its parts: open, then per step the step, its log row, the
 * state on a --save-every step and the held-out score on an --eval-every
 * one; finish. Returns 0 (the outputs are in tmp), 2 (a finished run
 * resumed with its output written: nothing to do) or -1 (e set). */
static int train(const vkl_app_lm_train_args *a, const char *tmp, vkl_app_lm_run *r, vkl_err *e)
{
    int rc = vkl_app_lm_run_open(a, tmp, r, e);
    if (rc) return rc;
    vkl_progress_begin(&r->bar, "lm train", r->total, a->quiet || r->R);
    for (int t = r->start; t <= r->total; t++) {
        step_report s;
        if (train_step(a, r, t, &s, e)) return -1;
        log_step(r, t, &s);
        if (a->save_every && t % a->save_every == 0 && checkpoint(a, r, t, e)) return -1;
        if (r->ev && ((a->eval_every && t % a->eval_every == 0) || t == r->total) && vkl_app_lm_evaluate(a, r, t, e)) return -1;
    }
    vkl_progress_end(&r->bar);
    return finish(a, tmp, r, e);
}

int vkl_app_lm_train_run(const vkl_app_lm_train_args *a, const char *tmp, vkl_err *e)
{
    vkl_app_lm_run r;
    memset(&r, 0, sizeof r);
    int rc = train(a, tmp, &r, e);
    vkl_app_lm_run_free(&r);
    return rc;
}
