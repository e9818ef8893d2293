/* AdaLoRA (lora/lora_adalora.h) on a LLaMA: the trainable SVD-form modules
 * on the device, their layer, PEFT's orthogonal regulariser as graph ops, and
 * the step that runs the host-side rank allocator between training steps. */
#ifndef VKL_LLAMA_ADALORA_H
#define VKL_LLAMA_ADALORA_H

#include "llama/llama.h"
#include "lora/lora_adalora.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_llama_adalora_mod {
    char *module; /* model.layers.N.self_attn.q_proj */
    int in, out;
    vkl_tensor *a, *e, *b; /* lora_A [r, in], lora_E [r] (PEFT's [r, 1]), lora_B [out, r]; f32 */
} vkl_llama_adalora_mod;

typedef struct vkl_llama_adalora {
    vkl_ctx *ctx;
    vkl_adalora_config cfg;
    float scale; /* vkl_adalora_scale(cfg) */
    vkl_llama_adalora_mod *v;
    int n;
    vkl_tensor *eye; /* [r, r] identity, for the regulariser */
} vkl_llama_adalora;

/* Modules of rank cfg->init_r on every projection whose name ends with "." +
 * a target (NULL: PEFT's LLaMA default q_proj, v_proj), initialised as
 * PEFT's reset_lora_parameters: A and B normal with std 0.02 (drawn from
 * seed, one stream per module and tensor), E zero, so training starts at the
 * base model. The config is checked (vkl_adalora_config_check). */
int vkl_llama_adalora_init(const vkl_llama *m, const vkl_adalora_config *cfg, const char *const *targets, int nt,
                           uint64_t seed, vkl_llama_adalora **out, vkl_err *e);
void vkl_llama_adalora_free(vkl_llama_adalora *d);
const vkl_llama_adalora_mod *vkl_llama_adalora_find(const vkl_llama_adalora *d, const char *module);

/* The adapted layer: y = x W^T + bias + ((x A^T) * (E * scale)) B^T, the
 * scale per rank so that E gets its gradient through the fused LoRA matmul. */
vkl_tensor *vkl_llama_adalora_linear(vkl_graph *g, const vkl_llama_adalora *d, const vkl_llama_adalora_mod *am,
                                     vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias);
/* PEFT's orthogonal regulariser without its weight: the mean over every A
 * and B of ||A A^T - I||_F and ||B^T B - I||_F; [1, 1]. */
vkl_tensor *vkl_llama_adalora_orth(vkl_graph *g, const vkl_llama_adalora *d);

struct vkl_llama_train;
/* After training step `step` (1-based) of a trainer made with this set:
 * reads every A, E, B and their gradients back, runs the allocator
 * (vkl_adalora_alloc_step) and uploads E when ranks were masked. The
 * gradients are taken times grad_factor: the clipping factor the optimiser
 * applied (min(1, max_grad_norm / (norm + 1e-6)), torch's clip_grad_norm_),
 * since PEFT scores the gradients a Trainer has clipped in place. */
int vkl_llama_adalora_allocate(const vkl_llama_adalora *d, vkl_adalora_alloc *a, const struct vkl_llama_train *s,
                               int step, float grad_factor, int *budget, vkl_err *e);
/* The clipping factor of a step with global gradient norm `norm`. */
float vkl_llama_adalora_clip_factor(float max_grad_norm, float norm);
/* A new allocator sized for the set's modules. */
int vkl_llama_adalora_alloc_new(const vkl_llama_adalora *d, vkl_adalora_alloc **a, vkl_err *e);
/* Writes the set as PEFT saves it (vkl_adalora_save_peft) with the
 * allocator's pattern (a may be NULL: nothing masked). */
int vkl_llama_adalora_save(const vkl_llama_adalora *d, const vkl_adalora_alloc *a, const char *const *targets, int nt,
                           const char *base, const char *st_path, const char *config_path, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
