/* New adapters for a Stable Diffusion model: one LoRA/LoCon module per
 * selected layer, down ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kohya's
 * kaiming_uniform(a=sqrt(5))) and up = 0 (training starts at the base model)
 * or random (benchmarks), drawn from the seed with the counter-based RNG. */
#ifndef VKL_LORA_INIT_H
#define VKL_LORA_INIT_H

#include "lora/lora_file.h"
#include "weights.h"

/* Called with each weight's internal module name (no ".weight"); nonzero selects it. */
typedef int (*vkl_lora_select_fn)(void *user, const char *module, int ndim, const int64_t *shape);
/* The UNet's attention projections (to_q, to_k, to_v, to_out.0 of attn1/attn2). */
int vkl_lora_select_unet_attention(void *user, const char *module, int ndim, const int64_t *shape);

int vkl_lora_init_sd(const vkl_sd_config *cfg, vkl_lora_select_fn select, void *user, int rank, float alpha,
                     uint64_t seed, int random_up, vkl_lora *l, vkl_err *e);

/* Any trainable kind, with LyCORIS's initialisation (lora_init.c names the
 * shapes and distributions); every kind's delta W is zero at the start:
 *   LoRA / DoRA: as above (DoRA adds a magnitude [1, in(,1,1)], LyCORIS's
 *                dora_scale with wd_on_output false, to be filled by
 *                vkl_lora_init_dora_magnitude);
 *   LoHa: w1_a ~ N(0, 0.1), w1_b ~ N(0, 1), w2_a = 0, w2_b ~ N(0, 1);
 *   LoKr: w1 kaiming-uniform, w2 = 0 or w2_a kaiming-uniform @ w2_b = 0. */
typedef struct vkl_lora_init_opts {
    vkl_lora_kind kind;
    int rank;
    float alpha;
    int factor;     /* LoKr: -1 (the most balanced split) or the preferred smaller factor */
    uint64_t seed;
    int random_up;  /* LoRA only: up random too (benchmarks) */
} vkl_lora_init_opts;
int vkl_lora_init_sd_ex(const vkl_sd_config *cfg, vkl_lora_select_fn select, void *user, const vkl_lora_init_opts *o,
                        vkl_lora *l, vkl_err *e);
/* LyCORIS's factorization(dim, factor): dim = m * n, m <= n, m <= factor when
 * factor > 0 (a divisor factor is taken as is), otherwise the most balanced. */
int vkl_lora_factorization(int64_t dim, int factor, int64_t *m, int64_t *n);
/* Fills every module's DoRA magnitude with the norm of the model's weight
 * (internal name + ".weight" in w) over the magnitude's axis, so W' = W. */
int vkl_lora_init_dora_magnitude(vkl_ctx *c, const vkl_weights *w, vkl_lora *l, vkl_err *e);

#endif
