/* Adapters on a loaded Stable Diffusion model, as an application uses them:
 * read against the model's layers (every key must resolve), then applied at
 * run time (a small set of factors beside the weights, whose multipliers
 * change without reloading anything) or merged into the weights. */
#ifndef VKL_SD_ADAPTERS_H
#define VKL_SD_ADAPTERS_H

#include "lora/lora_apply.h"
#include "sd/sd_model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_SD_MAX_ADAPTERS 16

typedef struct vkl_sd_adapters {
    vkl_sd_model *m;
    int n;
    vkl_lora lora[VKL_SD_MAX_ADAPTERS];
    vkl_lora_use use[VKL_SD_MAX_ADAPTERS];
    vkl_lora_set *set; /* run time: hooked into the UNet and text encoder */
    int merged;
} vkl_sd_adapters;

/* Reads n adapter files (kohya, LyCORIS, diffusers or PEFT) with their UNet
 * and text-encoder multipliers and applies them to m: at run time, or merged
 * into the weights when merge is set. *out is zeroed first; free it with
 * vkl_sd_adapters_free (which unhooks them) before the model. */
int vkl_sd_adapters_apply(vkl_sd_model *m, const char *const *paths, const float *unet_mult, const float *te_mult,
                          int n, int merge, vkl_sd_adapters *out, vkl_err *e);
/* The same with every adapter cut to its first rank_at rank rows first
 * (vkl_dylora_cut: a DyLoRA file at a lower rank; 0: as read). */
int vkl_sd_adapters_apply_ex(vkl_sd_model *m, const char *const *paths, const float *unet_mult, const float *te_mult,
                             int n, int merge, int rank_at, vkl_sd_adapters *out, vkl_err *e);
/* New multipliers of adapter i (run time only): no reload, a small upload. */
int vkl_sd_adapters_set_weight(vkl_sd_adapters *a, int i, float unet_mult, float te_mult, vkl_err *e);
void vkl_sd_adapters_free(vkl_sd_adapters *a);

#ifdef __cplusplus
}
#endif

#endif
