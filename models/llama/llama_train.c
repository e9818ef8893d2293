#include "llama/llama_train.h"
#include "llama/llama_adalora.h"

#include "grad_accum.h"
#include "lora/lora_dylora.h"
#include "ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vkl_llama_train {
    const vkl_llama *m;
    int B, L;
    vkl_graph *g;
    vkl_tensor *ids, *targets, *mask, *loss, *logits, *reg;
    int np;
    vkl_tensor **params, **grads;
    char **keys;
    vkl_adamw *opt;
    /* split steps (accumulation or several ranks): the update is a graph of
     * its own, the gradients land in accum's buffers scaled by seed (the
     * micro-batch's weight, the loss gradient's seed) */
    vkl_dist *dist;
    vkl_grad_accum *accum;
    vkl_graph *update;
    vkl_tensor *seed;
    /* AdaLoRA with split steps: the summed gradient of each update, copied
     * out of the buffers before the update clears them (its rank allocator reads it) */
    vkl_tensor **sums;
    vkl_graph *copy;
    int32_t *tbuf;
    float *mbuf;
};

void vkl_llama_shift_labels(const int32_t *labels, int B, int L, int32_t *targets)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < L; t++)
            targets[(size_t)b * L + t] = t + 1 < L ? labels[(size_t)b * L + t + 1] : VKL_LLAMA_IGNORE;
}

void vkl_llama_train_free(vkl_llama_train *s)
{
    if (!s) return;
    vkl_graph_free(s->update);
    vkl_graph_free(s->copy);
    for (int i = 0; s->sums && i < s->np; i++) vkl_tensor_free(s->sums[i]);
    free(s->sums);
    vkl_grad_accum_free(s->accum);
    vkl_tensor_free(s->seed);
    vkl_adamw_free(s->opt);
    vkl_graph_free(s->g);
    vkl_tensor_free(s->ids);
    vkl_tensor_free(s->targets);
    vkl_tensor_free(s->mask);
    for (int i = 0; s->keys && i < s->np; i++) free(s->keys[i]);
    free(s->keys);
    free(s->params);
    free(s->grads);
    free(s->tbuf);
    free(s->mbuf);
    free(s);
}

static int add_param(vkl_llama_train *s, vkl_tensor *t, const char *module, const char *suffix, vkl_err *e)
{
    size_t n = strlen(module) + strlen(suffix) + 32;
    char *k = malloc(n);
    if (!k) return vkl_fail(e, "out of host memory");
    snprintf(k, n, "base_model.model.%s.%s", module, suffix);
    s->params[s->np] = t;
    s->keys[s->np++] = k;
    return 0;
}

/* The graph copying every accumulation buffer into a tensor of its own. */
static int keep_sums(vkl_llama_train *s, vkl_err *e)
{
    s->sums = calloc((size_t)s->np, sizeof *s->sums);
    if (!s->sums) return vkl_fail(e, "out of host memory");
    s->copy = vkl_graph_new(s->m->ctx);
    for (int i = 0; i < s->np; i++) {
        vkl_tensor *p = s->params[i];
        if (!(s->sums[i] = vkl_tensor_new(s->m->ctx, VKL_F32, p->ndim, p->shape, e))) return -1;
        vkl_copy_into(s->copy, vkl_grad_accum_buffer(s->accum, i), s->sums[i]);
    }
    if (vkl_graph_failed(s->copy)) return vkl_fail(e, "gradient copy: %s", vkl_graph_error(s->copy));
    return vkl_graph_plan(s->copy, e);
}

