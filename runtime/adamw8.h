/* The 8-bit blockwise AdamW update node (runtime/adamw8.c), used by optim.c. */
#ifndef VKL_ADAMW8_H
#define VKL_ADAMW8_H

#include "vkl_internal.h"

/* Appends the update of p (f32, n elements) from its gradient, with state
 * codes u8 [blocks, 2, 256] and absmax f32 [blocks, 2] (see optim.h), the
 * optimiser's hyper [8] and step state [4] tensors and qmap f32 [512]
 * (signed map, then unsigned). */
int vkl_adamw8_add_node(vkl_graph *g, vkl_tensor *p, vkl_tensor *grad, vkl_tensor *codes, vkl_tensor *absmax,
                        vkl_tensor *hyper, vkl_tensor *state, vkl_tensor *qmap, float lr_mult, vkl_err *e);

#endif
