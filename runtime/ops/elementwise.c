/* Elementwise ops: binary with broadcasting, unary activations, dtype
 * conversion. Shaders: binary.comp, unary.comp, convert.comp. CPU references:
 * runtime/ref/ref_elementwise.c. Outputs are split into windows that fit one
 * storage binding, so tensors larger than maxStorageBufferRange work. */
#include "op_util.h"

#include <string.h>

/* The elements of x that output elements [first, first + n) read lie in
 * [*lo, *hi]: from the outermost dim where the window's first and last
 * coordinates differ inward, that dim between the two and every inner dim
 * whole. Strides are never negative (size-1 dims have stride 0: broadcast). */
static void operand_footprint(const vkl_tensor *x, const vkl_tensor *y, int64_t first, int64_t n, int64_t *lo_out,
                              int64_t *hi_out)
{
    int64_t ys[4], yst[4], xs[4], xst[4], cf[4], cl[4], a = first, z = first + n - 1;
    vkl_op_shape4(y, ys, yst);
    vkl_op_shape4(x, xs, xst);
    for (int k = 3; k >= 0; k--) {
        cf[k] = a % ys[k];
        a /= ys[k];
        cl[k] = z % ys[k];
        z /= ys[k];
    }
    int64_t lo = 0, hi = 0;
    int split = 0;
    for (int k = 0; k < 4; k++) {
        if (split) {
            hi += (ys[k] - 1) * xst[k];
            continue;
        }
        lo += cf[k] * xst[k];
        hi += cl[k] * xst[k];
        split = cf[k] != cl[k];
    }
    *lo_out = lo;
    *hi_out = hi;
}

int64_t vkl_op_operand_window(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, int64_t first, int64_t n)
{
    if (vkl_op_same_layout(x, y)) return n;
    /* a strided view may read far apart: shrink the window until what it
     * reads fits one binding (a transposed view: a part of one row) */
    int64_t fit = vkl_window_elems(vkl_graph_ctx(g), x->dtype, 2), lo, hi;
    for (;;) {
        operand_footprint(x, y, first, n, &lo, &hi);
        if (hi - lo + 1 <= fit || n == 1) return n;
        n = n / 2 > 0 ? n / 2 : 1;
    }
}

int vkl_op_bind_operand(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, int64_t first, int64_t n,
                        vkl_bind *b, uint32_t *off, uint32_t *local, vkl_err *e)
{
    if (vkl_op_same_layout(x, y)) {
        *local = 1;
        return vkl_bind_span(g, x, first, n, b, off, e);
    }
    *local = 0;
    int64_t lo, hi;
    operand_footprint(x, y, first, n, &lo, &hi);
    uint32_t at;
    if (vkl_bind_span(g, x, lo, hi - lo + 1, b, &at, e)) return -1;
    /* the shader adds the view offset of each element to this (uint wraps) */
    *off = at - (uint32_t)lo;
    return 0;
}

/* ---- binary */

typedef struct { int op; } binary_params;

