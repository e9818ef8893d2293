/* Full training (`vklora train --network full`): every weight of the UNet,
 * and of the text encoder with --train-te, is a parameter (f32 master
 * copies: the model is loaded in f32), with an optional exponential moving
 * average of the weights as diffusion training keeps one (diffusers'
 * EMAModel: decay_t = min(decay, (1 + t) / (10 + t)) at optimiser step t, so
 * the random start is forgotten early). The average is what the trained model
 * is written with. */
#ifndef VKL_FULL_NETWORK_H
#define VKL_FULL_NETWORK_H

#include "sd/sd_config.h"
#include "weights.h"

typedef struct vkl_full_net {
    vkl_ctx *ctx;
    int n;
    vkl_tensor **params;  /* borrowed from the model's weights */
    const char **names;   /* internal names ("unet.conv_in.weight"), borrowed */
    float ema_decay;      /* 0: no average */
    vkl_tensor **ema;     /* owned, f32, one per parameter */
    vkl_tensor *ema_rate; /* [1]: 1 - decay_t, uploaded before each update */
    vkl_graph *ema_graph; /* ema += (param - ema) * rate */
} vkl_full_net;

/* Which weights train, by internal name ("unet.conv_in.weight"); nonzero: train it. */
typedef int (*vkl_full_net_wanted_fn)(void *user, const char *name);

/* The SD rule (`vklora train --network full`): every UNet weight and, with
 * --train-te, every encoder weight that reaches the loss: not the layers
 * after the one the UNet reads, nor SDXL's first encoder's final norm (its
 * context is a hidden state before the norm); SDXL's second encoder reaches
 * the loss to its end through the pooled embedding. */
typedef struct vkl_full_net_sd_rule {
    int train_te;
    int te_used[2]; /* per encoder: its layers below this index reach the loss */
    int xl;         /* two encoders (SDXL) */
} vkl_full_net_sd_rule;
vkl_full_net_sd_rule vkl_full_net_sd_rule_for(const vkl_sd_config *cfg, int train_te, int clip_skip);
/* vkl_full_net_wanted_fn with a vkl_full_net_sd_rule as user */
int vkl_full_net_sd_wanted(void *rule, const char *name);

/* Parameters: the weights of w that wanted picks (NULL: those named unet.*),
 * which must all be f32. Every one must reach the loss: the training step
 * refuses a parameter without a gradient. */
int vkl_full_net_init(vkl_ctx *c, const vkl_weights *w, vkl_full_net_wanted_fn wanted, void *user, float ema_decay,
                      vkl_full_net *f, vkl_err *e);
void vkl_full_net_free(vkl_full_net *f);

/* After optimiser step `step` (1-based): folds the new weights into the average. */
int vkl_full_net_ema_update(vkl_full_net *f, int step, vkl_err *e);

/* The average when there is one, else the weights themselves. */
vkl_tensor *const *vkl_full_net_output(const vkl_full_net *f);

/* State files of a run: dir/weights.safetensors (and dir/ema.safetensors),
 * f32 under the internal names, restored exactly. */
int vkl_full_net_save_state(const vkl_full_net *f, const char *dir, vkl_err *e);
int vkl_full_net_load_state(vkl_full_net *f, const char *dir, vkl_err *e);

#endif
