/* The 8-bit blockwise AdamW update (shaders/adamw8.comp): one workgroup per
 * block of 256 elements, split into binding windows of whole blocks. */
#include "adamw8.h"

#include "ops/op_util.h"
#include "optim.h"

typedef struct { float lr_mult; } adamw8_params;

static int emit_adamw8(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const adamw8_params *ap = (const adamw8_params *)n->params.bytes;
    vkl_tensor *p = n->dst, *gr = n->src[0], *codes = n->src[1], *amax = n->src[2];
    int64_t total = vkl_tensor_nelem(p), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, VKL_ADAMW8_BLOCK);
    for (int64_t first = 0; first < total; first += win) {
        int64_t cnt = total - first < win ? total - first : win;
        int64_t blk0 = first / VKL_ADAMW8_BLOCK, nblk = (cnt + VKL_ADAMW8_BLOCK - 1) / VKL_ADAMW8_BLOCK;
        struct { uint32_t n, p_off, g_off, c_off, a_off; float lr_mult; } pc = {(uint32_t)cnt, 0, 0, 0, 0, ap->lr_mult};
        vkl_bind b[7];
        uint32_t d1, d2, d3, c_bytes;
        if (vkl_bind_span(g, p, first, cnt, &b[0], &pc.p_off, e) || vkl_bind_span(g, gr, first, cnt, &b[1], &pc.g_off, e) ||
            vkl_bind_span(g, codes, blk0 * 2 * VKL_ADAMW8_BLOCK, nblk * 2 * VKL_ADAMW8_BLOCK, &b[2], &c_bytes, e) ||
            vkl_bind_span(g, amax, blk0 * 2, nblk * 2, &b[3], &pc.a_off, e) ||
            vkl_bind_span(g, n->src[3], 0, 8, &b[4], &d1, e) || vkl_bind_span(g, n->src[4], 0, 4, &b[5], &d2, e) ||
            vkl_bind_span(g, n->src[5], 0, 512, &b[6], &d3, e))
            return -1;
        if (d1 || d2 || d3 || c_bytes % 4) return vkl_fail(e, "internal: 8-bit optimiser state not aligned");
        pc.c_off = c_bytes / 4;
        uint32_t gx, gy;
        vkl_op_grid((uint64_t)nblk, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_ADAMW8, NULL, 0, b, 7, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

int vkl_adamw8_add_node(vkl_graph *g, vkl_tensor *p, vkl_tensor *grad, vkl_tensor *codes, vkl_tensor *absmax,
                        vkl_tensor *hyper, vkl_tensor *state, vkl_tensor *qmap, float lr_mult, vkl_err *e)
{
    adamw8_params ap = {lr_mult};
    /* the update reads the state written by clip_factor (src) and writes p,
     * codes and absmax in place */
    vkl_tensor *src[6] = {grad, codes, absmax, hyper, state, qmap};
    if (!vkl_graph_add_node(g, "adamw8", p, src, 6, emit_adamw8, &ap, sizeof ap))
        return vkl_fail(e, "%s", vkl_graph_error(g));
    return 0;
}
