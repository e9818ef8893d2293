/* The CLIP text encoder of SD 1.x (and the same transformer for OpenCLIP in
 * SD 2.x once its weights are mapped to these names): token + position
 * embeddings, pre-LayerNorm blocks with causal self-attention and an MLP,
 * final LayerNorm. Sizes come from vkl_sd_text_config, never constants. */
#ifndef VKL_CLIP_TEXT_H
#define VKL_CLIP_TEXT_H

#include "sd/sd_config.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_clip_text {
    const vkl_sd_text_config *cfg;
    const vkl_weights *w;
    char prefix[32]; /* "text_encoder." or "text_encoder_2." */
    const struct vkl_lora_set *lora; /* adapters applied at run time, or NULL */
} vkl_clip_text;

/* ids: i32 [B, L] (L <= max_positions). skip: how many final layers to skip
 * (0 = last layer; 1 = penultimate, what diffusers calls clip_skip=1 and
 * AUTOMATIC1111 "Clip skip: 2"). final_norm: apply final_layer_norm to the
 * chosen layer's output (SD conditioning does). Returns [B, L, hidden].
 * If layer_out is not NULL, it receives the hidden states after each layer
 * (layer_out[k] = after layer k+1, before the final norm). */
vkl_tensor *vkl_clip_text_forward(vkl_graph *g, const vkl_clip_text *m, vkl_tensor *ids, int skip, int final_norm,
                                  vkl_tensor **layer_out);

#ifdef __cplusplus
}
#endif

#endif
