/* AdaLoRA (PEFT AdaLoraConfig): SVD-form adapters whose rank budget shrinks
 * during training.
 *
 * Per target module: lora_A [r, in] (right singular vectors), lora_E [r, 1]
 * (singular values), lora_B [out, r] (left singular vectors);
 *     delta W = B (A * E) * scaling / (ranknum + 1e-5)
 * with scaling = lora_alpha (init_r when lora_alpha is 0) and ranknum =
 * init_r, as PEFT keeps it even after the ranks were cut (ranknum is not
 * saved; a reloaded adapter gets init_r back from the config).
 *
 * Training adds PEFT's orthogonal regulariser to the loss:
 *     orth_reg_weight * mean over the A and B tensors of ||P - I||_F
 * with P = A A^T for A and B^T B for B (the Frobenius norm itself, not its
 * square, as PEFT's torch.norm(p="fro")).
 *
 * The rank allocator (PEFT's RankAllocator) runs on the host after every
 * optimiser step from the adapter's values and gradients: importance
 * |p * grad| per element, smoothed (beta1) and its uncertainty (beta2), a
 * score per rank (E's element score + the row mean of A's + the column mean
 * of B's), and the budget schedule: init_r per module for tinit steps, a cubic
 * decrease to target_r until total_step - tfinal, then fixed; every deltaT
 * steps (and at total_step - tfinal) the lowest-scored ranks get E = 0. The
 * final keep/drop pattern is the config's rank_pattern.
 *
 * Files: PEFT's save_pretrained layout, adapter_model.safetensors with
 * base_model.model.<module>.lora_A / .lora_E / .lora_B (no ".weight": PEFT
 * holds them as parameters), cut to the kept ranks, and adapter_config.json
 * with peft_type "ADALORA", init_r, target_r, tinit, tfinal, deltaT, beta1,
 * beta2, orth_reg_weight, total_step and rank_pattern ({"<module>.lora_E":
 * [true, false, ...]}, init_r entries each). */
#ifndef VKL_LORA_ADALORA_H
#define VKL_LORA_ADALORA_H

#include "lora/lora_file.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_adalora_config {
    int init_r, target_r;  /* PEFT defaults 12, 8 */
    int tinit, tfinal;     /* 0, 0 */
    int delta_t;           /* deltaT, 1 */
    int total_step;        /* required: the run's length */
    float beta1, beta2;    /* 0.85, 0.85 */
    float orth_reg_weight; /* 0.5 */
    float lora_alpha;      /* LoraConfig's 8 */
} vkl_adalora_config;

/* PEFT's defaults (total_step 0: still to be set). */
void vkl_adalora_config_default(vkl_adalora_config *c);
/* The checks PEFT makes (a budgeting phase must exist: tinit < total_step -
 * tfinal) and sane ranges; the message names the option. */
int vkl_adalora_config_check(const vkl_adalora_config *c, vkl_err *e);
/* scaling / (ranknum + 1e-5) in float32, as PEFT computes it. */
float vkl_adalora_scale(const vkl_adalora_config *c);

/* PEFT's budget_schedule at a (1-based) step for init_bgt = init_r x modules
 * and target_bgt = target_r x modules: the total rank budget, and whether
 * the allocator masks at this step. */
int vkl_adalora_budget(const vkl_adalora_config *c, int init_bgt, int target_bgt, int step, int *mask);

/* One module as the allocator sees it after a step: its parameters and
 * their gradients (host copies), E written when ranks are masked. After
 * step total_step - tfinal only e is read (the others may be NULL). */
typedef struct vkl_adalora_view {
    const float *a, *b, *ga, *gb, *ge; /* [r, in], [out, r], and the gradients */
    float *e;                          /* [r] */
} vkl_adalora_view;

typedef struct vkl_adalora_alloc vkl_adalora_alloc;

/* An allocator for n modules of init_r ranks with these shapes. */
int vkl_adalora_alloc_new(const vkl_adalora_config *c, int n, const int *in, const int *out, vkl_adalora_alloc **a,
                          vkl_err *e);
void vkl_adalora_alloc_free(vkl_adalora_alloc *a);
/* PEFT's update_and_allocate(step) after the optimiser step of step (1-based):
 * updates the importance scores while step < total_step - tfinal, masks to
 * the budget when the schedule says so, fixes the pattern at total_step -
 * tfinal and re-applies it afterwards. *changed = 1 when E was written (the
 * caller uploads it). *budget: the step's budget. */
int vkl_adalora_alloc_step(vkl_adalora_alloc *a, int step, vkl_adalora_view *v, int *budget, int *changed, vkl_err *e);
/* The current keep pattern of module i (init_r flags, 1 = kept), or NULL
 * before the first masking (every rank kept). */
const unsigned char *vkl_adalora_alloc_pattern(const vkl_adalora_alloc *a, int i);
/* Ranks kept in all modules. */
int vkl_adalora_alloc_total_rank(const vkl_adalora_alloc *a);
/* The allocator's whole state (smoothed scores, pattern) as floats, for a
 * resumable run: its size, a copy out, and a copy back in (checked). */
size_t vkl_adalora_alloc_state_size(const vkl_adalora_alloc *a);
void vkl_adalora_alloc_state_get(const vkl_adalora_alloc *a, float *dst);
int vkl_adalora_alloc_state_set(vkl_adalora_alloc *a, const float *src, vkl_err *e);

/* A trained module for the writer: init_r rows, keep flags (NULL: all kept). */
typedef struct vkl_adalora_module {
    const char *name; /* internal name, e.g. model.layers.0.self_attn.q_proj */
    int r, in, out;
    const float *a, *e, *b;
    const unsigned char *keep;
} vkl_adalora_module;

/* Writes the adapter as PEFT's save_pretrained does (see the header
 * comment): the kept ranks only, rank_pattern null when nothing was masked.
 * targets: target_modules as given; base: base_model_name_or_path (may be
 * NULL). Both files through temporary names. */
int vkl_adalora_save_peft(const vkl_adalora_module *m, int n, const vkl_adalora_config *c, int have_pattern,
                          const char *const *targets, int nt, const char *base, const char *st_path,
                          const char *config_path, vkl_err *e);

/* 1 when the JSON file at path says peft_type "ADALORA" (0 when it says
 * something else or cannot be read: the usual reader reports that). */
int vkl_adalora_config_file_is(const char *path);
/* Reads a PEFT AdaLoRA adapter as plain LoRA modules: down = A * E (the
 * ranks rank_pattern drops left out when the file still holds them), up = B,
 * scale = vkl_adalora_scale; modules with no rank left are dropped. Names,
 * targets and errors as vkl_lora_load. */
int vkl_adalora_load(const char *path, const char *config_path, const vkl_lora_opts *opts, vkl_lora *out, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
