/* Ops that backward rules are made of: fill, sum-to-shape (gradient of a
 * broadcast), and the derivative of the unary activations. Shaders:
 * fill.comp, sum_to.comp, unary_grad.comp. CPU references: ref_grad.c. */
#include "op_util.h"

#include <string.h>

/* ---- fill */

typedef struct { float value; } fill_params;

static int emit_fill(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const fill_params *fp = (const fill_params *)n->params.bytes;
    vkl_tensor *y = n->dst;
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    for (int64_t first = 0; first < total; first += win) {
        int64_t cnt = total - first < win ? total - first : win;
        struct { uint32_t n, y_off; float value; } pc = {(uint32_t)cnt, 0, fp->value};
        vkl_bind b;
        if (vkl_bind_span(g, y, first, cnt, &b, &pc.y_off, e)) return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_FILL, NULL, 0, &b, 1, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

vkl_tensor *vkl_fill(vkl_graph *g, int ndim, const int64_t *shape, float value)
{
    if (vkl_graph_failed(g)) return NULL;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, ndim, shape);
    fill_params p = {value};
    return vkl_graph_add_node(g, "fill", y, NULL, 0, emit_fill, &p, sizeof p) ? y : NULL;
}

/* ---- sum_to */

static int emit_sum_to(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_tensor *x = n->src[0], *y = n->dst;
    int64_t xs[4], xst[4], ys[4], yst[4];
    vkl_op_shape4(x, xs, xst);
    vkl_op_shape4(y, ys, yst);
    struct {
        uint32_t n, oshape[4], ostride[4], rshape[4], rstride[4], x_off, y_off;
    } pc;
    memset(&pc, 0, sizeof pc);
    pc.n = (uint32_t)vkl_tensor_nelem(y);
    for (int i = 0; i < 4; i++) {
        int reduced = ys[i] == 1 && xs[i] != 1;
        pc.oshape[i] = (uint32_t)ys[i];
        pc.ostride[i] = reduced ? 0 : (uint32_t)xst[i];
        pc.rshape[i] = reduced ? (uint32_t)xs[i] : 1;
        pc.rstride[i] = reduced ? (uint32_t)xst[i] : 0;
    }
    vkl_bind b[2];
    if (vkl_bind_span(g, x, 0, vkl_tensor_span(x), &b[0], &pc.x_off, e) ||
        vkl_bind_span(g, y, 0, vkl_tensor_nelem(y), &b[1], &pc.y_off, e))
        return -1;
    uint32_t gx, gy;
    vkl_op_grid(((uint64_t)pc.n + 63) / 64, &gx, &gy);
    return vkl_emit_dispatch(g, VKL_KERNEL_SUM_TO, NULL, 0, b, 2, &pc, sizeof pc, gx, gy, 1, e);
}

vkl_tensor *vkl_sum_to(vkl_graph *g, vkl_tensor *x, int ndim, const int64_t *shape)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if (ndim > x->ndim) return vkl_graph_set_error(g, "sum_to: target has more dims than the input");
    int same = ndim == x->ndim;
    for (int i = 0; i < ndim; i++) {
        int64_t xd = x->shape[x->ndim - ndim + i];
        if (shape[i] != xd && shape[i] != 1) return vkl_graph_set_error(g, "sum_to: shape does not broadcast to the input");
        same &= shape[i] == xd;
    }
    if (same) return x;
    if (x->dtype != VKL_F32) x = vkl_scale(g, x, 1.0f);
    /* leading dims of x beyond ndim are reduced too: express the target in x's rank */
    int64_t full[VKL_MAX_DIMS];
    for (int i = 0; i < x->ndim; i++) full[i] = i < x->ndim - ndim ? 1 : shape[i - (x->ndim - ndim)];
    /* a plain "sum over trailing elements" is a row reduction, which parallelises better */
    int64_t kept = 1, k = 0;
    while (k < x->ndim && full[k] == x->shape[k]) kept *= full[k], k++;
    int rest_reduced = 1;
    for (int i = (int)k; i < x->ndim; i++) rest_reduced &= full[i] == 1;
    vkl_tensor *y;
    if (rest_reduced && vkl_tensor_is_contiguous(x)) {
        int64_t rs[2] = {kept, vkl_tensor_nelem(x) / (kept ? kept : 1)};
        y = vkl_sum_rows(g, vkl_reshape(g, x, 2, rs));
    } else {
        y = vkl_graph_tensor(g, VKL_F32, x->ndim, full);
        if (!vkl_graph_add_node(g, "sum_to", y, &x, 1, emit_sum_to, NULL, 0)) return NULL;
    }
    return vkl_reshape(g, y, ndim, shape);
}

/* ---- unary derivative */

typedef struct { int op; float alpha, beta; } ugrad_params;

static int emit_unary_grad(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const ugrad_params *up = (const ugrad_params *)n->params.bytes;
    vkl_tensor *x = n->src[0], *dy = n->src[1], *y = n->dst;
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    int64_t ys[4], yst[4], xs[4], xst[4];
    vkl_op_shape4(y, ys, yst);
    vkl_op_shape4(x, xs, xst);
    uint32_t spec[2] = {(uint32_t)up->op, (uint32_t)x->dtype};
    for (int64_t first = 0, cnt; first < total; first += cnt) {
        cnt = total - first < win ? total - first : win;
        cnt = vkl_op_operand_window(g, x, y, first, cnt);
        cnt = vkl_op_operand_window(g, dy, y, first, cnt);
        struct {
            uint32_t n, first, shape[4], sx[4], x_off, dy_off, y_off, x_local;
            float alpha, beta;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)cnt;
        pc.first = (uint32_t)first;
        pc.alpha = up->alpha;
        pc.beta = up->beta;
        for (int i = 0; i < 4; i++) {
            pc.shape[i] = (uint32_t)ys[i];
            pc.sx[i] = (uint32_t)xst[i];
        }
        vkl_bind b[3];
        uint32_t dloc;
        if (vkl_op_bind_operand(g, x, y, first, cnt, &b[0], &pc.x_off, &pc.x_local, e) ||
            vkl_op_bind_operand(g, dy, y, first, cnt, &b[1], &pc.dy_off, &dloc, e) ||
            vkl_bind_span(g, y, first, cnt, &b[2], &pc.y_off, e))
            return -1;
        if (!dloc) return vkl_fail(e, "internal: unary_grad needs a contiguous dy");
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_UNARY_GRAD, spec, 2, b, 3, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

vkl_tensor *vkl_unary_grad(vkl_graph *g, vkl_tensor *x, vkl_tensor *dy, vkl_unary_op op, float alpha, float beta)
{
    if (!x || !dy || vkl_graph_failed(g)) return NULL;
    if (vkl_tensor_nelem(x) != vkl_tensor_nelem(dy)) return vkl_graph_set_error(g, "unary_grad: dy and x differ in size");
    if (dy->dtype != VKL_F32 || !vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
    ugrad_params p = {(int)op, alpha, beta};
    vkl_tensor *src[2] = {x, dy};
    return vkl_graph_add_node(g, "unary_grad", y, src, 2, emit_unary_grad, &p, sizeof p) ? y : NULL;
}
