/* Optimisers and learning-rate schedules. AdamW with decoupled weight decay
 * on f32 master weights, per-tensor learning-rate multipliers (LoRA+ gives
 * the up/B matrices a larger rate), gradient clipping by global norm, and
 * NaN/Inf detection that skips the step. The update is part of the training
 * graph; what changes per step is uploaded into small device tensors. */
#ifndef VKL_OPTIM_H
#define VKL_OPTIM_H

#include "vkl.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_adamw_opts {
    float lr, beta1, beta2, eps, weight_decay;
    float max_grad_norm; /* <= 0: no clipping */
    int state_bits;      /* 32 (or 0): f32 moments; 8: 8-bit blockwise moments (see below) */
} vkl_adamw_opts;

void vkl_adamw_opts_default(vkl_adamw_opts *o); /* lr 1e-4, betas 0.9/0.999, eps 1e-8, wd 1e-2, no clipping, f32 state */

typedef struct vkl_adamw vkl_adamw;

/* params: persistent f32 tensors (updated in place). lr_mult may be NULL (all 1). */
vkl_adamw *vkl_adamw_new(vkl_ctx *c, vkl_tensor *const *params, int n, const float *lr_mult,
                         const vkl_adamw_opts *o, vkl_err *e);
void vkl_adamw_free(vkl_adamw *a);
/* Appends the update of every parameter to g, given their gradients (a NULL
 * gradient leaves that parameter unchanged). Also computes the global norm. */
int vkl_adamw_append(vkl_adamw *a, vkl_graph *g, vkl_tensor *const *grads, vkl_err *e);
/* DyLoRA trains a LoRA by rank blocks: parameter i (an f32-state one) then
 * has a rank axis (`axis`: 0 for down [r,in,...], 1 for up [out,r,...]) and
 * two persistent f32 [r] tensors the caller uploads before each step: mask
 * (1 where that rank row is trained this step, else 0) multiplies the
 * gradient before the global norm and the update; count (the row's own step
 * count, 0 where the row is frozen this step) gives the bias corrections,
 * and a row with count 0 is left as it is (parameter, moments, no decay), as
 * torch's AdamW skips a tensor without a gradient. Call before append. */
int vkl_adamw_set_rank_gate(vkl_adamw *a, int i, vkl_tensor *count, vkl_tensor *mask, int axis, vkl_err *e);
/* Before running step t (1-based) with learning rate lr: uploads the values
 * the recorded update reads. */
int vkl_adamw_prepare(vkl_adamw *a, int t, float lr, vkl_err *e);
/* Mixed precision: the gradients the update reads are the true ones times
 * `scale` (the loss scale, runtime/loss_scale.h). The update divides by it
 * (folded into the clip factor, so it costs nothing per element), clipping
 * compares the unscaled norm, and the reported norm is the unscaled one.
 * Read by the next vkl_adamw_prepare; 1 (the default) is plain training. */
int vkl_adamw_set_grad_scale(vkl_adamw *a, float scale, vkl_err *e);
/* After the run: the global gradient norm (before clipping) and whether the
 * step was skipped for a NaN/Inf gradient. */
int vkl_adamw_result(vkl_adamw *a, float *norm, int *skipped, vkl_err *e);
/* The f32 moment tensors of parameter i; NULL when its state is 8-bit. */
vkl_tensor *vkl_adamw_m(vkl_adamw *a, int i);
vkl_tensor *vkl_adamw_v(vkl_adamw *a, int i);

/* 8-bit state (state_bits 8), as bitsandbytes' AdamW8bit keeps it: a
 * parameter of at least VKL_ADAMW8_MIN_SIZE elements stores m and v as 8-bit
 * codes in blocks of VKL_ADAMW8_BLOCK elements, each block with one f32
 * absmax per moment; a moment is map[code] * absmax, with bitsandbytes'
 * dynamic maps (signed for m, unsigned for v). Each step dequantizes,
 * updates as the f32 path does (same formula, clipping, rates and NaN skip),
 * and requantizes every block to the nearest code of value / new absmax.
 * Smaller parameters keep f32 moments.
 * Layout: codes u8 [blocks, 2, 256] (a block's m codes then its v codes; the
 * tail block's padding holds the codes of 0), absmax f32 [blocks, 2] (m, v). */
#define VKL_ADAMW8_BLOCK 256
#define VKL_ADAMW8_MIN_SIZE 4096
/* bitsandbytes' create_dynamic_map(signed) (max_exponent_bits 7, 8 bits), sorted. */
void vkl_adamw8_map(int is_signed, float map[256]);

/* The state tensors of parameter i as a checkpoint saves and restores them
 * (download/upload in their own dtype): f32 moments "m", "v", or 8-bit state
 * "codes" (u8), "absmax" (f32). Returns how many; *names/tensors filled up to 2. */
int vkl_adamw_state(vkl_adamw *a, int i, vkl_tensor *tensors[2], const char *names[2]);
/* Every parameter's state (of the first np) as one safetensors file,
 * tensors NAME.i (m/v, or codes/absmax) in their own dtypes, so a resume
 * restores them exactly (optim_state.c); the load checks each tensor's
 * presence, size and dtype. */
int vkl_adamw_state_save(vkl_adamw *a, vkl_ctx *c, int np, const char *path, vkl_err *e);
int vkl_adamw_state_load(vkl_adamw *a, vkl_ctx *c, int np, const char *path, vkl_err *e);
/* Bytes of optimiser state for all parameters. */
uint64_t vkl_adamw_state_bytes(const vkl_adamw *a);

/* Learning-rate schedules. step is 0-based; total = number of steps. */
typedef enum { VKL_LR_CONSTANT = 0, VKL_LR_LINEAR, VKL_LR_COSINE, VKL_LR_COSINE_RESTARTS } vkl_lr_kind;
typedef struct vkl_lr_schedule {
    vkl_lr_kind kind;
    float base_lr;
    int warmup;   /* linear warm-up from 0 over this many steps */
    int total;
    int cycles;   /* cosine with restarts: number of hard restarts */
} vkl_lr_schedule;
float vkl_lr_at(const vkl_lr_schedule *s, int step);
int vkl_lr_kind_parse(const char *name, vkl_lr_kind *k); /* constant, linear, cosine, cosine_with_restarts */

#ifdef __cplusplus
}
#endif

#endif
