/* The f32 block scales of an NF4_DQ weight, computed on the device before a
 * product reads the weight (shaders/nf4dq_scales.comp). The matmul builds one
 * per product (forward and input gradient each): the pass reads one byte per
 * 64 weights, so it costs far less than keeping every layer's scales alive
 * from the forward to the backward would cost in memory. CPU reference: the
 * host's vkl_nf4dq_unpack, whose value per block the test divides out. */
#include "op_util.h"

#include "quant.h"

static int emit_nf4dq_scales(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_tensor *w = n->src[0], *y = n->dst;
    vkl_bind bind[2];
    vkl_quant_offsets qo;
    struct { uint32_t nblocks, map_off, qcode_off, s_off; } pc;
    pc.nblocks = (uint32_t)vkl_tensor_nelem(y);
    if (vkl_bind_quant(g, w, &bind[0], &qo, e) ||
        vkl_bind_span(g, y, 0, vkl_tensor_nelem(y), &bind[1], &pc.s_off, e))
        return -1;
    pc.map_off = qo.scale_off;
    pc.qcode_off = qo.qcode_off;
    uint32_t gx, gy;
    vkl_op_grid(((uint64_t)pc.nblocks + 255) / 256, &gx, &gy);
    return vkl_emit_dispatch(g, VKL_KERNEL_NF4DQ_SCALES, NULL, 0, bind, 2, &pc, sizeof pc, gx, gy, 1, e);
}

static int backward_frozen(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    (void)g; (void)n; (void)dy; (void)need; (void)dsrc;
    return 0;
}

vkl_tensor *vkl_nf4dq_scales(vkl_graph *g, vkl_tensor *w)
{
    if (!w || vkl_graph_failed(g)) return NULL;
    const vkl_tensor *root = w->view_of ? w->view_of : w;
    if (w->dtype != VKL_NF4_DQ || w->offset != root->offset || vkl_tensor_nelem(w) != vkl_tensor_nelem(root)) {
        char d[96];
        vkl_tensor_describe(w, d, sizeof d);
        return vkl_graph_set_error(g, "nf4dq_scales: %s is not a whole NF4_DQ weight", d);
    }
    vkl_quant_layout l;
    vkl_quant_layout_of(VKL_NF4_DQ, (uint64_t)vkl_tensor_nelem(w), &l);
    int64_t nb = (int64_t)l.nblocks;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, 1, &nb);
    vkl_node *nd = vkl_graph_add_node(g, "nf4dq_scales", y, &w, 1, emit_nf4dq_scales, NULL, 0);
    if (!nd) return NULL;
    nd->backward = backward_frozen;
    return y;
}
