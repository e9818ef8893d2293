/* LoRA / DoRA fine-tuning of a LLaMA: causal-LM loss (transformers'
 * LlamaForCausalLM: logits[:, t] predicts labels[:, t+1], mean cross-entropy
 * over labels != -100), backward to the adapter tensors only, AdamW in the
 * same graph. The graph is built and planned once for a batch shape; each
 * step uploads ids, shifted labels and the attention mask. */
#ifndef VKL_LLAMA_TRAIN_H
#define VKL_LLAMA_TRAIN_H

#include "llama/llama.h"
#include "dist.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_LLAMA_IGNORE (-100)

/* targets[b, t] = labels[b, t+1]; the last position of each row is ignored. */
void vkl_llama_shift_labels(const int32_t *labels, int B, int L, int32_t *targets);

typedef struct vkl_llama_train_opts {
    vkl_adamw_opts adam;
    float loraplus_ratio; /* learning-rate multiplier of the B (up) matrices; 1 = plain LoRA */
    int keep_logits;      /* keep the logits readable after a step */
    /* IA3 vectors to train instead of an adapter set or DoRA set (both NULL
     * then): only the vectors get gradients. Build them with multiplier 1 from
     * one adapter (vkl_llama_ia3_init for a fresh one), so the trained tensors
     * are PEFT's ia3_l; vkl_llama_ia3_store reads them back for saving. */
    const vkl_llama_ia3 *ia3;
    /* AdaLoRA modules to train instead (llama_adalora.h; the others NULL):
     * A, E and B get gradients, keys base_model.model.<module>.lora_A /
     * .lora_E / .lora_B, and the loss minimised is the cross-entropy plus
     * cfg.orth_reg_weight x the orthogonal regulariser (the reported loss
     * stays the cross-entropy; vkl_llama_train_reg reads the regulariser). */
    const struct vkl_llama_adalora *adalora;
    /* Gradient accumulation (grad_accum > 1) and data parallelism (dist of
     * size > 1) split the step: vkl_llama_train_accumulate adds a micro-batch's
     * gradient, weighted, into buffers; vkl_llama_train_update sums the
     * buffers across ranks and runs the optimiser (a graph of its own), so
     * every rank takes the same step. Otherwise (grad_accum <= 1 and one
     * process) the update is fused into the step's graph. */
    int grad_accum;
    vkl_dist *dist;
    /* DyLoRA (lora/lora_dylora.h): the adapter set's down / up tensors are
     * trained by rank blocks; the caller draws the ranks before each step */
    const struct vkl_dylora *dylora;
    /* Gradients only, no optimiser (HyperLoRA trains another network from
     * them): a step computes the loss and vkl_llama_train_grad; the adapter
     * tensors are left as they are. Not with split steps. */
    int grad_only;
} vkl_llama_train_opts;

typedef struct vkl_llama_train vkl_llama_train;

/* Trainable: every module of `lora` (a set built from exactly one adapter,
 * whose a_cat/b_cat are then the adapter's A and B) or of `dora` (A, B and
 * the magnitude). Exactly one of them is non-NULL. */
int vkl_llama_train_new(const vkl_llama *m, const vkl_lora_set *lora, const vkl_llama_dora *dora, int B, int L,
                        const vkl_llama_train_opts *o, vkl_llama_train **out, vkl_err *e);
void vkl_llama_train_free(vkl_llama_train *s);
/* One step (1-based t): ids and labels int32 [B, L], attn [B, L] (1 = token,
 * 0 = padding; NULL = all tokens). *loss = the loss before the update. */
int vkl_llama_train_step(vkl_llama_train *s, const int32_t *ids, const int32_t *labels, const int *attn, int t,
                         float lr, float *loss, vkl_err *e);

/* Split steps (see vkl_llama_train_opts): adds weight x the gradient of
 * this micro-batch's mean loss into the buffers (weight: the micro-batch's
 * share of the step's predicted tokens, so the sum is the gradient of the
 * global batch's mean loss); *loss = its mean loss. */
int vkl_llama_train_accumulate(vkl_llama_train *s, const int32_t *ids, const int32_t *labels, const int *attn,
                               float weight, float *loss, vkl_err *e);
/* Split steps: sums the buffers over the ranks, runs AdamW step t on them and clears them. */
int vkl_llama_train_update(vkl_llama_train *s, int t, float lr, vkl_err *e);

/* The trainable tensors, in a fixed order, with their PEFT key names
 * (base_model.model.<module>.lora_A.weight, .lora_B.weight, .lora_magnitude_vector;
 * IA3: base_model.model.<module>.ia3_l, held 1-D here, [out,1] or [1,in] in PEFT's file). */
int vkl_llama_train_count(const vkl_llama_train *s);
vkl_tensor *vkl_llama_train_param(const vkl_llama_train *s, int i);
const char *vkl_llama_train_key(const vkl_llama_train *s, int i);
/* Its gradient of the last step (graph tensor, readable after a step; with
 * several ranks this rank's own gradient, before the sum). */
vkl_tensor *vkl_llama_train_grad(const vkl_llama_train *s, int i);
vkl_adamw *vkl_llama_train_optimizer(const vkl_llama_train *s);
vkl_tensor *vkl_llama_train_logits(const vkl_llama_train *s); /* with keep_logits */
/* AdaLoRA: the orthogonal regulariser (without its weight) of the last step, [1, 1]; NULL otherwise. */
vkl_tensor *vkl_llama_train_reg(const vkl_llama_train *s);
/* The gradient the last update used: the step's own (vkl_llama_train_grad),
 * or with AdaLoRA and split steps the sum over micro-batches and ranks,
 * copied before the update cleared its buffers. */
vkl_tensor *vkl_llama_train_step_grad(const vkl_llama_train *s, int i);

#ifdef __cplusplus
}
#endif

#endif
