/* txt2img and img2img with a loaded model: prompt conditioning, the sampler
 * loop with classifier-free guidance (one UNet graph for the uncond+cond
 * batch, planned once and replayed every step), VAE decoding. */
#ifndef VKL_SD_PIPELINE_H
#define VKL_SD_PIPELINE_H

#include "sd/sampler.h"
#include "sd/sd_model.h"
#include "sd/vae_decode.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int (*vkl_step_fn)(void *user, int step, int steps);
/* After each step, for live previews: the sampler's prediction of the clean
 * latents, denoised [batch, channels, h, w] (vkl_sampler_denoised); nonzero
 * stops the run (reported as cancelled). */
typedef int (*vkl_preview_fn)(void *user, int step, int steps, const float *denoised, int batch, int channels,
                              int h, int w);

typedef struct vkl_gen_opts {
    /* negative NULL: the encoding of "" (SD 1.x/2.x), or zeros for a model with
     * force_zeros_for_empty_prompt (SDXL), as diffusers' pipelines */
    const char *prompt, *negative;
    int width, height;          /* multiples of 8 (of the VAE factor) */
    int batch;
    float cfg;                  /* guidance scale; <= 1 runs the cond batch only */
    uint64_t seed;
    int clip_skip;              /* A1111 convention: 1 = last layer */
    int plain_prompt;           /* no emphasis syntax */
    vkl_sampler_config sampler;
    const float *init_noise;    /* [batch, C, h, w] N(0,1) instead of the seeded noise (NULL: seeded) */
    const float *step_noise;    /* [steps, batch, C, h, w] for ancestral samplers (NULL: seeded) */
    const float *init_image;    /* img2img: [batch, 3, H, W] in [-1, 1], NULL for txt2img */
    float strength;             /* img2img: fraction of the schedule to run (0..1] */
    vkl_vae_tiling vae_tiling;  /* decoding in tiles (default: AUTO, 64 with 16 of overlap) */
    vkl_step_fn progress;
    void *progress_user;
    vkl_preview_fn preview;     /* optional */
    void *preview_user;
    /* SDXL size conditioning (add_time_ids): original size, crop top-left and
     * target size; 0 sizes mean the image size (diffusers' defaults) */
    int original_width, original_height;
    int crop_left, crop_top;
    int target_width, target_height;
} vkl_gen_opts;

void vkl_gen_opts_default(vkl_gen_opts *o);

/* SDXL's add_time_ids for o: [orig_h, orig_w, crop_top, crop_left, target_h,
 * target_w], the sizes defaulting to o's image size (diffusers' defaults). */
void vkl_gen_time_ids(const vkl_gen_opts *o, float ids[6]);

typedef struct vkl_gen_result {
    int batch, width, height;
    float *latents;  /* [batch, C, h, w] final latents (before the VAE) */
    float *images;   /* [batch, 3, H, W] decoded, unclamped, in about [-1, 1] */
    double seconds_text, seconds_sampling, seconds_vae;
    uint64_t peak_device_bytes;  /* allocator peak (vkl_mem_stats total_peak) over the whole call */
    int vae_tiles;               /* how many tiles the decoder ran (1: untiled) */
} vkl_gen_result;

/* With a lowvram model, each network is on the device only for its phase:
 * the text encoder for the conditioning, the VAE for img2img's encoding and
 * for decoding, the UNet for sampling; each is released when its phase ends. */
int vkl_sd_generate(vkl_sd_model *m, const vkl_gen_opts *o, vkl_gen_result *r, vkl_err *e);
void vkl_gen_result_free(vkl_gen_result *r);

/* Encodes images [batch, 3, H, W] in [-1, 1] to latent means times the
 * scaling factor. Acquires the VAE and leaves it resident. */
int vkl_sd_encode_image(vkl_sd_model *m, const float *images, int batch, int H, int W, float *latents, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
