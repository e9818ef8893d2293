/* HyperLoRA (a research option): a small network that emits the factors of
 * a LoRA adapter from a condition vector (for language models the frozen
 * base model's mean final hidden state over a task description's tokens).
 *
 *   c' = (c - cond_mean) / cond_scale       (the training conditions' centre and spread)
 *   h  = tanh(W1 c' + b1)                    W1 [H, D], b1 [H]
 *   o  = W2 h + b2                           W2 [P, H], b2 [P]
 *
 * o is every module's down (A, [r, in]) then up (B, [out, r]) factor, in the
 * template adapter's module order, flattened row-major. W2 starts at zero and
 * b2 at the template's own factors (PEFT's initialisation: A random, B zero),
 * so the first emitted adapter is an ordinary fresh LoRA for every condition;
 * W1 starts random (N(0, 1/D)) so that each condition has its own h.
 *
 * The MLP runs as one graph of the runtime's ops on the device (linear,
 * tanh); training seeds its backward pass with dL/do, the gradient of the
 * language model's loss with respect to the emitted factors (read off a
 * LoRA training step run on them), and runs AdamW on W1, b1, W2, b2 in the
 * same graph. The centring is on the host: D numbers, once per condition. */
#ifndef VKL_HYPERLORA_H
#define VKL_HYPERLORA_H

#include "lora/lora_file.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_HYPERLORA_PARAMS 4 /* W1, b1, W2, b2 */

typedef struct vkl_hyperlora vkl_hyperlora;

/* What a hypernetwork file records besides its tensors. */
typedef struct vkl_hyperlora_meta {
    char targets[1024]; /* module suffixes as given, comma-separated ("q_proj,v_proj") */
    int rank;
    float alpha;
    int hidden;        /* H */
    int cond_dim;      /* D: the base model's hidden size */
    char base[4096];   /* the base model as named when training */
} vkl_hyperlora_meta;

/* A new network for adapters shaped as tmpl (LoRA modules only, each with
 * down and up factors; its factors become b2). tmpl must outlive it. */
int vkl_hyperlora_new(vkl_ctx *c, const vkl_lora *tmpl, int cond_dim, int hidden, uint64_t seed,
                      vkl_hyperlora **out, vkl_err *e);
void vkl_hyperlora_free(vkl_hyperlora *h);

/* The condition's centre [D] and scale (> 0), kept with the network. */
int vkl_hyperlora_set_centre(vkl_hyperlora *h, const float *mean, float scale, vkl_err *e);
/* The centre and scale of n conditions [n, D]: their mean, and the root mean
 * square distance to it (1 when every condition is the same). */
void vkl_hyperlora_centre_of(const float *conds, int n, int D, float *mean, float *scale);

/* Total emitted numbers P and the offset of module k's down (role
 * VKL_LORA_DOWN) or up (VKL_LORA_UP) factor in o; -1 when out of range. */
int64_t vkl_hyperlora_outputs(const vkl_hyperlora *h);
int64_t vkl_hyperlora_offset(const vkl_hyperlora *h, int module, int role);

/* Runs the network for cond [D]: o into out [P] (may be NULL) and into the
 * factors of l (may be NULL; an adapter with tmpl's modules and shapes). */
int vkl_hyperlora_emit(vkl_hyperlora *h, const float *cond, float *out, vkl_lora *l, vkl_err *e);

/* Training: once, the optimiser (builds the training graph). */
int vkl_hyperlora_train_begin(vkl_hyperlora *h, const vkl_adamw_opts *o, vkl_err *e);
/* One step t (1-based) for cond [D] given dL/do [P]: backward through the
 * MLP and AdamW with rate lr. The gradients stay readable (vkl_hyperlora_grad). */
int vkl_hyperlora_train_step(vkl_hyperlora *h, const float *cond, const float *dout, int t, float lr, vkl_err *e);
/* Parameter i (0 W1, 1 b1, 2 W2, 3 b2) and its gradient of the last step. */
vkl_tensor *vkl_hyperlora_param(const vkl_hyperlora *h, int i);
vkl_tensor *vkl_hyperlora_grad(const vkl_hyperlora *h, int i);
const char *vkl_hyperlora_param_name(int i);

/* File (safetensors): hyper.w1, hyper.b1, hyper.w2, hyper.b2, hyper.cond_mean
 * (f32) and metadata: vklora_kind "hyperlora", targets, rank, alpha, hidden,
 * cond_dim, cond_scale, base_model, modules (JSON [[name, out, in], ...]),
 * and extra (a JSON text, e.g. the training tasks' descriptions; may be NULL).
 * Written through a temporary file and renamed. */
int vkl_hyperlora_save(vkl_hyperlora *h, const vkl_hyperlora_meta *m, const char *extra_key, const char *extra_json,
                       const char *path, vkl_err *e);
/* The metadata alone (to build the template: vkl_llama_lora_init with the
 * targets, rank and alpha); refuses a file that is not a hypernetwork. */
int vkl_hyperlora_read_meta(const char *path, vkl_hyperlora_meta *m, vkl_err *e);
/* The network of the file for adapters shaped as tmpl: every module of the
 * file must be tmpl's, in order, with the same shapes. */
int vkl_hyperlora_load(vkl_ctx *c, const char *path, const vkl_lora *tmpl, vkl_hyperlora **out, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