int vkl_llama_train_new(const vkl_llama *m, const vkl_lora_set *lora, const vkl_llama_dora *dora, int B, int L,
                        const vkl_llama_train_opts *o, vkl_llama_train **out, vkl_err *e)
{
    *out = NULL;
    const vkl_llama_ia3 *ia3 = o->ia3;
    const vkl_llama_adalora *ada = o->adalora;
    if ((lora != NULL) + (dora != NULL) + (ia3 != NULL) + (ada != NULL) != 1)
        return vkl_fail(e, "training needs exactly one of an adapter set, a DoRA set, an IA3 set and an AdaLoRA set");
    if (B < 1 || L < 2) return vkl_fail(e, "training batch %d x %d: need at least one row of two tokens", B, L);
    vkl_llama_train *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->m = m;
    s->B = B;
    s->L = L;
    s->dist = vkl_dist_active(o->dist) ? o->dist : NULL;
    int split = o->grad_accum > 1 || s->dist;
    int cap = lora ? 2 * vkl_lora_set_count(lora) : dora ? 3 * dora->n : ada ? 3 * ada->n : ia3->n;
    s->params = calloc((size_t)cap + 1, sizeof *s->params);
    s->grads = calloc((size_t)cap + 1, sizeof *s->grads);
    s->keys = calloc((size_t)cap + 1, sizeof *s->keys);
    float *mult = calloc((size_t)cap + 1, sizeof *mult);
    s->tbuf = malloc(sizeof(int32_t) * (size_t)B * L);
    s->mbuf = malloc(sizeof(float) * (size_t)B * L * L);
    int rc = (!s->params || !s->grads || !s->keys || !mult || !s->tbuf || !s->mbuf) ? vkl_fail(e, "out of host memory") : 0;
    float up = o->loraplus_ratio > 0 ? o->loraplus_ratio : 1.0f;
    for (int i = 0; lora && !rc && i < vkl_lora_set_count(lora); i++) {
        const vkl_lora_slot *sl = vkl_lora_set_at(lora, i);
        if (sl->conv) rc = vkl_fail(e, "adapter module %s is a convolution", sl->module);
        for (int r = 1; !rc && r < sl->R; r++)
            if (sl->owner[r] != sl->owner[0]) rc = vkl_fail(e, "training needs an adapter set built from one adapter");
        mult[s->np] = 1.0f;
        rc = rc || add_param(s, sl->a_cat, sl->module, "lora_A.weight", e);
        mult[s->np] = up;
        rc = rc || add_param(s, sl->b_cat, sl->module, "lora_B.weight", e);
    }
    for (int i = 0; dora && !rc && i < dora->n; i++) {
        const vkl_llama_dora_mod *d = &dora->v[i];
        mult[s->np] = 1.0f;
        rc = add_param(s, d->a, d->module, "lora_A.weight", e);
        mult[s->np] = up;
        rc = rc || add_param(s, d->b, d->module, "lora_B.weight", e);
        mult[s->np] = 1.0f;
        rc = rc || add_param(s, d->mag, d->module, "lora_magnitude_vector", e);
    }
    for (int i = 0; ada && !rc && i < ada->n; i++) {
        const vkl_llama_adalora_mod *d = &ada->v[i];
        mult[s->np] = mult[s->np + 1] = mult[s->np + 2] = 1.0f;
        rc = add_param(s, d->a, d->module, "lora_A", e) || add_param(s, d->e, d->module, "lora_E", e) ||
             add_param(s, d->b, d->module, "lora_B", e);
    }
    for (int i = 0; ia3 && !rc && i < ia3->n; i++) {
        mult[s->np] = 1.0f;
        rc = add_param(s, ia3->v[i].vec, ia3->v[i].module, "ia3_l", e);
    }
    if (!rc) {
        vkl_ctx *c = m->ctx;
        s->ids = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){B, L}, e);
        s->targets = s->ids ? vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){B, L}, e) : NULL;
        s->mask = s->targets ? vkl_llama_mask(c, B, L, 0, NULL, e) : NULL;
        if (s->mask && split) s->seed = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){1}, e);
        rc = s->mask && (!split || s->seed) ? 0 : -1;
    }
    vkl_tensor *objective = NULL;
    if (!rc) {
        s->g = vkl_graph_new(m->ctx);
        if (dora) vkl_llama_dora_norms(s->g, m, dora);
        vkl_llama_fwd f = {.lora = lora, .dora = dora, .ia3 = ia3, .adalora = ada, .mask = s->mask, .explicit_attn = 1};
        s->logits = vkl_llama_forward(s->g, m, s->ids, &f);
        if (o->keep_logits) vkl_graph_keep(s->g, s->logits);
        s->loss = vkl_cross_entropy(s->g, s->logits, s->targets, VKL_LLAMA_IGNORE);
        vkl_graph_keep(s->g, s->loss);
        if (ada) { /* PEFT adds the weighted regulariser to the loss it minimises */
            s->reg = vkl_llama_adalora_orth(s->g, ada);
            vkl_graph_keep(s->g, s->reg);
            objective = vkl_add(s->g, s->loss, vkl_scale(s->g, s->reg, ada->cfg.orth_reg_weight));
        }
        if (vkl_graph_failed(s->g)) rc = vkl_fail(e, "training graph: %s", vkl_graph_error(s->g));
    }
    vkl_tensor *seed = s->seed && !rc ? vkl_reshape(s->g, s->seed, s->loss->ndim, s->loss->shape) : NULL;
    rc = rc || vkl_graph_backward(s->g, objective ? objective : s->loss, seed, s->params, s->np, s->grads, e);
    for (int i = 0; !rc && i < s->np; i++) {
        if (!s->grads[i]) rc = vkl_fail(e, "the loss does not depend on %s", s->keys[i]);
        else vkl_graph_keep(s->g, s->grads[i]);
    }
    if (!rc && o->grad_only) {
        if (split || o->dylora) rc = vkl_fail(e, "training: gradients only cannot split steps or gate ranks");
        else rc = vkl_graph_plan(s->g, e);
    } else if (!rc) {
        vkl_adamw_opts ao = o->adam;
        s->opt = vkl_adamw_new(m->ctx, s->params, s->np, mult, &ao, e);
        if (!s->opt || (o->dylora && vkl_dylora_gate(o->dylora, s->opt, s->params, s->np, e))) rc = -1;
        else if (!split) rc = vkl_adamw_append(s->opt, s->g, s->grads, e) || vkl_graph_plan(s->g, e);
        else {
            /* the update reads the sum across ranks, so it cannot share the step's graph */
            s->accum = vkl_grad_accum_new(m->ctx, s->params, s->np, e);
            rc = !s->accum || vkl_grad_accum_append_add(s->accum, s->g, s->grads, 1.0f, e) || vkl_graph_plan(s->g, e) ||
                 !(s->update = vkl_grad_accum_update_graph(s->accum, s->opt, e));
            if (!rc && ada) rc = keep_sums(s, e);
        }
    }
    free(mult);
    if (rc) {
        vkl_llama_train_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* Checks and uploads one batch. */
static int upload_batch(vkl_llama_train *s, const int32_t *ids, const int32_t *labels, const int *attn, vkl_err *e)
{
    vkl_ctx *c = s->m->ctx;
    int64_t n = (int64_t)s->B * s->L;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->m->cfg.vocab)
            return vkl_fail(e, "token id %d at %lld is outside the vocabulary of %d", ids[i], (long long)i,
                            s->m->cfg.vocab);
    for (int64_t i = 0; i < n; i++)
        if (labels[i] != VKL_LLAMA_IGNORE && (labels[i] < 0 || labels[i] >= s->m->cfg.vocab))
            return vkl_fail(e, "label %d at %lld is neither -100 nor a token id", labels[i], (long long)i);
    vkl_llama_shift_labels(labels, s->B, s->L, s->tbuf);
    vkl_llama_mask_values(s->B, s->L, 0, attn, s->mbuf);
    if (vkl_tensor_upload(c, s->ids, ids, VKL_I32, e) || vkl_tensor_upload(c, s->targets, s->tbuf, VKL_I32, e) ||
        vkl_tensor_upload(c, s->mask, s->mbuf, VKL_F32, e))
        return -1;
    return 0;
}

