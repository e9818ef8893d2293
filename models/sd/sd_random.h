/* Stable Diffusion models with random weights, for benchmarks and for peers
 * to load the same weights: every matrix ~ N(0, 1/fan_in), norm scales 1,
 * biases 0, embeddings N(0, 0.02), drawn from the seed with the counter-based
 * RNG (so the same seed gives the same model everywhere). */
#ifndef VKL_SD_RANDOM_H
#define VKL_SD_RANDOM_H

#include "sd/sd_config.h"
#include "sd/sd_layout.h"
#include "weights.h"

/* The n values of parameter p, number `index` in vkl_sd_params_build's list
 * (its own RNG stream). */
void vkl_sd_random_fill(const vkl_sd_param *p, int index, uint64_t seed, float *x, uint64_t n);

/* Weights whose internal name starts with prefix ("unet.", "" for all) straight
 * onto the device, matrices stored as dtype. */
int vkl_sd_random_weights(vkl_ctx *c, const vkl_sd_config *cfg, const char *prefix, vkl_dtype dtype, uint64_t seed,
                          vkl_weights *w, vkl_err *e);
/* A VAE alone (every "vae.*" weight of a diffusers AutoencoderKL config),
 * matrices and kernels stored as dtype; the streams follow the VAE's own
 * parameter list, so these differ from a whole model's VAE of the same seed. */
int vkl_vae_random_weights(vkl_ctx *c, const vkl_sd_vae_config *cfg, vkl_dtype dtype, uint64_t seed, vkl_weights *w,
                           vkl_err *e);
/* A single-file checkpoint in the original layout (LDM; SGM for SDXL, with
 * OpenCLIP's fused in_proj and transposed text_projection), written atomically. */
int vkl_sd_write_random_checkpoint(const vkl_sd_config *cfg, const char *path, vkl_dtype dtype, uint64_t seed,
                                   vkl_err *e);

#endif
