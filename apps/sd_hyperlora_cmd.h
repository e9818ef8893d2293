/* `vklora hyperlora` (HyperLoRA for Stable Diffusion 1.x / 2.x, a research
 * option): the parsed options of train (sd_hyperlora_train.c) and emit
 * (cmd_hyperlora.c), and the adapter template both build. */
#ifndef VKL_SD_HYPERLORA_CMD_H
#define VKL_SD_HYPERLORA_CMD_H

#include "lora/lora_file.h"
#include "sd/sd_model.h"

/* The hypernetwork file's `targets` for image models: the UNet's attention
 * projections, `vklora train`'s default network. */
#define VKL_APP_SD_HYPER_TARGETS "unet_attention"

typedef struct vkl_app_sd_hyper_args {
    const char *model, *model_config, *tasks, *out, *log, *hyper, *description;
    int rank, hidden, steps, batch, resolution, force;
    float alpha, lr, wd, max_grad_norm;
    unsigned long long seed;
    char log_buf[4200];
} vkl_app_sd_hyper_args;

/* A kohya LoRA (up = 0) on the UNet's attention projections of m. */
int vkl_app_sd_hyper_template(const vkl_sd_model *m, int rank, float alpha, uint64_t seed, vkl_lora *l, vkl_err *e);

int vkl_app_sd_hyper_train(const vkl_app_sd_hyper_args *a);

#endif
