/* One LoRA training step of a Stable Diffusion UNet on the device:
 *   pred = UNet(noisy latents, t, text states) with trainable adapters,
 *          plus, for SDXL, the added conditioning (pooled text embedding
 *          and the size/crop time ids of each sample),
 *   loss = mean_b(w_b * mean((pred - target)^2)),
 *   gradients of every adapter tensor, then AdamW, or (gradient
 *   accumulation) the gradients times 1/N added into persistent buffers.
 * With a trainable text encoder the text states come from token ids through
 * the encoder inside the same graph, so its adapters get gradients too.
 * The graph is built and planned once per latent shape and replayed every
 * step; only the batch data and the optimiser's step values are uploaded. */
#ifndef VKL_SD_TRAIN_STEP_H
#define VKL_SD_TRAIN_STEP_H

#include "grad_accum.h"
#include "lora/lora_apply.h"
#include "optim.h"
#include "sd/clip_text.h"
#include "sd/unet.h"

typedef struct vkl_sd_train_step vkl_sd_train_step;

typedef struct vkl_sd_train_shape {
    int batch, channels, height, width; /* latents */
    int tokens, context;                /* text states [batch, tokens, context] */
    /* SDXL (a UNet with "text_time" conditioning): the pooled text width;
     * each batch then brings pooled [batch, pooled] and time_ids [batch, 6].
     * 0 otherwise. */
    int pooled;
} vkl_sd_train_shape;

/* The trainable tensors of an adapter set, in the order the optimiser and
 * the training step use: slot by slot, vkl_lora_slot_params's order (LoRA:
 * down (a_cat) then up (b_cat)). */
int vkl_sd_train_params(const vkl_lora_set *set, vkl_tensor ***params, int *n, vkl_err *e);

typedef struct vkl_sd_train_opts {
    int checkpoint;          /* recompute UNet blocks in the backward pass */
    vkl_adamw *opt;          /* fused update (borrowed), or NULL */
    vkl_grad_accum *accum;   /* instead of opt: gradients * accum_scale are added into its buffers */
    float accum_scale;       /* 1/N for N micro-batches per optimiser step */
    const vkl_clip_text *te; /* text encoder run in the graph (its lora = the trainable set), or NULL */
    int te_skip;             /* final layers skipped (clip skip - 1) */
    /* Mixed precision (--mixed-precision fp16): the UNet's long-lived
     * activations are stored f16 (vkl_unet.act16), where
     * vkl_sd_train_fp16_supported says the device can; elsewhere ignored
     * (everything f32). Gradients and the loss stay f32. */
    int fp16_act;
    /* Dynamic loss scaling: a persistent f32 [1, 1] tensor holding the loss
     * scale S, used as the loss gradient seed (borrowed; the caller uploads S
     * before each step and tells the optimiser with vkl_adamw_set_grad_scale).
     * NULL: seed 1. Gradients read or accumulated from the step carry S. */
    vkl_tensor *loss_seed;
    /* Full training (--network full): these tensors (the model's own f32
     * weights) are the parameters, with these names, instead of the
     * adapters' (unet->lora and te->lora are then NULL). */
    vkl_tensor *const *params;
    const char *const *param_names;
    int nparams;
    /* SDXL with trainable text encoders: te and te2 both run in the graph
     * (their lora = the trainable set) and give the context and the pooled
     * embedding; NULL otherwise. */
    const vkl_clip_text *te2;
} vkl_sd_train_opts;

/* Whether the device can hold f16 activations in training: 16-bit storage
 * and fp16 arithmetic (the "portable" profile has neither). */
int vkl_sd_train_fp16_supported(const vkl_ctx *c);

/* unet->lora must hold the trainable adapters (each slot's a_cat / b_cat are
 * the parameters, text-encoder slots included when opts->te is given).
 * opt / accum are over vkl_sd_train_params(unet->lora) and may serve the
 * steps of every latent shape. With neither, gradients are kept for reading. */
int vkl_sd_train_step_new_ex(vkl_ctx *c, const vkl_unet *unet, const vkl_sd_train_shape *shape,
                             const vkl_sd_train_opts *opts, vkl_sd_train_step **out, vkl_err *e);
/* The UNet alone, with a fused optimiser or none. */
int vkl_sd_train_step_new(vkl_ctx *c, const vkl_unet *unet, const vkl_sd_train_shape *shape, int checkpoint,
                          vkl_adamw *opt, vkl_sd_train_step **out, vkl_err *e);
void vkl_sd_train_step_free(vkl_sd_train_step *s);

/* One batch: noisy latents and target [batch, C, H, W], t and weights
 * [batch] (weights NULL: all 1), and text states [batch, tokens, context]
 * or, with a text encoder in the graph, token ids [batch, tokens]. SDXL
 * adds the time ids [batch, 6] = (original h, w, crop top, left, target h,
 * w) and the pooled text embedding [batch, pooled], or with its encoders in
 * the graph both tokenizers' ids [2][batch][tokens] in ids instead of the
 * text states and the pooled embedding. */
typedef struct vkl_sd_train_batch {
    const float *noisy, *t, *text, *target, *weights;
    const int32_t *ids;
    const float *pooled, *time_ids;
} vkl_sd_train_batch;

/* Runs one step; step: 1-based optimiser step and lr its learning rate
 * (read only with a fused optimiser). */
int vkl_sd_train_step_run_batch(vkl_sd_train_step *s, const vkl_sd_train_batch *b, int step, float lr, float *loss,
                                vkl_err *e);
int vkl_sd_train_step_run(vkl_sd_train_step *s, const float *noisy, const float *t, const float *ctx,
                          const float *target, const float *weights, int step, float lr, float *loss, vkl_err *e);
/* After a run: gradient norm and whether the update was skipped (NaN/Inf). */
int vkl_sd_train_step_stats(vkl_sd_train_step *s, float *grad_norm, int *skipped, vkl_err *e);

int vkl_sd_train_step_param_count(const vkl_sd_train_step *s);
vkl_tensor *vkl_sd_train_step_param(const vkl_sd_train_step *s, int i);
vkl_tensor *vkl_sd_train_step_grad(const vkl_sd_train_step *s, int i); /* kept only without opt and accum */
const char *vkl_sd_train_step_param_name(const vkl_sd_train_step *s, int i); /* "<module>.down" / ".up", "<module>.hada_w1_a", ... */
vkl_adamw *vkl_sd_train_step_optimizer(vkl_sd_train_step *s);
uint64_t vkl_sd_train_step_arena_bytes(const vkl_sd_train_step *s);
/* Whether the step's activations are f16 (fp16_act asked and supported). */
int vkl_sd_train_step_fp16(const vkl_sd_train_step *s);

#endif
