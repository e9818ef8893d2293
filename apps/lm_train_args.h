/* The settings of `vklora lm train`, as its command line gives them
 * (cmd_lm_train.c reads them; lm_train_open.c and lm_train_run.c train
 * with them). */
#ifndef VKL_APP_LM_TRAIN_ARGS_H
#define VKL_APP_LM_TRAIN_ARGS_H

#include "lora/lora_adalora.h"
#include "vkl.h"

#define VKL_APP_LM_MAX_TARGETS 16

typedef enum { NET_LORA, NET_DORA, NET_IA3, NET_ADALORA, NET_DYLORA } vkl_app_lm_network;
typedef enum { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE } vkl_app_lm_schedule;

typedef struct vkl_app_lm_train_args {
    const char *model, *data, *out, *tok, *chat, *val_data;
    float val_fraction;
    int eval_every, grad_accum, packing, save_every, resume;
    vkl_dtype weights; /* frozen base matrices; VKL_F32 + weights_given 0: config.json's torch_dtype */
    int weights_given;
    int net; /* a vkl_app_lm_network */
    vkl_adalora_config ada; /* --network adalora */
    int ada_given, alpha_given, rank_given;
    int rank, unit, rslora, steps, epochs, batch, seq_len, warmup, quiet, device, force, gguf;
    float alpha, lr, loraplus, wd, max_grad_norm;
    unsigned long long seed;
    int sched; /* a vkl_app_lm_schedule */
    vkl_dtype base; /* how the frozen model is stored: f32, f16 or nf4 (QLoRA) */
    char targets_buf[512];
    const char *targets[VKL_APP_LM_MAX_TARGETS], *ff[VKL_APP_LM_MAX_TARGETS];
    int nt, nf;
} vkl_app_lm_train_args;

/* "lora", "dora", "ia3", "adalora" or "dylora" */
const char *vkl_app_lm_net_name(int net);

#endif