int vkl_llama_train_accumulate(vkl_llama_train *s, const int32_t *ids, const int32_t *labels, const int *attn,
                               float weight, float *loss, vkl_err *e)
{
    vkl_ctx *c = s->m->ctx;
    if (!s->accum) return vkl_fail(e, "training: accumulate needs a split step (grad_accum > 1 or several ranks)");
    if (upload_batch(s, ids, labels, attn, e) || vkl_tensor_upload(c, s->seed, &weight, VKL_F32, e) ||
        vkl_graph_run(s->g, e))
        return -1;
    return loss ? vkl_tensor_download(c, s->loss, loss, VKL_F32, e) : 0;
}

int vkl_llama_train_update(vkl_llama_train *s, int t, float lr, vkl_err *e)
{
    if (!s->accum) return vkl_fail(e, "training: update needs a split step (grad_accum > 1 or several ranks)");
    return vkl_dist_sum_tensors(s->dist, s->m->ctx, vkl_grad_accum_buffers(s->accum), s->np, 1.0f, 0, e) ||
                   (s->copy && vkl_graph_run(s->copy, e)) || vkl_adamw_prepare(s->opt, t, lr, e) ||
                   vkl_graph_run(s->update, e)
               ? -1
               : 0;
}

int vkl_llama_train_step(vkl_llama_train *s, const int32_t *ids, const int32_t *labels, const int *attn, int t,
                         float lr, float *loss, vkl_err *e)
{
    if (s->accum)
        return vkl_llama_train_accumulate(s, ids, labels, attn, 1.0f, loss, e) || vkl_llama_train_update(s, t, lr, e)
                   ? -1
                   : 0;
    vkl_ctx *c = s->m->ctx;
    if (upload_batch(s, ids, labels, attn, e) || (s->opt && vkl_adamw_prepare(s->opt, t, lr, e)) ||
        vkl_graph_run(s->g, e))
        return -1;
    return loss ? vkl_tensor_download(c, s->loss, loss, VKL_F32, e) : 0;
}

int vkl_llama_train_count(const vkl_llama_train *s) { return s->np; }
vkl_tensor *vkl_llama_train_param(const vkl_llama_train *s, int i) { return s->params[i]; }
const char *vkl_llama_train_key(const vkl_llama_train *s, int i) { return s->keys[i]; }
vkl_tensor *vkl_llama_train_grad(const vkl_llama_train *s, int i) { return s->grads[i]; }
vkl_adamw *vkl_llama_train_optimizer(const vkl_llama_train *s) { return s->opt; }
vkl_tensor *vkl_llama_train_logits(const vkl_llama_train *s) { return s->logits; }
vkl_tensor *vkl_llama_train_reg(const vkl_llama_train *s) { return s->reg; }
vkl_tensor *vkl_llama_train_step_grad(const vkl_llama_train *s, int i) { return s->sums ? s->sums[i] : s->grads[i]; }
