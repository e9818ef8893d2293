/* A loaded Stable Diffusion model: configuration, weights on the device,
 * tokenizer, and the three networks that use them. */
#ifndef VKL_SD_MODEL_H
#define VKL_SD_MODEL_H

#include "sd/clip_text.h"
#include "sd/sd_source.h"
#include "sd/unet.h"
#include "sd/vae.h"
#include "tokenizer/clip_tokenizer.h"

typedef struct vkl_sd_model_opts {
    const char *tokenizer;   /* vocabulary path (NULL: the model folder, then $VKLORA_CLIP_VOCAB) */
    vkl_dtype weight_dtype;  /* storage of matrices and kernels: VKL_F16 (default) or VKL_F32 */
    const char *yaml;        /* original config for a single file (NULL: sidecar) */
} vkl_sd_model_opts;

typedef struct vkl_sd_model {
    vkl_ctx *ctx;
    vkl_sd_source *src;
    const vkl_sd_config *cfg;
    vkl_weights *w;
    vkl_clip_tokenizer *tok;
    vkl_clip_text te;
    vkl_unet unet;
    vkl_vae vae;
    char path[1024];
} vkl_sd_model;

void vkl_sd_model_opts_default(vkl_sd_model_opts *o);
int vkl_sd_model_load(vkl_ctx *c, const char *path, const vkl_sd_model_opts *o, vkl_sd_model **out, vkl_err *e);
void vkl_sd_model_free(vkl_sd_model *m);

/* Text conditioning for one prompt in AUTOMATIC1111's way: emphasis weights
 * ("(word:1.2)") applied to the encoder output with the mean restored,
 * prompts longer than 75 tokens as several 77-token chunks concatenated.
 * clip_skip as in A1111 (1 = last layer, 2 = penultimate). min_chunks pads
 * with empty-prompt chunks (so cond and uncond line up). *out is malloc'd
 * [chunks*77, hidden]; *chunks receives the chunk count. plain: no emphasis syntax. */
int vkl_sd_encode_prompt(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks, float **out,
                         int *chunks, vkl_err *e);

#endif
