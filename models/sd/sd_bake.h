/* Adapters baked into a Stable Diffusion checkpoint, written in the layout
 * the model came in:
 *   - a single file in the original layout: every tensor of the input kept
 *     under its name and in its order (EMA copies and buffers included), the
 *     adapted weights replaced in their original form (the VAE's [C,C,1,1]
 *     mid-attention convolutions, OpenCLIP's fused in_proj rows, transposed
 *     text_projection), metadata kept plus vklora_baked_adapters; a <name>.yaml
 *     sidecar of the input is copied next to the output;
 *   - a diffusers folder: a folder again, every file copied (configs,
 *     tokenizer, scheduler), the weight files rewritten under their names;
 *     other weight files of the model folders (another variant, .bin) are left
 *     out, since they would hold the weights without the adapters.
 * The new weights are computed on the CPU in double from the f32 weights:
 * W + sum_i m_i * delta_i, DoRA modules first on the original W (as at run
 * time, lora_apply.h). Output written under a temporary name and renamed, so
 * a failure leaves no output. */
#ifndef VKL_SD_BAKE_H
#define VKL_SD_BAKE_H

#include "lora/lora_apply.h"

typedef struct vkl_sd_bake_opts {
    vkl_dtype dtype; /* VKL_F32 or VKL_F16 for every float tensor; VKL_DTYPE_COUNT keeps each input dtype */
    int force;       /* replace an existing output folder (files are always replaced atomically) */
    const char *description; /* vklora_baked_adapters metadata value (may be NULL) */
    const char *yaml;        /* original config of a single-file model (NULL: <name>.yaml beside it) */
} vkl_sd_bake_opts;

/* uses: adapters loaded against the model's targets (vkl_lora_targets_open). */
int vkl_sd_bake(const char *model, const vkl_lora_use *uses, int n, const char *out, const vkl_sd_bake_opts *o,
                vkl_err *e);

#endif
