/* A text's condition vector for HyperLoRA (lora/hyperlora.h) on Stable
 * Diffusion 1.x / 2.x: the frozen text encoder's final hidden states (after
 * its final layer norm, as the UNet reads them with clip skip 1) averaged
 * over the text's tokens and its EOS token. BOS is left out of the mean (a
 * causal encoder gives it the same state for every text), and so is the
 * padding. Texts longer than 75 tokens are cut as the pipelines cut them. */
#ifndef VKL_SD_CONDITION_H
#define VKL_SD_CONDITION_H

#include "sd/sd_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* out [m->cfg->unet.cross_attention_dim]; refuses SDXL (two encoders). */
int vkl_sd_text_condition(vkl_sd_model *m, const char *text, float *out, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
