/* The diffusers UNet2DConditionModel of SD 1.x/2.x/XL, sized entirely from
 * vkl_sd_unet_config: time embedding (plus SDXL's "text_time" added
 * conditioning), down blocks (resnets + optional spatial transformers of any
 * depth + stride-2 downsampler), mid block, up blocks with skip concatenation
 * and nearest-2x upsamplers, output head. */
#ifndef VKL_UNET_H
#define VKL_UNET_H

#include "sd/sd_blocks.h"
#include "sd/sd_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_unet {
    const vkl_sd_unet_config *cfg;
    const vkl_weights *w;       /* names "unet.*" */
    const vkl_lora_set *lora;
    int checkpoint; /* training: each resnet / transformer block is a checkpoint segment */
} vkl_unet;

/* Optional per-module outputs (for debugging and reference tests). */
typedef struct vkl_unet_taps {
    vkl_tensor *time_proj, *time_embedding, *conv_in;
    vkl_tensor *add_time_proj, *add_embedding, *emb; /* SDXL: [6B, dim], [B, E], time + added */
    vkl_tensor *down[8], *mid, *up[8], *conv_norm_out, *conv_out;
} vkl_unet_taps;

/* sample [B, in_ch, h, w]; t f32 [B] (timesteps, may be fractional);
 * ctx [B, 77, cross_attention_dim]. Returns the model output [B, out_ch, h, w]. */
vkl_tensor *vkl_unet_forward(vkl_graph *g, const vkl_unet *m, vkl_tensor *sample, vkl_tensor *t, vkl_tensor *ctx,
                             vkl_unet_taps *taps);
/* The same for mixed-precision training: act16 stores the activations that
 * live long (block boundaries, skip connections, what backward rules read)
 * as f16 (vkl_sd_net.act16). The output is f32 either way. */
vkl_tensor *vkl_unet_forward_ex(vkl_graph *g, const vkl_unet *m, int act16, vkl_tensor *sample, vkl_tensor *t,
                                vkl_tensor *ctx, vkl_unet_taps *taps);

/* SDXL's added conditioning (addition_embed_type "text_time"): the pooled
 * text embedding and the six size numbers [orig_h, orig_w, crop_top,
 * crop_left, target_h, target_w] per row. add_embedding(concat(text_embeds,
 * sinusoids of each time id)) is added to the time embedding. */
typedef struct vkl_unet_added {
    vkl_tensor *text_embeds; /* f32 [B, projection dim] */
    vkl_tensor *time_ids;    /* f32 [B, 6] */
} vkl_unet_added;

/* vkl_unet_forward_ex with added conditioning; add must be given (non-NULL
 * members) exactly when the configuration has add_text_time. */
vkl_tensor *vkl_unet_forward_added(vkl_graph *g, const vkl_unet *m, int act16, vkl_tensor *sample, vkl_tensor *t,
                                   vkl_tensor *ctx, const vkl_unet_added *add, vkl_unet_taps *taps);

#ifdef __cplusplus
}
#endif

#endif
