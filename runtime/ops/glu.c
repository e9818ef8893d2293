/* Gated MLP activations: GEGLU (diffusers' GEGLU, exact gelu) and SwiGLU
 * (LLaMA). Shader: glu.comp. CPU reference: runtime/ref/ref_glu.c. The
 * output is split into windows that fit one storage binding. Backward:
 * glu_grad.comp (GEGLU), unary_grad and mul (SwiGLU). */
#include "op_util.h"

#include <string.h>

typedef struct {
    uint32_t n, first, shape[4], sa[4], sb[4], a_off, b_off, y_off, a_local, b_local;
} glu_push;

static void glu_push_init(glu_push *pc, const vkl_tensor *y, const vkl_tensor *a, const vkl_tensor *b,
                           int64_t first, int64_t cnt)
{
    int64_t ys[4], yst[4], as[4], ast[4], bs[4], bst[4];
    vkl_op_shape4(y, ys, yst);
    vkl_op_shape4(a, as, ast);
    vkl_op_shape4(b, bs, bst);
    memset(pc, 0, sizeof *pc);
    pc->n = (uint32_t)cnt;
    pc->first = (uint32_t)first;
    for (int i = 0; i < 4; i++) {
        pc->shape[i] = (uint32_t)ys[i];
        pc->sa[i] = (uint32_t)ast[i];
        pc->sb[i] = (uint32_t)bst[i];
    }
}

