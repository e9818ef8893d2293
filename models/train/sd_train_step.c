#include "train/sd_train_step.h"

#include "ops.h"
#include "sd/sdxl_text.h"
#include "tuning.h"

#include <stdlib.h>
#include <string.h>

struct vkl_sd_train_step {
    vkl_ctx *ctx;
    vkl_sd_train_shape shape;
    vkl_graph *g;
    vkl_tensor *noisy, *t, *text, *ids, *target, *weights, *loss;
    vkl_tensor *pooled, *time_ids; /* SDXL's added conditioning, else NULL (pooled: when no encoder is in the graph) */
    vkl_tensor *ids2, *pool_rows;  /* SDXL's encoders in the graph: tokenizer 2's ids, its pooling rows */
    const vkl_sd_text_config *te2_cfg;
    int32_t *rows;
    int np;
    vkl_tensor **params, **grads;
    char **names;
    vkl_adamw *opt;
    int accum;
    int fp16;
    float *ones;
};

void vkl_sd_train_step_free(vkl_sd_train_step *s)
{
    if (!s) return;
    vkl_graph_free(s->g);
    vkl_tensor_free(s->noisy);
    vkl_tensor_free(s->t);
    vkl_tensor_free(s->text);
    vkl_tensor_free(s->ids);
    vkl_tensor_free(s->target);
    vkl_tensor_free(s->weights);
    vkl_tensor_free(s->pooled);
    vkl_tensor_free(s->time_ids);
    vkl_tensor_free(s->ids2);
    vkl_tensor_free(s->pool_rows);
    free(s->rows);
    for (int i = 0; i < s->np; i++) free(s->names ? s->names[i] : NULL);
    free(s->names);
    free(s->params);
    free(s->grads);
    free(s->ones);
    free(s);
}

int vkl_sd_train_fp16_supported(const vkl_ctx *c)
{
    const vkl_caps *k = vkl_ctx_caps(c);
    return k->fp16 && k->storage16;
}

int vkl_sd_train_params(const vkl_lora_set *set, vkl_tensor ***params, int *n, vkl_err *e)
{
    int ns = vkl_lora_set_count(set);
    *n = 0;
    *params = calloc((size_t)(VKL_LORA_ROLES * ns + 1), sizeof **params);
    if (!*params) return vkl_fail(e, "out of host memory");
    vkl_lora_role roles[VKL_LORA_ROLES];
    for (int i = 0; i < ns; i++) *n += vkl_lora_slot_params(vkl_lora_set_at(set, i), *params + *n, roles);
    return 0;
}

/* "<module>.down" / ".up" for LoRA factors, "<module>.<LyCORIS name>" for the others. */
static char *param_name(const char *module, vkl_lora_role r)
{
    const char *suffix = r == VKL_LORA_DOWN ? "down" : r == VKL_LORA_UP ? "up" : vkl_lora_role_name(r);
    size_t len = strlen(module) + strlen(suffix) + 2;
    char *s = malloc(len);
    if (s) snprintf(s, len, "%s.%s", module, suffix);
    if (s && strstr(s + strlen(module), ".weight")) *strstr(s + strlen(module), ".weight") = 0;
    return s;
}

