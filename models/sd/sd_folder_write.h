/* Writing Stable Diffusion models as diffusers folders (model_index.json,
 * scheduler/, tokenizer/, unet/, vae/, text_encoder/ with config.json and
 * safetensors weights under diffusers names), the form vklora's own models
 * take: a new model with random weights from a folder of configs, and a
 * trained model from the weights on the device. Every folder is built under
 * a temporary name and moved into place, so a failure leaves no output. */
#ifndef VKL_SD_FOLDER_WRITE_H
#define VKL_SD_FOLDER_WRITE_H

#include "sd/sd_config.h"
#include "weights.h"

/* A diffusers folder with random weights (sd_random.h's rule) for the
 * architecture that configs_dir's config files describe (model_index.json,
 * scheduler/scheduler_config.json, unet/config.json, vae/config.json,
 * text_encoder/config.json, and text_encoder_2/config.json for SDXL-style
 * configs; other files there, such as tokenizer_2/, are copied too). The files of
 * tokenizer_dir (may be NULL when configs_dir has tokenizer/) become
 * out/tokenizer/. Matrices are written as dtype (f16 or f32), vectors f32. */
int vkl_sd_write_random_folder(const char *configs_dir, const char *tokenizer_dir, const char *out, vkl_dtype dtype,
                               uint64_t seed, int force, vkl_err *e);

/* The tensors t[0..n) whose internal names start with prefix ("unet.") as
 * one safetensors file with the prefix taken off (diffusers names), matrices
 * as dtype, vectors f32; metadata key/value pairs meta[0..2*nmeta). */
int vkl_sd_write_part_weights(vkl_ctx *c, const char *const *names, vkl_tensor *const *t, int n, const char *prefix,
                              const char *path, vkl_dtype dtype, const char *const *meta, int nmeta, vkl_err *e);

/* A copy of the diffusers folder base at out in which the parts named in
 * parts ("unet", "text_encoder") hold the tensors t[0..n) (internal names:
 * every weight of those parts) instead of base's. */
int vkl_sd_write_trained_folder(vkl_ctx *c, const char *base, const char *const *names, vkl_tensor *const *t, int n,
                                const char *const *parts, int nparts, const char *out, vkl_dtype dtype, int force,
                                vkl_err *e);

#endif