static int emit_geglu(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *x = n->src[0], *y = n->dst;
    int64_t F = y->shape[y->ndim - 1], rows = vkl_tensor_nelem(y) / F;
    int contiguous = vkl_tensor_is_contiguous(x);
    /* windows of whole rows: x's window holds 2F elements per row */
    int64_t per = vkl_window_elems(c, VKL_F32, 1) / F, px = vkl_window_elems(c, x->dtype, 1) / (2 * F);
    if (contiguous && px < per) per = px;
    if (per < 1) return vkl_fail(e, "a row of %lld elements exceeds the storage binding limit", (long long)(2 * F));
    int64_t m = (int64_t)(c->caps.storage_align / 4);
    if (per < rows && m > 1 && per >= m) per -= per % m;
    uint32_t spec[3] = {0, (uint32_t)x->dtype, (uint32_t)x->dtype};
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        glu_push pc;
        glu_push_init(&pc, y, x, x, r0 * F, nr * F);
        vkl_bind bind[3];
        pc.a_local = (uint32_t)contiguous;
        if ((contiguous ? vkl_bind_span(g, x, r0 * 2 * F, nr * 2 * F, &bind[0], &pc.a_off, e)
                        : vkl_bind_span(g, x, 0, vkl_tensor_span(x), &bind[0], &pc.a_off, e)) ||
            vkl_bind_span(g, y, r0 * F, nr * F, &bind[2], &pc.y_off, e))
            return -1;
        bind[1] = bind[0];
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)(nr * F) + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_GLU, spec, 3, bind, 3, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int emit_swiglu(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_tensor *a = n->src[0], *b = n->src[1], *y = n->dst;
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    uint32_t spec[3] = {1, (uint32_t)a->dtype, (uint32_t)b->dtype};
    for (int64_t first = 0, cnt; first < total; first += cnt) {
        cnt = total - first < win ? total - first : win;
        cnt = vkl_op_operand_window(g, a, y, first, cnt);
        cnt = vkl_op_operand_window(g, b, y, first, cnt);
        glu_push pc;
        glu_push_init(&pc, y, a, b, first, cnt);
        vkl_bind bind[3];
        if (vkl_op_bind_operand(g, a, y, first, cnt, &bind[0], &pc.a_off, &pc.a_local, e) ||
            vkl_op_bind_operand(g, b, y, first, cnt, &bind[1], &pc.b_off, &pc.b_local, e) ||
            vkl_bind_span(g, y, first, cnt, &bind[2], &pc.y_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_GLU, spec, 3, bind, 3, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* GEGLU backward: src = {x, dy}, dst = dx [..., 2F]; windows of whole rows as
 * the forward. */
static int emit_geglu_grad(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *x = n->src[0], *dy = n->src[1], *dx = n->dst;
    int64_t F = dy->shape[dy->ndim - 1], rows = vkl_tensor_nelem(dy) / F;
    int contiguous = vkl_tensor_is_contiguous(x);
    /* dx's and x's windows hold 2F elements per row */
    int64_t per = vkl_window_elems(c, VKL_F32, 1) / (2 * F), px = vkl_window_elems(c, x->dtype, 1) / (2 * F);
    if (contiguous && px < per) per = px;
    if (per < 1) return vkl_fail(e, "a row of %lld elements exceeds the storage binding limit", (long long)(2 * F));
    int64_t m = (int64_t)(c->caps.storage_align / 4);
    if (per < rows && m > 1 && per >= m) per -= per % m;
    int64_t ys[4], yst[4], xs[4], xst[4];
    vkl_op_shape4(dy, ys, yst);
    vkl_op_shape4(x, xs, xst);
    uint32_t spec[1] = {(uint32_t)x->dtype};
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        struct {
            uint32_t n, first, shape[4], sx[4], x_off, dy_off, dx_off, x_local;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)(nr * F);
        pc.first = (uint32_t)(r0 * F);
        for (int i = 0; i < 4; i++) {
            pc.shape[i] = (uint32_t)ys[i];
            pc.sx[i] = (uint32_t)xst[i];
        }
        pc.x_local = (uint32_t)contiguous;
        vkl_bind bind[3];
        if ((contiguous ? vkl_bind_span(g, x, r0 * 2 * F, nr * 2 * F, &bind[0], &pc.x_off, e)
                        : vkl_bind_span(g, x, 0, vkl_tensor_span(x), &bind[0], &pc.x_off, e)) ||
            vkl_bind_span(g, dy, r0 * F, nr * F, &bind[1], &pc.dy_off, e) ||
            vkl_bind_span(g, dx, r0 * 2 * F, nr * 2 * F, &bind[2], &pc.dx_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)(nr * F) + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_GLU_GRAD, spec, 1, bind, 3, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int backward_geglu(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (!need[0]) return 0;
    vkl_tensor *x = n->src[0];
    if (dy->dtype != VKL_F32 || !vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    vkl_tensor *dx = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
    vkl_tensor *src[2] = {x, dy};
    if (!dy || !dx || !vkl_graph_add_node(g, "geglu_grad", dx, src, 2, emit_geglu_grad, NULL, 0)) return -1;
    dsrc[0] = dx;
    return 0;
}

/* d gate = dy * up * silu'(gate), d up = dy * silu(gate): made of existing ops
 * (strides and windows included); only the needed ones are built. */
static int backward_swiglu(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    vkl_tensor *gate = n->src[0], *up = n->src[1];
    if (need[0]) dsrc[0] = vkl_unary_grad(g, gate, vkl_mul(g, dy, up), VKL_UNARY_SILU, 1, 0);
    if (need[1]) dsrc[1] = vkl_mul(g, dy, vkl_silu(g, gate));
    return vkl_graph_failed(g) ? -1 : 0;
}

vkl_tensor *vkl_geglu(vkl_graph *g, vkl_tensor *x)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    char s[96];
    vkl_tensor_describe(x, s, sizeof s);
    if (!vkl_op_float_type(x->dtype)) return vkl_graph_set_error(g, "geglu: input %s must be f32, f16 or bf16", s);
    int64_t last = x->shape[x->ndim - 1];
    if (last % 2) return vkl_graph_set_error(g, "geglu: the last dimension of %s must be even", s);
    int64_t shape[VKL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = last / 2;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, shape);
    vkl_node *n = y ? vkl_graph_add_node(g, "geglu", y, &x, 1, emit_geglu, NULL, 0) : NULL;
    if (!n) return NULL;
    n->backward = backward_geglu;
    return y;
}

vkl_tensor *vkl_swiglu(vkl_graph *g, vkl_tensor *gate, vkl_tensor *up)
{
    if (!gate || !up || vkl_graph_failed(g)) return NULL;
    char sa[96], sb[96];
    vkl_tensor_describe(gate, sa, sizeof sa);
    vkl_tensor_describe(up, sb, sizeof sb);
    if (!vkl_op_float_type(gate->dtype) || !vkl_op_float_type(up->dtype))
        return vkl_graph_set_error(g, "swiglu: inputs %s and %s must be f32, f16 or bf16", sa, sb);
    int same = gate->ndim == up->ndim;
    for (int i = 0; same && i < gate->ndim; i++) same = gate->shape[i] == up->shape[i];
    if (!same) return vkl_graph_set_error(g, "swiglu: gate %s and up %s must have the same shape", sa, sb);
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, gate->ndim, gate->shape);
    vkl_tensor *src[2] = {gate, up};
    vkl_node *n = y ? vkl_graph_add_node(g, "swiglu", y, src, 2, emit_swiglu, NULL, 0) : NULL;
    if (!n) return NULL;
    n->backward = backward_swiglu;
    return y;
}