int vkl_sd_train_step_new_ex(vkl_ctx *c, const vkl_unet *unet, const vkl_sd_train_shape *sh,
                             const vkl_sd_train_opts *o, vkl_sd_train_step **out, vkl_err *e)
{
    *out = NULL;
    const vkl_lora_set *set = unet->lora;
    int nslots = o->params ? 0 : vkl_lora_set_count(set);
    if (o->params ? o->nparams < 1 : !nslots) return vkl_fail(e, "training: the UNet has no trainable adapters");
    if (o->opt && o->accum) return vkl_fail(e, "training: a fused optimiser or gradient accumulation, not both");
    if (o->te && !o->params && o->te->lora != set)
        return vkl_fail(e, "training: the text encoder must use the UNet's adapter set");
    if (unet->cfg->add_text_time && sh->pooled <= 0)
        return vkl_fail(e, "training: this UNet takes added conditioning; the step needs the pooled text width");
    if (!unet->cfg->add_text_time && sh->pooled)
        return vkl_fail(e, "training: this UNet takes no added conditioning (pooled width %d given)", sh->pooled);
    if (o->te && unet->cfg->add_text_time && !o->te2)
        return vkl_fail(e, "training: SDXL's text encoders train together (the step needs both)");
    if (o->te2 && (!o->te || !unet->cfg->add_text_time || (!o->params && o->te2->lora != set)))
        return vkl_fail(e, "training: a second text encoder needs the first, an SDXL UNet and the UNet's adapter set");
    vkl_sd_train_step *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->ctx = c;
    s->shape = *sh;
    if (o->params) {
        s->np = o->nparams;
        s->params = malloc(sizeof *s->params * (size_t)s->np);
        if (!s->params) {
            free(s);
            return vkl_fail(e, "out of host memory");
        }
        memcpy(s->params, o->params, sizeof *s->params * (size_t)s->np);
    } else if (vkl_sd_train_params(set, &s->params, &s->np, e)) {
        free(s);
        return -1;
    }
    s->grads = calloc((size_t)s->np, sizeof *s->grads);
    s->names = calloc((size_t)s->np, sizeof *s->names);
    s->ones = malloc(sizeof(float) * (size_t)sh->batch);
    if (!s->grads || !s->names || !s->ones) goto oom;
    for (int b = 0; b < sh->batch; b++) s->ones[b] = 1.0f;
    for (int i = 0; o->params && i < s->np; i++)
        if (!(s->names[i] = strdup(o->param_names[i]))) goto oom;
    for (int i = 0, k = 0; i < nslots; i++) {
        const vkl_lora_slot *slot = vkl_lora_set_at(set, i);
        vkl_tensor *t[VKL_LORA_ROLES];
        vkl_lora_role roles[VKL_LORA_ROLES];
        int n = vkl_lora_slot_params(slot, t, roles);
        for (int j = 0; j < n; j++, k++)
            if (!(s->names[k] = param_name(slot->module, roles[j]))) goto oom;
    }
    int64_t ls[4] = {sh->batch, sh->channels, sh->height, sh->width};
    s->noisy = vkl_tensor_new(c, VKL_F32, 4, ls, e);
    s->target = s->noisy ? vkl_tensor_new(c, VKL_F32, 4, ls, e) : NULL;
    s->t = s->target ? vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){sh->batch}, e) : NULL;
    s->weights = s->t ? vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){sh->batch}, e) : NULL;
    if (!s->weights) goto fail;
    if (sh->pooled) {
        s->pooled = o->te2 ? NULL : vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){sh->batch, sh->pooled}, e);
        s->time_ids = s->pooled || o->te2 ? vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){sh->batch, 6}, e) : NULL;
        if (!s->time_ids) goto fail;
    }
    s->g = vkl_graph_new(c);
    vkl_tensor *text, *pooled = s->pooled;
    if (o->te2) {
        /* SDXL: both encoders with gradients, the context and the pooled embedding from them */
        int64_t is[2] = {sh->batch, sh->tokens};
        s->ids = vkl_tensor_new(c, VKL_I32, 2, is, e);
        s->ids2 = s->ids ? vkl_tensor_new(c, VKL_I32, 2, is, e) : NULL;
        s->pool_rows = s->ids2 ? vkl_tensor_new(c, VKL_I32, 1, (int64_t[]){sh->batch}, e) : NULL;
        s->rows = malloc(sizeof(int32_t) * (size_t)sh->batch);
        if (!s->pool_rows) goto fail;
        if (!s->rows) goto oom;
        s->te2_cfg = o->te2->cfg;
        text = vkl_sdxl_text_forward(s->g, o->te, o->te2, s->ids, s->ids2, s->pool_rows, o->te_skip, &pooled);
    } else if (o->te) {
        /* the encoder runs with gradients; its activations stay live (it is
         * small next to the UNet), so it is not checkpointed */
        s->ids = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){sh->batch, sh->tokens}, e);
        if (!s->ids) goto fail;
        text = vkl_clip_text_forward(s->g, o->te, s->ids, o->te_skip, 1, NULL);
    } else {
        s->text = vkl_tensor_new(c, VKL_F32, 3, (int64_t[]){sh->batch, sh->tokens, sh->context}, e);
        if (!s->text) goto fail;
        text = s->text;
    }
    vkl_unet u = *unet;
    u.checkpoint = o->checkpoint;
    s->fp16 = o->fp16_act && vkl_sd_train_fp16_supported(c);
    vkl_unet_added add = {pooled, s->time_ids};
    vkl_tensor *pred = vkl_unet_forward_added(s->g, &u, s->fp16, s->noisy, s->t, text, sh->pooled ? &add : NULL, NULL);
    s->loss = vkl_mse_loss(s->g, pred, s->target, s->weights, NULL);
    vkl_graph_keep(s->g, s->loss);
    if (o->loss_seed && (vkl_tensor_nelem(o->loss_seed) != 1 || o->loss_seed->dtype != VKL_F32 || o->loss_seed->graph)) {
        vkl_fail(e, "the loss scale must be a persistent f32 tensor of one element");
        goto fail;
    }
    vkl_tensor *seed = o->loss_seed ? vkl_reshape(s->g, o->loss_seed, s->loss->ndim, s->loss->shape) : NULL;
    if (vkl_graph_backward(s->g, s->loss, seed, s->params, s->np, s->grads, e)) goto fail;
    for (int i = 0; i < s->np; i++)
        if (!s->grads[i]) {
            vkl_fail(e, "training: %s %s does not affect the loss", o->params ? "weight" : "adapter tensor", s->names[i]);
            goto fail;
        }
    if (o->opt) {
        s->opt = o->opt;
        if (vkl_adamw_append(s->opt, s->g, s->grads, e)) goto fail;
    } else if (o->accum) {
        s->accum = 1;
        if (vkl_grad_accum_count(o->accum) != s->np) {
            vkl_fail(e, "gradient accumulation over %d tensors, the step has %d", vkl_grad_accum_count(o->accum), s->np);
            goto fail;
        }
        if (vkl_grad_accum_append_add(o->accum, s->g, s->grads, o->accum_scale, e)) goto fail;
    } else {
        for (int i = 0; i < s->np; i++) vkl_graph_keep(s->g, s->grads[i]);
    }
    if (vkl_ctx_tuning(s->ctx)->train_profile) vkl_graph_enable_profiling(s->g);
    if (vkl_graph_plan(s->g, e)) goto fail;
    *out = s;
    return 0;
