/* Row reductions (sum, max over the last dimension). Shader:
 * reduce_rows.comp (subgroup and shared-memory variants, chosen by the
 * device's caps). CPU reference: runtime/ref/ref_reduce.c. */
#include "op_util.h"

#include <string.h>

typedef struct { int op; } reduce_params;

static int emit_reduce(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const reduce_params *rp = (const reduce_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *x = n->src[0], *y = n->dst;
    int64_t xs[4], xst[4];
    vkl_op_shape4(x, xs, xst);
    int64_t len = xs[3], rows = xs[0] * xs[1] * xs[2];
    int contiguous = vkl_tensor_is_contiguous(x);
    /* rows per window: contiguous inputs are split by rows; others must fit whole */
    int64_t max_elems = vkl_window_elems(c, x->dtype, 1);
    int64_t per = contiguous ? (len ? max_elems / len : rows) : rows;
    if (per < 1) return vkl_fail(e, "a row of %lld elements exceeds the storage binding limit", (long long)len);
    vkl_kernel kernel = c->caps.subgroup_arith ? VKL_KERNEL_REDUCE_ROWS_SUBGROUP : VKL_KERNEL_REDUCE_ROWS;
    uint32_t spec[2] = {(uint32_t)rp->op, (uint32_t)x->dtype};
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        struct {
            uint32_t rows, n, row_first, rshape[4], sx[4], x_off, y_off, x_local_stride;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.rows = (uint32_t)nr;
        pc.n = (uint32_t)len;
        pc.row_first = (uint32_t)r0;
        pc.rshape[0] = 1;
        pc.rshape[1] = (uint32_t)xs[0];
        pc.rshape[2] = (uint32_t)xs[1];
        pc.rshape[3] = (uint32_t)xs[2];
        pc.sx[0] = (uint32_t)xst[3];
        pc.sx[1] = (uint32_t)xst[0];
        pc.sx[2] = (uint32_t)xst[1];
        pc.sx[3] = (uint32_t)xst[2];
        vkl_bind bind[2];
        if (contiguous) {
            pc.x_local_stride = (uint32_t)len;
            if (vkl_bind_span(g, x, r0 * len, nr * len, &bind[0], &pc.x_off, e)) return -1;
        } else if (vkl_bind_span(g, x, 0, vkl_tensor_span(x), &bind[0], &pc.x_off, e)) {
            return -1;
        }
        if (vkl_bind_span(g, y, r0, nr, &bind[1], &pc.y_off, e)) return -1;
        uint32_t gx, gy;
        vkl_op_grid((uint64_t)nr, &gx, &gy);
        if (vkl_emit_dispatch(g, kernel, spec, 2, bind, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* sum: every element of a row receives the row's gradient. */
static int backward_reduce(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const reduce_params *rp = (const reduce_params *)n->params.bytes;
    vkl_tensor *x = n->src[0];
    if (!need[0]) return 0;
    if (rp->op != 0) {
        vkl_graph_set_error(g, "max_rows has no gradient rule");
        return -1;
    }
    if (!vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    int64_t stride[VKL_MAX_DIMS] = {0};
    for (int i = 0; i < x->ndim; i++) stride[i] = i == x->ndim - 1 ? 0 : dy->stride[i];
    dsrc[0] = vkl_scale(g, vkl_view(g, dy, x->ndim, x->shape, stride, 0), 1.0f);
    return dsrc[0] ? 0 : -1;
}

static vkl_tensor *reduce(vkl_graph *g, vkl_tensor *x, int op, const char *name)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if (!vkl_op_float_type(x->dtype)) return vkl_graph_set_error(g, "%s: input must be f32, f16 or bf16", name);
    int64_t shape[VKL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = 1;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, shape);
    reduce_params p = {op};
    vkl_node *n = vkl_graph_add_node(g, name, y, &x, 1, emit_reduce, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_reduce;
    return y;
}

vkl_tensor *vkl_sum_rows(vkl_graph *g, vkl_tensor *x) { return reduce(g, x, 0, "sum_rows"); }
vkl_tensor *vkl_max_rows(vkl_graph *g, vkl_tensor *x) { return reduce(g, x, 1, "max_rows"); }
