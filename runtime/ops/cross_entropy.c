/* Cross-entropy loss with an ignore index (transformers' causal-LM loss once
 * the caller has shifted the labels): mean over valid rows of
 * logsumexp(x_r) - x_r[t_r]. Two differentiable nodes: per-row losses, then
 * their mean over the valid rows (the count comes from the targets on the
 * device, so new targets need no re-plan). Shader: cross_entropy.comp. CPU
 * reference: runtime/ref/ref_cross_entropy.c. */
#include "op_util.h"

#include <string.h>

typedef struct { int ignore_index; } ce_params;

typedef struct {
    uint32_t rows, V, row_first, a_off, t_off, b_off, y_off;
    int32_t ignore_index;
} ce_push;

static vkl_kernel kernel(vkl_graph *g)
{
    return vkl_ctx_caps(vkl_graph_ctx(g))->subgroup_arith ? VKL_KERNEL_CROSS_ENTROPY_SUBGROUP : VKL_KERNEL_CROSS_ENTROPY;
}

/* Modes 0 (src: logits, targets) and 1 (src: logits, targets, d rows); dst:
 * row losses [N] or d logits [N, V]. Windows of whole rows. */
static int emit_rows(vkl_graph *g, vkl_node *n, vkl_err *e, uint32_t mode)
{
    const ce_params *cp = (const ce_params *)n->params.bytes;
    vkl_tensor *x = n->src[0], *t = n->src[1], *dr = mode == 1 ? n->src[2] : NULL, *y = n->dst;
    int64_t V = x->shape[x->ndim - 1], rows = vkl_tensor_nelem(x) / V;
    int64_t per = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 1) / V;
    if (per < 1) return vkl_fail(e, "cross_entropy: a row of %lld logits exceeds the storage binding limit", (long long)V);
    int64_t m = (int64_t)(vkl_ctx_caps(vkl_graph_ctx(g))->storage_align / 4);
    if (per < rows && m > 1 && per >= m) per -= per % m;
    uint32_t spec[1] = {mode};
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        ce_push pc;
        memset(&pc, 0, sizeof pc);
        pc.rows = (uint32_t)nr;
        pc.V = (uint32_t)V;
        pc.row_first = (uint32_t)r0;
        pc.ignore_index = cp->ignore_index;
        vkl_bind b[4];
        if (vkl_bind_span(g, x, r0 * V, nr * V, &b[0], &pc.a_off, e) ||
            vkl_bind_span(g, t, 0, rows, &b[1], &pc.t_off, e) ||
            (dr ? vkl_bind_span(g, dr, 0, rows, &b[2], &pc.b_off, e)
                : vkl_bind_span(g, x, r0 * V, nr * V, &b[2], &pc.b_off, e)) ||
            (mode == 0 ? vkl_bind_span(g, y, r0, nr, &b[3], &pc.y_off, e)
                       : vkl_bind_span(g, y, r0 * V, nr * V, &b[3], &pc.y_off, e)))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid((uint64_t)nr, &gx, &gy);
        if (vkl_emit_dispatch(g, kernel(g), spec, 1, b, 4, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int emit_ce_rows(vkl_graph *g, vkl_node *n, vkl_err *e) { return emit_rows(g, n, e, 0); }
static int emit_ce_rows_grad(vkl_graph *g, vkl_node *n, vkl_err *e) { return emit_rows(g, n, e, 1); }

/* Modes 2 (src: row losses, targets; dst [1,1]) and 3 (src: dy, targets; dst d rows [N]). */
static int emit_mean(vkl_graph *g, vkl_node *n, vkl_err *e, uint32_t mode)
{
    const ce_params *cp = (const ce_params *)n->params.bytes;
    vkl_tensor *a = n->src[0], *t = n->src[1], *y = n->dst;
    int64_t rows = vkl_tensor_nelem(t);
    ce_push pc;
    memset(&pc, 0, sizeof pc);
    pc.rows = (uint32_t)rows;
    pc.V = (uint32_t)cp[1].ignore_index; /* the row length, stored after the ignore index */
    pc.ignore_index = cp->ignore_index;
    vkl_bind b[4];
    if (vkl_bind_span(g, a, 0, vkl_tensor_nelem(a), &b[0], &pc.a_off, e) ||
        vkl_bind_span(g, t, 0, rows, &b[1], &pc.t_off, e) ||
        vkl_bind_span(g, a, 0, vkl_tensor_nelem(a), &b[2], &pc.b_off, e) ||
        vkl_bind_span(g, y, 0, vkl_tensor_nelem(y), &b[3], &pc.y_off, e))
        return -1;
    uint32_t spec[1] = {mode};
    return vkl_emit_dispatch(g, kernel(g), spec, 1, b, 4, &pc, sizeof pc, 1, 1, 1, e);
}

static int emit_ce_mean(vkl_graph *g, vkl_node *n, vkl_err *e) { return emit_mean(g, n, e, 2); }
static int emit_ce_mean_grad(vkl_graph *g, vkl_node *n, vkl_err *e) { return emit_mean(g, n, e, 3); }

/* d logits = d row * (softmax - one-hot); targets get no gradient. */
static int backward_rows(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (!need[0]) return 0;
    vkl_tensor *x = n->src[0];
    if (!vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    vkl_tensor *dx = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape), *src[3] = {x, n->src[1], dy};
    if (!dy || !dx ||
        !vkl_graph_add_node(g, "cross_entropy_rows_grad", dx, src, 3, emit_ce_rows_grad, n->params.bytes,
                            sizeof(ce_params)))
        return -1;
    dsrc[0] = dx;
    return 0;
}

/* d row = dy / #valid on valid rows. */
static int backward_mean(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (!need[0]) return 0;
    vkl_tensor *rows = n->src[0];
    if (!vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    vkl_tensor *dr = vkl_graph_tensor(g, VKL_F32, rows->ndim, rows->shape), *src[2] = {dy, n->src[1]};
    if (!dy || !dr ||
        !vkl_graph_add_node(g, "cross_entropy_mean_grad", dr, src, 2, emit_ce_mean_grad, n->params.bytes,
                            2 * sizeof(ce_params)))
        return -1;
    dsrc[0] = dr;
    return 0;
}

vkl_tensor *vkl_cross_entropy(vkl_graph *g, vkl_tensor *logits, vkl_tensor *targets, int ignore_index)
{
    if (!logits || !targets || vkl_graph_failed(g)) return NULL;
    char sl[96], st[96];
    vkl_tensor_describe(logits, sl, sizeof sl);
    vkl_tensor_describe(targets, st, sizeof st);
    if (!vkl_op_float_type(logits->dtype))
        return vkl_graph_set_error(g, "cross_entropy: logits %s must be f32, f16 or bf16", sl);
    int64_t V = logits->shape[logits->ndim - 1], rows = vkl_tensor_nelem(logits) / (V ? V : 1);
    if (V < 1 || V > INT32_MAX) return vkl_graph_set_error(g, "cross_entropy: logits %s: bad class count", sl);
    if (targets->dtype != VKL_I32 || !vkl_tensor_is_contiguous(targets) || vkl_tensor_nelem(targets) != rows)
        return vkl_graph_set_error(g, "cross_entropy: targets %s must be a contiguous i32 tensor with one entry per "
                                      "row of %s", st, sl);
    if (rows < 1 || rows > UINT32_MAX / 2) return vkl_graph_set_error(g, "cross_entropy: %lld rows", (long long)rows);
    vkl_tensor *x = logits;
    if (x->dtype != VKL_F32 || !vkl_tensor_is_contiguous(x)) x = vkl_scale(g, x, 1.0f);
    /* the mean nodes also carry V (after the ignore index) for the validity test */
    ce_params p[2] = {{ignore_index}, {(int)V}};
    vkl_tensor *r = vkl_graph_tensor(g, VKL_F32, 1, &rows), *src[2] = {x, targets};
    vkl_node *n = r ? vkl_graph_add_node(g, "cross_entropy_rows", r, src, 2, emit_ce_rows, p, sizeof p) : NULL;
    if (!n) return NULL;
    n->backward = backward_rows;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, 2, (int64_t[]){1, 1}), *msrc[2] = {r, targets};
    n = y ? vkl_graph_add_node(g, "cross_entropy_mean", y, msrc, 2, emit_ce_mean, p, sizeof p) : NULL;
    if (!n) return NULL;
    n->backward = backward_mean;
    return y;
}