oom:
    vkl_fail(e, "out of host memory");
fail:
    vkl_err_prefix(e, "training step: ");
    vkl_sd_train_step_free(s);
    return -1;
}

int vkl_sd_train_step_new(vkl_ctx *c, const vkl_unet *unet, const vkl_sd_train_shape *sh, int checkpoint,
                          vkl_adamw *opt, vkl_sd_train_step **out, vkl_err *e)
{
    vkl_sd_train_opts o = {checkpoint, opt, NULL, 1.0f, NULL, 0, 0, NULL, NULL, NULL, 0, NULL};
    return vkl_sd_train_step_new_ex(c, unet, sh, &o, out, e);
}

int vkl_sd_train_step_run_batch(vkl_sd_train_step *s, const vkl_sd_train_batch *b, int step, float lr, float *loss,
                                vkl_err *e)
{
    if (s->ids ? !b->ids : !b->text)
        return vkl_fail(e, "training step: the batch needs %s", s->ids ? "token ids" : "text states");
    if (s->time_ids && (!b->time_ids || (s->pooled && !b->pooled)))
        return vkl_fail(e, "training step: an SDXL batch needs the time ids%s",
                        s->pooled ? " and the pooled text embedding" : "");
    if ((s->pooled && vkl_tensor_upload(s->ctx, s->pooled, b->pooled, VKL_F32, e)) ||
        (s->time_ids && vkl_tensor_upload(s->ctx, s->time_ids, b->time_ids, VKL_F32, e)))
        return -1;
    if (s->ids2) {
        /* ids = [tokenizer 1 rows | tokenizer 2 rows]; the pooled row is
         * chosen from tokenizer 2's ids as the encoder's config says */
        const int32_t *ids2 = b->ids + (size_t)s->shape.batch * s->shape.tokens;
        vkl_clip_pool_rows(s->te2_cfg, ids2, s->shape.batch, s->shape.tokens, s->rows);
        if (vkl_tensor_upload(s->ctx, s->ids2, ids2, VKL_I32, e) ||
            vkl_tensor_upload(s->ctx, s->pool_rows, s->rows, VKL_I32, e))
            return -1;
    }
    if (vkl_tensor_upload(s->ctx, s->noisy, b->noisy, VKL_F32, e) || vkl_tensor_upload(s->ctx, s->t, b->t, VKL_F32, e) ||
        (s->ids ? vkl_tensor_upload(s->ctx, s->ids, b->ids, VKL_I32, e)
                : vkl_tensor_upload(s->ctx, s->text, b->text, VKL_F32, e)) ||
        vkl_tensor_upload(s->ctx, s->target, b->target, VKL_F32, e) ||
        vkl_tensor_upload(s->ctx, s->weights, b->weights ? b->weights : s->ones, VKL_F32, e))
        return -1;
    if (s->opt && vkl_adamw_prepare(s->opt, step, lr, e)) return -1;
    if (vkl_graph_run(s->g, e)) return -1;
    if (step == vkl_ctx_tuning(s->ctx)->train_profile) vkl_graph_print_profile(s->g, stderr);
    return loss ? vkl_tensor_download(s->ctx, s->loss, loss, VKL_F32, e) : 0;
}

