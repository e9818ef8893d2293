/* One LoRA training step of a Stable Diffusion UNet on the device:
 *   pred = UNet(noisy latents, t, text states) with trainable adapters,
 *   loss = mean_b(w_b * mean((pred - target)^2)),
 *   gradients of every adapter tensor, then (optionally) AdamW.
 * The graph is built and planned once per latent shape and replayed every
 * step; only the batch data and the optimiser's step values are uploaded. */
#ifndef VKL_SD_TRAIN_STEP_H
#define VKL_SD_TRAIN_STEP_H

#include "lora/lora_apply.h"
#include "optim.h"
#include "sd/unet.h"

typedef struct vkl_sd_train_step vkl_sd_train_step;

typedef struct vkl_sd_train_shape {
    int batch, channels, height, width; /* latents */
    int tokens, context;                /* text states [batch, tokens, context] */
} vkl_sd_train_shape;

/* unet->lora must hold the trainable adapters (each slot's a_cat / b_cat are
 * the parameters). checkpoint: recompute UNet blocks in the backward pass.
 * opt NULL: gradients only (no update). lr_mult: per parameter (2 per slot:
 * down, up), NULL for 1. */
int vkl_sd_train_step_new(vkl_ctx *c, const vkl_unet *unet, const vkl_sd_train_shape *shape, int checkpoint,
                          const vkl_adamw_opts *opt, const float *lr_mult, vkl_sd_train_step **out, vkl_err *e);
void vkl_sd_train_step_free(vkl_sd_train_step *s);

/* Runs one step. t: [batch] timesteps; weights: [batch] loss weights or NULL;
 * step: 1-based optimiser step; lr: its learning rate. */
int vkl_sd_train_step_run(vkl_sd_train_step *s, const float *noisy, const float *t, const float *ctx,
                          const float *target, const float *weights, int step, float lr, float *loss, vkl_err *e);
/* After a run: gradient norm and whether the update was skipped (NaN/Inf). */
int vkl_sd_train_step_stats(vkl_sd_train_step *s, float *grad_norm, int *skipped, vkl_err *e);

int vkl_sd_train_step_param_count(const vkl_sd_train_step *s);
vkl_tensor *vkl_sd_train_step_param(const vkl_sd_train_step *s, int i);
vkl_tensor *vkl_sd_train_step_grad(const vkl_sd_train_step *s, int i); /* kept only without an optimiser */
const char *vkl_sd_train_step_param_name(const vkl_sd_train_step *s, int i); /* "<module>.down" / ".up" */
vkl_adamw *vkl_sd_train_step_optimizer(vkl_sd_train_step *s);
uint64_t vkl_sd_train_step_arena_bytes(const vkl_sd_train_step *s);

#endif
