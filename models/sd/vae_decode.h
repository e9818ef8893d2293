/* Sampler latents -> images through the VAE decoder, whole or in
 * overlapping tiles.
 *
 * Tiled decoding runs one planned decoder graph on latent windows of a fixed
 * size and blends the decoded windows linearly across their overlaps, so the
 * decoder's activations are those of one tile whatever the image size. It is
 * an approximation wherever there is more than one tile: the decoder's
 * mid-block attention and every GroupNorm see only their tile, not the whole
 * latent (tools that tile the VAE, e.g. diffusers' enable_vae_tiling and
 * ComfyUI's VAE Decode (Tiled), share this). Seams are what the overlap
 * hides; colour statistics can drift a little between distant tiles. When one
 * tile covers the latent the result is the untiled decode, bit for bit. */
#ifndef VKL_VAE_DECODE_H
#define VKL_VAE_DECODE_H

#include "sd/sd_model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    VKL_VAE_TILING_AUTO = 0, /* tiles when the whole decode would not fit comfortably (vkl_vae_tiling_wanted) */
    VKL_VAE_TILING_OFF,
    VKL_VAE_TILING_ON,
} vkl_vae_tiling_mode;

typedef struct vkl_vae_tiling {
    vkl_vae_tiling_mode mode;
    int tile;    /* tile side in latent pixels (<= 0: 64); clipped to the latent */
    int overlap; /* latent pixels neighbouring tiles share at least (16); < tile */
} vkl_vae_tiling;

void vkl_vae_tiling_default(vkl_vae_tiling *t);

/* Starts of the fewest windows of length len that cover [0, size) with at
 * least `overlap` shared between neighbours, spread evenly, first at 0 and
 * last ending at size. Returns their count (1 when len >= size), or -1 when
 * overlap >= len or more than max would be needed. */
int vkl_vae_tile_starts(int size, int len, int overlap, int *starts, int max);

/* Device bytes an untiled decode of [batch, C, h, w] latents needs, about
 * (activations only, weights not included): the full-resolution stage, or the
 * mid-block attention's scores where its head is too wide to run fused. */
uint64_t vkl_vae_decode_bytes(const vkl_sd_vae_config *c, int batch, int h, int w);
/* AUTO's rule: tile when that estimate exceeds a quarter of the largest
 * device-local heap. */
int vkl_vae_tiling_wanted(vkl_ctx *ctx, const vkl_sd_vae_config *c, int batch, int h, int w);

/* Decodes raw sampler latents [batch, C, h, w] (the scaling factor is divided
 * out here) to images [batch, 3, H, W] in about [-1, 1]. t NULL: untiled.
 * *tiles (may be NULL) receives how many tiles ran (1 when untiled).
 * Acquires the VAE (see vkl_sd_model_acquire) and leaves it resident. */
int vkl_sd_decode_ex(vkl_sd_model *m, const float *latents, int batch, int h, int w, const vkl_vae_tiling *t,
                     float *images, int *tiles, vkl_err *e);
int vkl_sd_decode(vkl_sd_model *m, const float *latents, int batch, int h, int w, float *images, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
