/* `vklora lm hyperlora`: the parsed options of its two subcommands (train:
 * lm_hyperlora_train.c; emit and parsing: cmd_lm_hyperlora.c). */
#ifndef VKL_LM_HYPERLORA_CMD_H
#define VKL_LM_HYPERLORA_CMD_H

#include "lm_hyperlora.h"

typedef struct vkl_app_hyper_args {
    const char *model, *tasks, *out, *log, *tok, *hyper, *description;
    char targets_buf[512], log_buf[4300];
    const char *targets[VKL_APP_HYPER_MAX_TARGETS];
    const char *targets_list;
    int nt, rank, hidden, steps, batch, seq_len, force, weights_given;
    float alpha, lr, wd, max_grad_norm;
    unsigned long long seed;
    vkl_dtype weights;
} vkl_app_hyper_args;

int vkl_app_hyper_train(const vkl_app_hyper_args *a);

#endif
