/* Full training (`vklora train --network full`): every weight of the UNet,
 * and of the text encoder with --train-te, is a parameter (f32 master
 * copies: the model is loaded in f32), with an optional exponential moving
 * average of the weights as diffusion training keeps one (diffusers'
 * EMAModel: decay_t = min(decay, (1 + t) / (10 + t)) at optimiser step t, so
 * the random start is forgotten early). The average is what the trained model
 * is written with. */
#ifndef VKL_FULL_NETWORK_H
#define VKL_FULL_NETWORK_H

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

/* Parameters: the weights of w named unet.* (and text_encoder.* with
 * train_te), which must all be f32. */
int vkl_full_net_init(vkl_ctx *c, const vkl_weights *w, int train_te, float ema_decay, vkl_full_net *f, vkl_err *e);
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
