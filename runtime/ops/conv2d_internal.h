/* Shared by conv2d.c and conv2d_lora.c (and tests that force a tile shape). */
#ifndef VKL_CONV2D_INTERNAL_H
#define VKL_CONV2D_INTERNAL_H

#include "ops.h"

/* Register tile of conv2d.comp: workgroup size, output channels and output
 * pixels per invocation. */
typedef struct vkl_conv2d_tile {
    uint32_t wg, tm, tn;
} vkl_conv2d_tile;

/* The tile conv2d uses on this device. */
void vkl_conv2d_default_tile(const vkl_ctx *c, vkl_conv2d_tile *t);

/* Builds y = conv(x, w) + bias [+ B_cat (rank_scale * t)] where t is the
 * f32 [N, R, Ho, Wo] down-projection of a LoRA adapter (or NULL, and b_cat,
 * rank_scale NULL). tile NULL: the device's default. `name` prefixes errors. */
vkl_tensor *vkl_conv2d_build(vkl_graph *g, const char *name, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias,
                             const vkl_conv2d_params *p, vkl_tensor *t, vkl_tensor *b_cat, vkl_tensor *rank_scale,
                             const vkl_conv2d_tile *tile);

#endif
