/* Adapters for `vklora generate`: --lora FILE[:W[:W_TE]] options and the
 * AUTOMATIC1111 prompt syntax <lora:NAME:W> (resolved in --lora-dir), loaded
 * against the model's layers, applied at run time (default) or merged into
 * the weights (--merge-lora). */
#ifndef VKL_GEN_LORA_H
#define VKL_GEN_LORA_H

#include "sd/sd_adapters.h"

#define VKL_GEN_MAX_LORAS VKL_SD_MAX_ADAPTERS

typedef struct vkl_gen_lora {
    int n;
    char *path[VKL_GEN_MAX_LORAS];
    char *name[VKL_GEN_MAX_LORAS];  /* file name without folder and extension */
    float unet_mult[VKL_GEN_MAX_LORAS], te_mult[VKL_GEN_MAX_LORAS];
    int rank_at;                    /* >0: every adapter cut to this rank (DyLoRA) */
    vkl_sd_adapters ad;             /* once applied */
} vkl_gen_lora;

/* Parses "FILE[:W[:W_TE]]" and appends it. */
int vkl_gen_lora_add_spec(vkl_gen_lora *l, const char *spec, vkl_err *e);
/* Removes every <lora:NAME:W> from prompt (returns the cleaned prompt,
 * malloc'd) and appends NAME from lora_dir (NAME.safetensors there or in a
 * subfolder: lora_dir.h). */
char *vkl_gen_lora_from_prompt(vkl_gen_lora *l, const char *prompt, const char *lora_dir, vkl_err *e);
/* Loads every adapter against the model's layers and applies them at run
 * time, or merges them (vkl_sd_adapters_apply). */
int vkl_gen_lora_apply(vkl_gen_lora *l, vkl_sd_model *m, int merge, vkl_err *e);
/* New UNet / text-encoder multipliers of adapter i (run-time mode only). */
int vkl_gen_lora_set_weight(vkl_gen_lora *l, int i, float unet, float te, vkl_err *e);
void vkl_gen_lora_free(vkl_gen_lora *l, vkl_sd_model *m);

#endif
