/* What `vklora generate` and `vklora serve` make of a generation result, in
 * one place so that both give the same image for the same settings: 8-bit
 * pixels, AUTOMATIC1111's sampler names and its "parameters" text. */
#ifndef VKL_GEN_IMAGE_H
#define VKL_GEN_IMAGE_H

#include "gen_lora.h"
#include "io/image.h"
#include "sd/gen_params.h"
#include "sd/sampler.h"

/* Image b of a [batch, 3, H, W] result in [-1, 1] as 8-bit RGB. */
int vkl_gen_image_u8(const float *images, int b, int w, int h, vkl_image *im, vkl_err *e);
/* The model's name as A1111 shows it: the file or folder name without
 * folders and without ".safetensors". */
void vkl_gen_model_name(const char *model_path, char *out, size_t size);
/* The "parameters" text of gs with the "Lora hashes" of the adapters in gl
 * (may be NULL), malloc'd in *text. */
int vkl_gen_infotext(vkl_gen_settings *gs, const vkl_gen_lora *gl, char **text, vkl_err *e);

#endif
