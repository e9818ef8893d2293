/* New adapters for a Stable Diffusion model: one LoRA/LoCon module per
 * selected layer, down ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kohya's
 * kaiming_uniform(a=sqrt(5))) and up = 0 (training starts at the base model)
 * or random (benchmarks), drawn from the seed with the counter-based RNG. */
#ifndef VKL_LORA_INIT_H
#define VKL_LORA_INIT_H

#include "lora/lora_file.h"

/* Called with each weight's internal module name (no ".weight"); nonzero selects it. */
typedef int (*vkl_lora_select_fn)(void *user, const char *module, int ndim, const int64_t *shape);
/* The UNet's attention projections (to_q, to_k, to_v, to_out.0 of attn1/attn2). */
int vkl_lora_select_unet_attention(void *user, const char *module, int ndim, const int64_t *shape);

int vkl_lora_init_sd(const vkl_sd_config *cfg, vkl_lora_select_fn select, void *user, int rank, float alpha,
                     uint64_t seed, int random_up, vkl_lora *l, vkl_err *e);

#endif