int vkl_sd_train_step_run(vkl_sd_train_step *s, const float *noisy, const float *t, const float *ctx,
                          const float *target, const float *weights, int step, float lr, float *loss, vkl_err *e)
{
    vkl_sd_train_batch b = {noisy, t, ctx, target, weights, NULL, NULL, NULL};
    return vkl_sd_train_step_run_batch(s, &b, step, lr, loss, e);
}

int vkl_sd_train_step_stats(vkl_sd_train_step *s, float *grad_norm, int *skipped, vkl_err *e)
{
    if (!s->opt) return vkl_fail(e, "no optimiser in this training step");
    return vkl_adamw_result(s->opt, grad_norm, skipped, e);
}

int vkl_sd_train_step_param_count(const vkl_sd_train_step *s) { return s->np; }
vkl_tensor *vkl_sd_train_step_param(const vkl_sd_train_step *s, int i) { return s->params[i]; }
vkl_tensor *vkl_sd_train_step_grad(const vkl_sd_train_step *s, int i) { return s->opt || s->accum ? NULL : s->grads[i]; }
const char *vkl_sd_train_step_param_name(const vkl_sd_train_step *s, int i) { return s->names[i]; }
vkl_adamw *vkl_sd_train_step_optimizer(vkl_sd_train_step *s) { return s->opt; }
uint64_t vkl_sd_train_step_arena_bytes(const vkl_sd_train_step *s) { return vkl_graph_arena_bytes(s->g); }
int vkl_sd_train_step_fp16(const vkl_sd_train_step *s) { return s->fp16; }
