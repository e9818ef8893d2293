/* Helpers shared by op builders. */
#ifndef VKL_OP_UTIL_H
#define VKL_OP_UTIL_H

#include "vkl_internal.h"
#include "ops.h"

/* 1 for the element types shaders read directly (f32, f16, bf16). */
static inline int vkl_op_float_type(vkl_dtype t) { return t == VKL_F32 || t == VKL_F16 || t == VKL_BF16; }

/* Right-aligns t's shape and strides into 4 dims (leading 1s, stride 0). */
static inline void vkl_op_shape4(const vkl_tensor *t, int64_t shape[4], int64_t stride[4])
{
    int pad = 4 - t->ndim;
    for (int i = 0; i < 4; i++) {
        shape[i] = i < pad ? 1 : t->shape[i - pad];
        stride[i] = i < pad ? 0 : t->stride[i - pad];
        if (shape[i] == 1) stride[i] = 0;
    }
}

/* Splits n workgroups over x and y (x at most 65535). */
static inline void vkl_op_grid(uint64_t groups, uint32_t *gx, uint32_t *gy)
{
    *gx = groups < 65535 ? (uint32_t)groups : 65535u;
    *gy = (uint32_t)((groups + *gx - 1) / (*gx ? *gx : 1));
}

/* Same shape as y and contiguous: can be bound window by window like y. */
static inline int vkl_op_same_layout(const vkl_tensor *x, const vkl_tensor *y)
{
    if (!vkl_tensor_is_contiguous(x) || vkl_tensor_nelem(x) != vkl_tensor_nelem(y)) return 0;
    int64_t sx[4], tx[4], sy[4], ty[4];
    vkl_op_shape4(x, sx, tx);
    vkl_op_shape4(y, sy, ty);
    for (int i = 0; i < 4; i++)
        if (sx[i] != sy[i]) return 0;
    return 1;
}

/* Whole rows per window for an output of rows of `len` f32 elements (and an
 * input laid out the same way in dtype dt when `with_input`), starting on the
 * device's offset alignment when there is more than one window (embed.c;
 * the embedding lookups and rope). */
int64_t vkl_op_rows_per_window(vkl_ctx *c, int64_t rows, int64_t len, vkl_dtype dt, int with_input);
/* The largest window of output elements from first, at most n, whose reads
 * of operand x fit one binding (n itself when x is laid out like y). */
int64_t vkl_op_operand_window(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, int64_t first, int64_t n);
/* Binds operand x of an elementwise op for output window [first, first+n):
 * per window when laid out like y, else the part of it the window reads. */
int vkl_op_bind_operand(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, int64_t first, int64_t n,
                        vkl_bind *b, uint32_t *off, uint32_t *local, vkl_err *e);

/* One window-split dispatch series of a single-input map kernel (unary,
 * convert, accumulate: they share one push-constant layout) from x to y. */
int vkl_op_emit_map(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, vkl_kernel kernel, const uint32_t *spec,
                    int nspec, float alpha, float beta, vkl_err *e);

/* Flash attention backward (runtime/ops/attention_flash_grad.c): whether
 * its kernels take these operands (head dimension, sizes, binding limit), and
 * the gradients (o: the forward's output, NULL to recompute it). */
int vkl_attention_flash_grad_fits(vkl_graph *g, const vkl_tensor *q, const vkl_tensor *k, const vkl_tensor *v);
int vkl_attention_flash_grad(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, vkl_tensor *o, float scale,
                             int causal, vkl_tensor *dy, const int *need, vkl_tensor **dsrc);

/* Where a shader finds a bound quantised weight's parts (nf4.glsl), in
 * units of the binding: code_off = twice the byte offset of the codes (the
 * element offset), scale_off = f32 index of the scales (NF4) or of the map
 * (NF4_DQ), qcode_off = word index of NF4_DQ's u8 scale codes. */
typedef struct vkl_quant_offsets {
    uint32_t code_off, scale_off, qcode_off;
} vkl_quant_offsets;
/* During emit: binds the whole memory of the quantised tensor t (a view of a
 * persistent weight, at its start); fails naming t when it exceeds one
 * storage binding. quant_bind.c */
int vkl_bind_quant(vkl_graph *g, const vkl_tensor *t, vkl_bind *b, vkl_quant_offsets *q, vkl_err *e);
/* The block scales of the whole NF4_DQ weight w (or a view of all of it) as
 * an f32 [nblocks] graph tensor, for a product to read plainly. nf4dq_scales.c */
vkl_tensor *vkl_nf4dq_scales(vkl_graph *g, vkl_tensor *w);

#endif
