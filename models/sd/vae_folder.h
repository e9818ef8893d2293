/* A lone diffusers AutoencoderKL folder: config.json and
 * diffusion_pytorch_model[.fp16].safetensors, the form of a diffusers model
 * folder's vae/ subfolder (AutoencoderKL.from_pretrained reads it as is).
 * Weights are named by their diffusers keys; vklora's internal names are
 * those keys with "vae." in front (sd_layout.h). */
#ifndef VKL_VAE_FOLDER_H
#define VKL_VAE_FOLDER_H

#include "sd/sd_config.h"
#include "weights.h"

/* diffusers' AutoencoderKL defaults (one level of 64 channels, 4 latent
 * channels, 32 groups, eps 1e-6, scaling factor 0.18215), what a config.json
 * leaves out keeps. */
void vkl_vae_config_default(vkl_sd_vae_config *v);
/* A diffusers AutoencoderKL config.json (path to the file) on top of the
 * defaults, validated. */
int vkl_vae_config_read(const char *path, vkl_sd_vae_config *v, vkl_err *e);
/* The config.json text diffusers writes for v (malloc'd; NULL when out of
 * memory). shift_factor and latents_mean/std are null. */
char *vkl_vae_config_json(const vkl_sd_vae_config *v);

/* Reads dir/config.json into *v and every weight of dir's safetensors file
 * onto the device as "vae.<key>", matrices and kernels stored as dtype
 * (vectors f32). Missing, misshapen and unexpected tensors are errors naming
 * the file and the tensor. */
int vkl_vae_folder_load(vkl_ctx *c, const char *dir, vkl_dtype dtype, vkl_sd_vae_config *v, vkl_weights *w,
                        vkl_err *e);
/* Writes dir/diffusion_pytorch_model.safetensors (every tensor as dtype, f32
 * or f16, diffusers keys) then dir/config.json, each through a temporary
 * file renamed into place. dir must exist. */
int vkl_vae_folder_save(vkl_ctx *c, const char *dir, const vkl_sd_vae_config *v, const vkl_weights *w,
                        vkl_dtype dtype, vkl_err *e);

#endif
