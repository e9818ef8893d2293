/* Prompt conditioning internals shared by sd_model.c and sdxl_prompt.c. */
#ifndef VKL_SDXL_PROMPT_H
#define VKL_SDXL_PROMPT_H

#include "sd/sd_model.h"

/* AUTOMATIC1111's emphasis on channels [c0, c1) of z [tokens, width]: each
 * token's vector times its weight, then the mean of those channels restored.
 * Nothing changes when every weight is 1. */
void vkl_sd_emphasis(float *z, const float *w, size_t tokens, int width, int c0, int c1);

/* vkl_sd_encode_prompt_pooled for a model with two text encoders. */
int vkl_sdxl_encode_prompt(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks, float **out,
                           float **pooled, int *chunks, vkl_err *e);

#endif
