/* Shared by conv2d.c and conv2d_lora.c (and tests that force a tile shape). */
#ifndef VKL_CONV2D_INTERNAL_H
#define VKL_CONV2D_INTERNAL_H

#include "vkl_internal.h"
#include "ops.h"

/* Register tile of conv2d.comp: workgroup size, output channels and output
 * pixels per invocation. */
typedef struct vkl_conv2d_tile {
    uint32_t wg, tm, tn;
} vkl_conv2d_tile;

/* Parameters of a conv2d.comp node. A convolution split by input-channel
 * ranges is several nodes writing one y: the first (c0 == 0) holds bias and
 * LoRA sources, each later one (acc) reads y as its last source and adds. */
typedef struct vkl_conv2d_node_params {
    int kh, kw, sh, sw, pt, pl;
    int ib, it, ibc, irs;   /* source index of bias, t, b_cat, rank_scale; -1 when absent */
    int acc;                /* adds to y (a later input-channel range) */
    int forced_tile;        /* tile given by the caller (tests), not the device default */
    int64_t c0, cc;         /* input channels of this node */
    vkl_conv2d_tile tile;
} vkl_conv2d_node_params;

/* The tile conv2d uses on this device. */
void vkl_conv2d_default_tile(const vkl_ctx *c, vkl_conv2d_tile *t);

/* Builds y = conv(x, w) + bias [+ B_cat (rank_scale * t)] where t is the
 * f32 [N, R, Ho, Wo] down-projection of a LoRA adapter (or NULL, and b_cat,
 * rank_scale NULL). tile NULL: the device's default. `name` prefixes errors. */
vkl_tensor *vkl_conv2d_build(vkl_graph *g, const char *name, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias,
                             const vkl_conv2d_params *p, vkl_tensor *t, vkl_tensor *b_cat, vkl_tensor *rank_scale,
                             const vkl_conv2d_tile *tile);

/* Backward rule of every conv2d.comp node (runtime/ops/conv2d_grad.c): the
 * first node of a convolution differentiates all of it (every input
 * channel, bias and LoRA factors); the acc nodes add nothing, since y's
 * gradient reaches each of them unchanged. */
int vkl_conv2d_backward(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc);

#endif
