/* Gradient accumulation over micro-batches, as accelerate does it for
 * kohya's scripts: each micro-batch adds loss/N's gradients (scale 1/N) into
 * persistent f32 buffers, one per parameter; the optimiser steps once per N
 * micro-batches on the buffers (their mean gradient) and then clears them.
 * Both halves are nodes of replayed graphs: the micro-step graph appends the
 * additions, the update graph reads, steps and clears. */
#ifndef VKL_GRAD_ACCUM_H
#define VKL_GRAD_ACCUM_H

#include "optim.h"

typedef struct vkl_grad_accum vkl_grad_accum;

/* One zeroed f32 buffer per parameter (the parameter's shape). */
vkl_grad_accum *vkl_grad_accum_new(vkl_ctx *c, vkl_tensor *const *params, int n, vkl_err *e);
void vkl_grad_accum_free(vkl_grad_accum *a);
int vkl_grad_accum_count(const vkl_grad_accum *a);
vkl_tensor *vkl_grad_accum_buffer(const vkl_grad_accum *a, int i);
/* All the buffers, in parameter order (e.g. to sum them across ranks). */
vkl_tensor *const *vkl_grad_accum_buffers(const vkl_grad_accum *a);

/* Appends buffer_i += scale * grads[i] to g for every non-NULL gradient. */
int vkl_grad_accum_append_add(vkl_grad_accum *a, vkl_graph *g, vkl_tensor *const *grads, float scale, vkl_err *e);
/* Appends buffer_i = 0 to g (after whatever in g reads the buffers). */
int vkl_grad_accum_append_clear(vkl_grad_accum *a, vkl_graph *g, vkl_err *e);
/* A planned graph that runs opt on the summed gradients and clears the
 * buffers. Before each run call vkl_adamw_prepare as for a fused step. */
vkl_graph *vkl_grad_accum_update_graph(vkl_grad_accum *a, vkl_adamw *opt, vkl_err *e);
/* Zeroes every buffer from the host. */
int vkl_grad_accum_reset(vkl_grad_accum *a, vkl_err *e);

#endif
