/* Segment normalisations: ops that normalise each segment of a tensor with
 * statistics of that segment (group norm, layer norm, RMS norm, softmax).
 * Two nodes: per-chunk statistics (norm_stats.comp), then merge and apply
 * (norm_apply.comp), so long segments spread over many workgroups.
 *
 * A segment s (0 <= s < nseg) starts at element offset strided(s, sdim, sst)
 * of x; element e of it (0 <= e < seglen = edim[0]*edim[1]*edim[2]) sits at
 * strided(e, edim, est) from there. edim[0] is the number of "lines" (group
 * norm: channels of the group), edim[1]*edim[2] their length. y is f32,
 * contiguous, shaped like x, y[s * seglen + e]. */
#ifndef VKL_NORM_INTERNAL_H
#define VKL_NORM_INTERNAL_H

#include "op_util.h"

typedef enum { VKL_SEG_MEANVAR = 0, VKL_SEG_RMS = 1, VKL_SEG_SOFTMAX = 2 } vkl_seg_mode;

typedef struct vkl_seg_desc {
    vkl_seg_mode mode;
    int64_t nseg, seglen;
    int64_t sdim[3], sst[3];
    int64_t edim[3], est[3];
    int per_elem;          /* gamma/beta index = position in the line (row norms) */
    int64_t pmod, pmul;    /* else gamma/beta index = (s % pmod) * pmul + line */
    float fparam;          /* eps, or the softmax scale */
    int silu;
} vkl_seg_desc;

/* Elements of one segment per statistics workgroup (64 invocations x 64). */
#define SEG_CHUNK 4096

/* Parameters of the statistics and apply nodes (and of the backward nodes). */
typedef struct vkl_seg_params {
    vkl_seg_desc d;
    int64_t nchunk;
    int has_gamma, has_beta;
} vkl_seg_params;

/* Elements of one line per apply workgroup on this device. */
int64_t vkl_seg_block(const vkl_ctx *c);

/* Backward rule of the apply node (norm_grad.c): src = {x, stats, [gamma],
 * [beta]}; the statistics get no gradient (dx accounts for them). */
int vkl_seg_norm_backward(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc);

/* Appends the two nodes; gamma/beta may be NULL (not for softmax). */
vkl_tensor *vkl_seg_norm(vkl_graph *g, const char *name, vkl_tensor *x, vkl_tensor *gamma, vkl_tensor *beta,
                         const vkl_seg_desc *d);

/* Fills d for segments = rows over the last dimension of x (any strides),
 * gamma/beta per element of the row. */
void vkl_seg_rows_desc(const vkl_tensor *x, vkl_seg_mode mode, float fparam, vkl_seg_desc *d);

#endif
