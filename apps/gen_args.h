/* The command line of `vklora generate`: one table of its options
 * (apps/args.h), and what can be checked before the model is loaded. */
#ifndef VKL_APP_GEN_ARGS_H
#define VKL_APP_GEN_ARGS_H

#include "app.h"
#include "args.h"
#include "gen_lora.h"

#include <stdint.h>

typedef struct vkl_app_gen_args {
    const char *lora_v[VKL_GEN_MAX_LORAS];
    vkl_arg_list loras; /* --lora FILE[:W[:W_TE]], repeatable: the specs in lora_v */
    int merge_lora;
    const char *lora_dir, *sweep;
    const char *model, *prompt, *negative, *sampler, *schedule, *convention, *init_image, *tokenizer, *init_noise,
        *save_latents, *output, *model_config;
    vkl_app_dtype_arg weights;
    int vae_tiling; /* a vkl_vae_tiling_mode */
    int lowvram, vae_tile, vae_tile_overlap, rank_at;
    int steps, width, height, batch, clip_skip, quiet, have_seed;
    int orig_w, orig_h, target_w, target_h, crop_left, crop_top; /* SDXL size conditioning, 0: the image's */
    float cfg, strength;
    uint64_t seed;
} vkl_app_gen_args;

/* Reads argv into a (which must not be moved after: loras points into it)
 * and checks the output's name and folder, the files named and the options
 * that go together. -1: go on; otherwise the exit status (0 after --help,
 * 1 a file or folder not found, 2 bad usage), the reason printed. */
int vkl_app_gen_args_parse(int argc, char **argv, vkl_app_gen_args *a);

#endif
