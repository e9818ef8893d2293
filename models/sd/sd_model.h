/* A loaded Stable Diffusion model: configuration, weights on the device,
 * tokenizer, and the three networks that use them. */
#ifndef VKL_SD_MODEL_H
#define VKL_SD_MODEL_H

#include "sd/clip_text.h"
#include "sd/sd_source.h"
#include "sd/unet.h"
#include "sd/vae.h"
#include "tokenizer/clip_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_sd_model_opts {
    const char *tokenizer;   /* vocabulary path (NULL: the model folder, then $VKLORA_CLIP_VOCAB) */
    vkl_dtype weight_dtype;  /* storage of matrices and kernels: VKL_F16 (default), VKL_F32, VKL_NF4 or VKL_NF4_DQ (UNet linear weights and convolution kernels, sd_weights.h) */
    const char *yaml;        /* original config for a single file (NULL: sidecar) */
    int lowvram;             /* keep no network on the device until it is used (see vkl_sd_model_acquire) */
} vkl_sd_model_opts;

/* The three networks, as bits: what is on the device. */
enum { VKL_SD_PART_TE = 1, VKL_SD_PART_UNET = 2, VKL_SD_PART_VAE = 4, VKL_SD_PART_ALL = 7 };

typedef struct vkl_sd_model {
    vkl_ctx *ctx;
    vkl_sd_source *src;
    const vkl_sd_config *cfg;
    vkl_weights *w;
    vkl_clip_tokenizer *tok;
    vkl_clip_text te;
    /* SDXL: the second tokenizer and text encoder (NULL / unused otherwise) */
    vkl_clip_tokenizer *tok2;
    vkl_clip_text te2;
    /* diffusers' force_zeros_for_empty_prompt (model_index.json; SDXL single
     * files: on, as diffusers loads them): without a negative prompt the
     * unconditional context and pooled embedding are zeros */
    int force_zeros_for_empty_prompt;
    vkl_unet unet;
    vkl_vae vae;
    char path[1024];
    vkl_dtype weight_dtype;  /* storage of the text encoder's and the UNet's matrices */
    int lowvram;
    int resident, pinned;    /* VKL_SD_PART_* bits */
} vkl_sd_model;

void vkl_sd_model_opts_default(vkl_sd_model_opts *o);
int vkl_sd_model_load(vkl_ctx *c, const char *path, const vkl_sd_model_opts *o, vkl_sd_model **out, vkl_err *e);
void vkl_sd_model_free(vkl_sd_model *m);

/* Residency. By default every network is uploaded at load and stays; then
 * these are no-ops. With lowvram, load uploads nothing: acquire uploads the
 * named networks from the source (the mmap'd file, converted again) and
 * release frees them, so one network at a time holds device memory at the
 * price of converting and uploading it at each use. Pinned networks stay
 * (weights changed in place, e.g. merged adapters, must not be re-read). */
int vkl_sd_model_acquire(vkl_sd_model *m, int parts, vkl_err *e);
void vkl_sd_model_release(vkl_sd_model *m, int parts);
int vkl_sd_model_pin(vkl_sd_model *m, int parts, vkl_err *e);

/* Tokens per text-encoder row: CLIP's 77, or the encoder's position count
 * when it has fewer (a small model trained on short captions, such as
 * vklora's own): rows are cut to their first T tokens (BOS, the prompt, EOS
 * and padding while the prompt fits). */
int vkl_sd_text_tokens(const vkl_sd_model *m);

/* Text conditioning for one prompt (acquires the text encoder and leaves it
 * resident: the caller releases it) in AUTOMATIC1111's way: emphasis weights
 * ("(word:1.2)") applied to the encoder output with the mean restored,
 * prompts longer than 75 tokens as several 77-token chunks concatenated.
 * clip_skip as in A1111 (1 = last layer, 2 = penultimate). min_chunks pads
 * with empty-prompt chunks (so cond and uncond line up). *out is malloc'd
 * [chunks*T, hidden] with T = vkl_sd_text_tokens(m); *chunks receives the chunk
 * count. plain: no emphasis syntax. */
int vkl_sd_encode_prompt(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks, float **out,
                         int *chunks, vkl_err *e);

/* Width of the context rows vkl_sd_encode_prompt writes: the text encoder's,
 * or for SDXL both encoders' together. */
int vkl_sd_context_width(const vkl_sd_model *m);
/* Width of the pooled embedding (SDXL's projected text_encoder_2 output), 0
 * for models without one. */
int vkl_sd_pooled_width(const vkl_sd_model *m);

/* vkl_sd_encode_prompt that also returns SDXL's pooled embedding of the
 * prompt's first chunk (as AUTOMATIC1111 pools long prompts): *pooled is
 * malloc'd [vkl_sd_pooled_width] (pooled may be NULL; set to NULL for models
 * without one). For SDXL both tokenizers encode the prompt, each encoder's
 * context gets its own emphasis, and clip_skip 1 is the penultimate layers
 * SDXL conditions on (2: one layer earlier, diffusers' clip_skip=1). */
int vkl_sd_encode_prompt_pooled(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks,
                                float **out, float **pooled, int *chunks, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
