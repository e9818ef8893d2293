/* Copy into memory that outlives the graph (a KV cache, a running buffer):
 * the one op whose output is not a new tensor. Runs the identity variant of
 * the unary kernel (shaders/unary.comp), so any strided f32/f16/bf16 source
 * works; the destination is an f32 window, contiguous. */
#include "op_util.h"

#include <string.h>

static int emit_copy(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    uint32_t spec[2] = {(uint32_t)VKL_UNARY_IDENTITY, (uint32_t)n->src[0]->dtype};
    return vkl_op_emit_map(g, n->src[0], n->dst, VKL_KERNEL_UNARY, spec, 2, 1.0f, 0.0f, e);
}

/* What is read back from persistent memory is a constant to autograd (a
 * detach): nothing flows back to the source. */
static int backward_detached(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    (void)g; (void)n; (void)dy; (void)need; (void)dsrc;
    return 0;
}

vkl_tensor *vkl_copy_into(vkl_graph *g, vkl_tensor *src, vkl_tensor *dst)
{
    if (!src || !dst || vkl_graph_failed(g)) return NULL;
    char a[96], b[96];
    vkl_tensor_describe(src, a, sizeof a);
    vkl_tensor_describe(dst, b, sizeof b);
    const vkl_tensor *root = dst->view_of ? dst->view_of : dst;
    if (root->graph) return vkl_graph_set_error(g, "copy_into: destination %s must be (a view of) a persistent tensor", b);
    if (dst->dtype != VKL_F32 || !vkl_tensor_is_contiguous(dst))
        return vkl_graph_set_error(g, "copy_into: destination %s must be a contiguous f32 window", b);
    if (!vkl_op_float_type(src->dtype)) return vkl_graph_set_error(g, "copy_into: source %s is not a float tensor", a);
    if (vkl_tensor_nelem(src) != vkl_tensor_nelem(dst))
        return vkl_graph_set_error(g, "copy_into: %s and %s differ in size", a, b);
    /* the source is addressed with the destination's shape */
    vkl_tensor *s = src;
    if (src->ndim != dst->ndim || memcmp(src->shape, dst->shape, sizeof src->shape)) {
        if (!vkl_tensor_is_contiguous(src))
            return vkl_graph_set_error(g, "copy_into: %s and %s differ in shape and the source is strided", a, b);
        s = vkl_reshape(g, src, dst->ndim, dst->shape);
    }
    vkl_node *n = s ? vkl_graph_add_node(g, "copy_into", dst, &s, 1, emit_copy, NULL, 0) : NULL;
    if (!n) return NULL;
    n->backward = backward_detached;
    return dst;
}

/* ---- accumulation into persistent memory (shaders/accumulate.comp) ---- */

typedef struct { float alpha, beta; } accum_params;

static int emit_accumulate(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const accum_params *ap = (const accum_params *)n->params.bytes;
    vkl_tensor *y = n->dst, *x = n->nsrc ? n->src[0] : n->dst;
    uint32_t spec[1] = {(uint32_t)x->dtype};
    return vkl_op_emit_map(g, x, y, VKL_KERNEL_ACCUMULATE, spec, 1, n->nsrc ? ap->alpha : 0.0f, ap->beta, e);
}

vkl_tensor *vkl_accumulate_into(vkl_graph *g, vkl_tensor *src, vkl_tensor *dst, float alpha, float beta)
{
    if (!dst || vkl_graph_failed(g)) return NULL;
    char a[96] = "(none)", b[96];
    if (src) vkl_tensor_describe(src, a, sizeof a);
    vkl_tensor_describe(dst, b, sizeof b);
    const vkl_tensor *root = dst->view_of ? dst->view_of : dst;
    if (root->graph)
        return vkl_graph_set_error(g, "accumulate_into: destination %s must be (a view of) a persistent tensor", b);
    if (dst->dtype != VKL_F32 || !vkl_tensor_is_contiguous(dst))
        return vkl_graph_set_error(g, "accumulate_into: destination %s must be a contiguous f32 window", b);
    vkl_tensor *s = src;
    if (src) {
        if (!vkl_op_float_type(src->dtype))
            return vkl_graph_set_error(g, "accumulate_into: source %s is not a float tensor", a);
        if (vkl_tensor_nelem(src) != vkl_tensor_nelem(dst))
            return vkl_graph_set_error(g, "accumulate_into: %s and %s differ in size", a, b);
        if (src->ndim != dst->ndim || memcmp(src->shape, dst->shape, sizeof src->shape)) {
            if (!vkl_tensor_is_contiguous(src))
                return vkl_graph_set_error(g, "accumulate_into: %s and %s differ in shape and the source is strided", a,
                                           b);
            s = vkl_reshape(g, src, dst->ndim, dst->shape);
            if (!s) return NULL;
        }
    }
    accum_params ap = {alpha, beta};
    vkl_node *n = vkl_graph_add_node(g, "accumulate_into", dst, s ? &s : NULL, s ? 1 : 0, emit_accumulate, &ap, sizeof ap);
    if (!n) return NULL;
    n->backward = backward_detached;
    return dst;
}
