/* Loading the weights of a Stable Diffusion model (or one of its parts) from
 * a vkl_sd_source onto the device. */
#ifndef VKL_SD_WEIGHTS_H
#define VKL_SD_WEIGHTS_H

#include "sd/sd_source.h"
#include "weights.h"

/* Loads every weight whose internal name starts with prefix ("unet.", "vae.",
 * "text_encoder."; "" for all). Tensors of 2 or more dims are stored as
 * matrix_dtype (VKL_F32 or VKL_F16), 1-dim ones as f32. VKL_NF4 or
 * VKL_NF4_DQ (a QLoRA base, runtime/quant.h): the UNet's linear weights
 * (2-dim unet.*) and its convolution kernels whose rows (C*kh*kw) are a
 * multiple of 64 are quantised to it, every other matrix and kernel is f16. */
int vkl_sd_load_weights(vkl_ctx *c, const vkl_sd_source *s, const char *prefix, vkl_dtype matrix_dtype,
                        vkl_weights *w, vkl_err *e);
/* The dtype weight `name` (internal name) with ndim dims is stored in, by the rule above. */
vkl_dtype vkl_sd_weight_dtype(const char *name, int ndim, const int64_t *shape, vkl_dtype matrix_dtype);

#endif
