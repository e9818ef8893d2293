/* The general matmul node that vkl_matmul, vkl_linear and the LoRA ops build:
 *   y = alpha * (a . b) * col_scale + bias + a2 . b2
 * (see shaders/matmul_common.glsl). Internal to the runtime's ops. */
#ifndef VKL_MATMUL_INTERNAL_H
#define VKL_MATMUL_INTERNAL_H

#include "op_util.h"

typedef struct vkl_matmul_extra {
    vkl_tensor *bias;       /* [N] f32/f16/bf16, or NULL */
    vkl_tensor *col_scale;  /* [N] f32 contiguous, or NULL: multiplies column n of a . b */
    float alpha;            /* multiplies a . b (1 for a plain product) */
    /* Optional second product added to the result: a2 [..., M, K2] contiguous
     * with y's batch dims (or none), b2 [K2, N] any strides, shared by batches. */
    vkl_tensor *a2, *b2;
} vkl_matmul_extra;

/* Appends the node (op names it in errors and profiles). NULL on error. */
vkl_tensor *vkl_matmul_general(vkl_graph *g, const char *op, vkl_tensor *a, vkl_tensor *b, const vkl_matmul_extra *x);

#endif
