/* GGUF block dequantisation on the device (shaders/gguf_dequant.comp; CPU
 * reference runtime/ref/ref_gguf.c). Large tensors are done in windows of
 * whole blocks so that neither the blocks nor the output exceed one storage
 * binding. */
#include "io/gguf_device.h"

#include "op_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct { int type; } dq_params;

static int emit_dequant(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const dq_params *dp = (const dq_params *)n->params.bytes;
    vkl_tensor *raw = n->src[0], *y = n->dst;
    vkl_ctx *c = vkl_graph_ctx(g);
    uint64_t blk = (uint64_t)vkl_gguf_type_block(dp->type), bytes = (uint64_t)vkl_gguf_type_bytes(dp->type);
    uint64_t nblocks = (uint64_t)vkl_tensor_nelem(y) / blk;
    /* whole blocks per window: the output window and the blocks' words both fit a binding */
    uint64_t by_out = (uint64_t)vkl_window_elems(c, y->dtype, 2) / blk;
    uint64_t by_in = ((uint64_t)vkl_window_elems(c, VKL_I32, 1) - 2) * 4 / bytes;
    uint64_t per = by_out < by_in ? by_out : by_in;
    if (per > (1u << 30) / blk) per = (1u << 30) / blk; /* element counts stay 32-bit in the shader */
    if (blk == 1 && per > 1) per -= per % 2;            /* 16-bit outputs are written two at a time */
    if (!per) return vkl_fail(e, "gguf_dequant: a %s block does not fit one storage binding", vkl_gguf_type_name(dp->type));
    for (uint64_t b0 = 0; b0 < nblocks; b0 += per) {
        uint64_t nb = nblocks - b0 < per ? nblocks - b0 : per;
        uint64_t s = b0 * bytes, words0 = s / 4, words1 = (s + nb * bytes + 3) / 4;
        struct { uint32_t n, q_byte, y_off; } pc;
        vkl_bind bind[2];
        uint32_t qoff;
        if (vkl_bind_span(g, raw, (int64_t)words0, (int64_t)(words1 - words0), &bind[0], &qoff, e) ||
            vkl_bind_span(g, y, (int64_t)(b0 * blk), (int64_t)(nb * blk), &bind[1], &pc.y_off, e))
            return -1;
        pc.n = (uint32_t)(nb * blk);
        pc.q_byte = qoff * 4u + (uint32_t)(s % 4);
        uint64_t inv = y->dtype == VKL_F32 ? pc.n : (pc.n + 1u) / 2u;
        uint32_t spec[2] = {(uint32_t)dp->type, (uint32_t)y->dtype}, gx, gy;
        vkl_op_grid((inv + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_GGUF_DEQUANT, spec, 2, bind, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int backward_none(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    (void)g; (void)n; (void)dy; (void)need; (void)dsrc;
    return 0;
}

vkl_tensor *vkl_gguf_dequant_into(vkl_graph *g, vkl_tensor *raw, int type, vkl_tensor *dst)
{
    if (!raw || !dst || vkl_graph_failed(g)) return NULL;
    char a[96], b[96];
    vkl_tensor_describe(raw, a, sizeof a);
    vkl_tensor_describe(dst, b, sizeof b);
    int blk = vkl_gguf_type_block(type);
    if (!blk) return vkl_graph_set_error(g, "gguf_dequant: block type %d is not supported", type);
    if (raw->graph || raw->view_of || raw->dtype != VKL_I32 || !vkl_tensor_is_contiguous(raw))
        return vkl_graph_set_error(g, "gguf_dequant: blocks %s must be a persistent contiguous i32 tensor", a);
    if (dst->graph || dst->view_of || !vkl_op_float_type(dst->dtype) || !vkl_tensor_is_contiguous(dst))
        return vkl_graph_set_error(g, "gguf_dequant: destination %s must be a persistent contiguous f32/f16/bf16 tensor", b);
    uint64_t n = (uint64_t)vkl_tensor_nelem(dst);
    if (n % (uint64_t)blk)
        return vkl_graph_set_error(g, "gguf_dequant: %s holds %llu elements, not whole %s blocks of %d", b,
                                   (unsigned long long)n, vkl_gguf_type_name(type), blk);
    uint64_t need = n / (uint64_t)blk * (uint64_t)vkl_gguf_type_bytes(type);
    if ((uint64_t)vkl_tensor_nelem(raw) * 4 < need)
        return vkl_graph_set_error(g, "gguf_dequant: %s holds fewer than the %llu bytes of %llu %s elements", a,
                                   (unsigned long long)need, (unsigned long long)n, vkl_gguf_type_name(type));
    dq_params p = {type};
    vkl_node *nd = vkl_graph_add_node(g, "gguf_dequant", dst, &raw, 1, emit_dequant, &p, sizeof p);
    if (!nd) return NULL;
    nd->backward = backward_none;
    return dst;
}

vkl_tensor *vkl_gguf_raw_upload(vkl_ctx *c, const void *bytes, uint64_t nbytes, vkl_err *e)
{
    int64_t words = (int64_t)((nbytes + 3) / 4);
    if (!words) words = 1;
    uint32_t *w = calloc((size_t)words, 4);
    if (!w) {
        vkl_fail(e, "out of host memory for %llu bytes of blocks", (unsigned long long)nbytes);
        return NULL;
    }
    memcpy(w, bytes, (size_t)nbytes);
    vkl_tensor *t = vkl_tensor_new(c, VKL_I32, 1, &words, e);
    if (t && vkl_tensor_upload(c, t, w, VKL_I32, e)) {
        vkl_tensor_free(t);
        t = NULL;
    }
    free(w);
    return t;
}

vkl_tensor *vkl_gguf_tensor_load(vkl_ctx *c, const vkl_gguf_tensor *t, vkl_dtype dt, int ndim, const int64_t *shape,
                                 vkl_err *e)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if ((uint64_t)n != t->nelem) {
        vkl_fail(e, "tensor '%s' has %llu elements, %lld expected", t->name, (unsigned long long)t->nelem, (long long)n);
        return NULL;
    }
    vkl_tensor *raw = vkl_gguf_raw_upload(c, t->data, t->nbytes, e);
    vkl_tensor *y = raw ? vkl_tensor_new(c, dt, ndim, shape, e) : NULL;
    vkl_graph *g = y ? vkl_graph_new(c) : NULL;
    int rc = g ? 0 : -1;
    if (y && !g) vkl_fail(e, "out of host memory");
    if (!rc && !vkl_gguf_dequant_into(g, raw, t->type, y)) rc = vkl_fail(e, "%s", vkl_graph_error(g));
    if (!rc) rc = vkl_graph_plan(g, e) || vkl_graph_run(g, e) ? -1 : 0;
    vkl_graph_free(g);
    vkl_tensor_free(raw);
    if (rc) {
        vkl_tensor_free(y);
        vkl_err_prefix(e, "tensor '%s' (%s): ", t->name, vkl_gguf_type_name(t->type));
        return NULL;
    }
    return y;
}
