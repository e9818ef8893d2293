/* The diffusers AutoencoderKL of SD (4-level, 8x), sized from
 * vkl_sd_vae_config. Decoder in fp32 (fp16 decoding of SD 1.x overflows). */
#ifndef VKL_VAE_H
#define VKL_VAE_H

#include "sd/sd_blocks.h"
#include "sd/sd_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_vae {
    const vkl_sd_vae_config *cfg;
    const vkl_weights *w; /* names "vae.*" */
} vkl_vae;

/* z [B, latent_ch, h, w] (already divided by the scaling factor) -> image
 * [B, out_ch, 8h, 8w] in about [-1, 1]. */
vkl_tensor *vkl_vae_decode(vkl_graph *g, const vkl_vae *m, vkl_tensor *z);
/* image [B, in_ch, H, W] in [-1, 1] -> moments [B, 2*latent_ch, H/8, W/8]
 * (mean then logvar, logvar unclamped). */
vkl_tensor *vkl_vae_encode(vkl_graph *g, const vkl_vae *m, vkl_tensor *image);

#ifdef __cplusplus
}
#endif

#endif