static int emit_binary(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const binary_params *bp = (const binary_params *)n->params.bytes;
    vkl_tensor *a = n->src[0], *b = n->src[1], *y = n->dst;
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    int64_t ys[4], yst[4], as[4], ast[4], bs[4], bst[4];
    vkl_op_shape4(y, ys, yst);
    vkl_op_shape4(a, as, ast);
    vkl_op_shape4(b, bs, bst);
    uint32_t spec[3] = {(uint32_t)bp->op, (uint32_t)a->dtype, (uint32_t)b->dtype};
    for (int64_t first = 0, cnt; first < total; first += cnt) {
        cnt = total - first < win ? total - first : win;
        cnt = vkl_op_operand_window(g, a, y, first, cnt);
        cnt = vkl_op_operand_window(g, b, y, first, cnt);
        vkl_bind bind[3];
        struct {
            uint32_t n, first, shape[4], sa[4], sb[4], a_off, b_off, y_off, a_local, b_local;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)cnt;
        pc.first = (uint32_t)first;
        for (int i = 0; i < 4; i++) {
            pc.shape[i] = (uint32_t)ys[i];
            pc.sa[i] = (uint32_t)ast[i];
            pc.sb[i] = (uint32_t)bst[i];
        }
        if (vkl_op_bind_operand(g, a, y, first, cnt, &bind[0], &pc.a_off, &pc.a_local, e) ||
            vkl_op_bind_operand(g, b, y, first, cnt, &bind[1], &pc.b_off, &pc.b_local, e) ||
            vkl_bind_span(g, y, first, cnt, &bind[2], &pc.y_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_BINARY, spec, 3, bind, 3, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* d(a op b): reduce each input's gradient over the dims it was broadcast along. */
static int backward_binary(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    int op = ((const binary_params *)n->params.bytes)->op;
    vkl_tensor *a = n->src[0], *b = n->src[1];
    if (need[0]) {
        vkl_tensor *d = op <= 1 ? dy : op == 2 ? vkl_mul(g, dy, b) : vkl_div(g, dy, b);
        dsrc[0] = vkl_sum_to(g, d, a->ndim, a->shape);
    }
    if (need[1]) {
        vkl_tensor *d;
        if (op == 0) d = dy;
        else if (op == 1) d = vkl_scale(g, dy, -1.0f);
        else if (op == 2) d = vkl_mul(g, dy, a);
        else d = vkl_scale(g, vkl_div(g, vkl_mul(g, dy, a), vkl_mul(g, b, b)), -1.0f);
        dsrc[1] = vkl_sum_to(g, d, b->ndim, b->shape);
    }
    return vkl_graph_failed(g) ? -1 : 0;
}

static vkl_tensor *binary(vkl_graph *g, vkl_tensor *a, vkl_tensor *b, int op, const char *name)
{
    if (!a || !b || vkl_graph_failed(g)) return NULL;
    if (!vkl_op_float_type(a->dtype) || !vkl_op_float_type(b->dtype))
        return vkl_graph_set_error(g, "%s: inputs must be f32, f16 or bf16", name);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[VKL_MAX_DIMS];
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
        if (da != db && da != 1 && db != 1) {
            char sa[96], sb[96];
            vkl_tensor_describe(a, sa, sizeof sa);
            vkl_tensor_describe(b, sb, sizeof sb);
            return vkl_graph_set_error(g, "%s: shapes %s and %s do not broadcast", name, sa, sb);
        }
        shape[i] = da == 1 ? db : da;
    }
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, nd, shape);
    binary_params p = {op};
    vkl_tensor *src[2] = {a, b};
    vkl_node *n = vkl_graph_add_node(g, name, y, src, 2, emit_binary, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_binary;
    return y;
}

vkl_tensor *vkl_add(vkl_graph *g, vkl_tensor *a, vkl_tensor *b) { return binary(g, a, b, 0, "add"); }
vkl_tensor *vkl_sub(vkl_graph *g, vkl_tensor *a, vkl_tensor *b) { return binary(g, a, b, 1, "sub"); }
vkl_tensor *vkl_mul(vkl_graph *g, vkl_tensor *a, vkl_tensor *b) { return binary(g, a, b, 2, "mul"); }
vkl_tensor *vkl_div(vkl_graph *g, vkl_tensor *a, vkl_tensor *b) { return binary(g, a, b, 3, "div"); }

/* ---- unary and convert share one emitter: one input, contiguous output */

typedef struct { int op; float alpha, beta; int convert; } unary_params;

int vkl_op_emit_map(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, vkl_kernel kernel, const uint32_t *spec,
                    int nspec, float alpha, float beta, vkl_err *e)
{
    int half_out = y->dtype != VKL_F32;
    /* windows sized for the widest element (f32), so input and output windows both fit */
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 512);
    int64_t ys[4], yst[4], xs[4], xst[4];
    vkl_op_shape4(y, ys, yst);
    vkl_op_shape4(x, xs, xst);
    for (int64_t first = 0, cnt; first < total; first += cnt) {
        cnt = total - first < win ? total - first : win;
        cnt = vkl_op_operand_window(g, x, y, first, cnt);
        if (half_out && cnt > 1 && cnt < total - first) cnt &= ~(int64_t)1; /* 16-bit output windows stay word-aligned */
        vkl_bind bind[2];
        struct {
            uint32_t n, first, shape[4], sx[4], x_off, y_off, x_local;
            float alpha, beta;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)cnt;
        pc.first = (uint32_t)first;
        pc.alpha = alpha;
        pc.beta = beta;
        for (int i = 0; i < 4; i++) {
            pc.shape[i] = (uint32_t)ys[i];
            pc.sx[i] = (uint32_t)xst[i];
        }
        if (vkl_op_bind_operand(g, x, y, first, cnt, &bind[0], &pc.x_off, &pc.x_local, e) ||
            vkl_bind_span(g, y, first, cnt, &bind[1], &pc.y_off, e))
            return -1;
        if (half_out && (pc.y_off & 1)) return vkl_fail(e, "internal: 16-bit output window not word-aligned");
        /* a 16-bit output is written a word (two elements) per invocation */
        uint64_t threads = half_out ? ((uint64_t)cnt + 1) / 2 : (uint64_t)cnt;
        uint32_t gx, gy;
        vkl_op_grid((threads + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, kernel, spec, nspec, bind, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int emit_unary(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const unary_params *up = (const unary_params *)n->params.bytes;
    vkl_tensor *x = n->src[0], *y = n->dst;
    if (up->convert) {
        uint32_t spec[2] = {(uint32_t)x->dtype, (uint32_t)y->dtype};
        return vkl_op_emit_map(g, x, y, VKL_KERNEL_CONVERT, spec, 2, 1.0f, 0.0f, e);
    }
    uint32_t spec[2] = {(uint32_t)up->op, (uint32_t)x->dtype};
    return vkl_op_emit_map(g, x, y, VKL_KERNEL_UNARY, spec, 2, up->alpha, up->beta, e);
}

static const char *unary_names[VKL_UNARY_COUNT] = {"scale", "silu", "gelu", "gelu_tanh", "quick_gelu", "relu",
                                                   "exp", "square", "sigmoid", "sqrt", "tanh"};

static int backward_unary(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const unary_params *up = (const unary_params *)n->params.bytes;
    if (!need[0]) return 0;
    if (up->convert) dsrc[0] = dy; /* gradients stay f32 */
    else if (up->op == VKL_UNARY_IDENTITY) dsrc[0] = vkl_scale(g, dy, up->alpha);
    else dsrc[0] = vkl_unary_grad(g, n->src[0], dy, (vkl_unary_op)up->op, up->alpha, up->beta);
    return dsrc[0] ? 0 : -1;
}

const char *vkl_unary_name(vkl_unary_op op) { return (unsigned)op < VKL_UNARY_COUNT ? unary_names[op] : "?"; }

vkl_tensor *vkl_unary(vkl_graph *g, vkl_tensor *x, vkl_unary_op op, float alpha, float beta)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if ((unsigned)op >= VKL_UNARY_COUNT) return vkl_graph_set_error(g, "unknown unary op %d", (int)op);
    if (!vkl_op_float_type(x->dtype)) return vkl_graph_set_error(g, "%s: input must be f32, f16 or bf16", unary_names[op]);
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
    unary_params p = {(int)op, alpha, beta, 0};
    vkl_node *n = vkl_graph_add_node(g, unary_names[op], y, &x, 1, emit_unary, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_unary;
    return y;
}

vkl_tensor *vkl_scale(vkl_graph *g, vkl_tensor *x, float s) { return vkl_unary(g, x, VKL_UNARY_IDENTITY, s, 0); }
vkl_tensor *vkl_silu(vkl_graph *g, vkl_tensor *x) { return vkl_unary(g, x, VKL_UNARY_SILU, 1, 0); }
vkl_tensor *vkl_gelu(vkl_graph *g, vkl_tensor *x) { return vkl_unary(g, x, VKL_UNARY_GELU, 1, 0); }
vkl_tensor *vkl_gelu_tanh(vkl_graph *g, vkl_tensor *x) { return vkl_unary(g, x, VKL_UNARY_GELU_TANH, 1, 0); }
vkl_tensor *vkl_quick_gelu(vkl_graph *g, vkl_tensor *x) { return vkl_unary(g, x, VKL_UNARY_QUICK_GELU, 1, 0); }

vkl_tensor *vkl_convert(vkl_graph *g, vkl_tensor *x, vkl_dtype to)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if (!vkl_op_float_type(x->dtype) || !vkl_op_float_type(to))
        return vkl_graph_set_error(g, "convert: only f32, f16 and bf16 are converted on the device");
    vkl_tensor *y = vkl_graph_tensor(g, to, x->ndim, x->shape);
    unary_params p = {0, 1, 0, 1};
    vkl_node *n = vkl_graph_add_node(g, "convert", y, &x, 1, emit_unary, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_unary;
    return y;
}
