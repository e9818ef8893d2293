/* Layout ops: contiguous copy, nearest 2x upsampling, concatenation. Shader:
 * copy_strided.comp. CPU references: runtime/ref/ref_layout.c.
 *
 * Each op is one or more copies of a strided block of x into a strided
 * block of y (concat: a into y[..., :A, ...] and b into y[..., A:, ...]).
 * A block whose x or y span exceeds one storage binding is split along its
 * outermost dimension (then the next), so tensors of any size are copied
 * window by window. Results are f32, except that vkl_contiguous keeps a
 * 16-bit dtype (then y is written a 32-bit word at a time over flat windows,
 * and x must fit one binding).
 *
 * Backward: contiguous passes dy through, concat hands out views of dy's
 * slices, and upsampling sums each 2x2 block of dy (copy mode 2). */
#include "op_util.h"

#include <string.h>

typedef struct {
    int64_t shape[4];   /* block shape, in y coordinates */
    int64_t sx[4], sy[4];
    int64_t x0, y0;     /* first element of x and y */
    int64_t ph2, ph3;   /* upsampling phase of the block's first row / column */
} block;

typedef struct {
    uint32_t n, first, shape[4], sx[4], sy[4], ph2, ph3, x_off, y_off;
} copy_pc;

/* up: 0 copy, 1 nearest 2x upsampling, 2 sums of 2x2 blocks (its gradient) */
static int64_t xdim(const block *b, int i, int up)
{
    if (!up || i < 2) return b->shape[i];
    if (up == 2) return 2 * b->shape[i];
    int64_t ph = i == 2 ? b->ph2 : b->ph3;
    return ((b->shape[i] - 1 + ph) >> 1) + 1;
}

static int64_t x_span(const block *b, int up)
{
    int64_t s = 1;
    for (int i = 0; i < 4; i++) s += (xdim(b, i, up) - 1) * b->sx[i];
    return s;
}

static int64_t y_span(const block *b)
{
    int64_t s = 1;
    for (int i = 0; i < 4; i++) s += (b->shape[i] - 1) * b->sy[i];
    return s;
}

static int copy_block(vkl_graph *g, const vkl_tensor *x, const vkl_tensor *y, const block *b, int up, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t max_x = vkl_window_elems(c, x->dtype, 1), max_y = vkl_window_elems(c, VKL_F32, 1);
    int64_t n = b->shape[0] * b->shape[1] * b->shape[2] * b->shape[3];
    if (n == 0) return 0;
    if (x_span(b, up) <= max_x && y_span(b) <= max_y) {
        copy_pc pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)n;
        for (int i = 0; i < 4; i++) {
            pc.shape[i] = (uint32_t)b->shape[i];
            pc.sx[i] = (uint32_t)b->sx[i];
            pc.sy[i] = (uint32_t)b->sy[i];
        }
        pc.ph2 = (uint32_t)b->ph2;
        pc.ph3 = (uint32_t)b->ph3;
        vkl_bind bind[2];
        if (vkl_bind_span(g, x, b->x0, x_span(b, up), &bind[0], &pc.x_off, e) ||
            vkl_bind_span(g, y, b->y0, y_span(b), &bind[1], &pc.y_off, e))
            return -1;
        uint32_t spec[3] = {(uint32_t)x->dtype, (uint32_t)up, 0u};
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)n + 255) / 256, &gx, &gy);
        return vkl_emit_dispatch(g, VKL_KERNEL_COPY_STRIDED, spec, 3, bind, 2, &pc, sizeof pc, gx, gy, 1, e);
    }
    int L = 0;
    while (L < 4 && b->shape[L] == 1) L++;
    if (L == 4 || (L == 3 && b->shape[3] == 1)) {
        char d[96];
        vkl_tensor_describe(x, d, sizeof d);
        return vkl_fail(e, "copying %s: one element does not fit the storage binding limit", d);
    }
    /* largest group along L that fits; at one index the next level splits */
    block sub = *b;
    int64_t grp = b->shape[L];
    for (;;) {
        sub.shape[L] = grp;
        if ((x_span(&sub, up) <= max_x && y_span(&sub) <= max_y) || grp == 1) break;
        grp = (grp + 1) / 2;
    }
    if (grp == 1 && L == 3) {
        char d[96];
        vkl_tensor_describe(x, d, sizeof d);
        return vkl_fail(e, "copying %s: a row does not fit the storage binding limit (%llu bytes)", d,
                        (unsigned long long)c->caps.max_storage_range);
    }
    for (int64_t s = 0; s < b->shape[L]; s += grp) {
        sub = *b;
        sub.shape[L] = b->shape[L] - s < grp ? b->shape[L] - s : grp;
        sub.y0 = b->y0 + s * b->sy[L];
        if (up == 2 && L >= 2) {
            sub.x0 = b->x0 + 2 * s * b->sx[L];
        } else if (up && L >= 2) {
            int64_t ph = L == 2 ? b->ph2 : b->ph3;
            sub.x0 = b->x0 + ((s + ph) >> 1) * b->sx[L];
            if (L == 2) sub.ph2 = (s + ph) & 1;
            else sub.ph3 = (s + ph) & 1;
        } else {
            sub.x0 = b->x0 + s * b->sx[L];
        }
        if (copy_block(g, x, y, &sub, up, e)) return -1;
    }
    return 0;
}

/* contiguous strides of a 4-D shape */
static void dense_strides(const int64_t s[4], int64_t st[4])
{
    st[3] = 1;
    for (int i = 2; i >= 0; i--) st[i] = st[i + 1] * s[i + 1];
}

/* ---- contiguous / upsample: one block over the whole of y */

typedef struct { int up; } copy_params;

static int emit_copy(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const copy_params *cp = (const copy_params *)n->params.bytes;
    vkl_tensor *x = n->src[0], *y = n->dst;
    int64_t xs[4], xst[4];
    vkl_op_shape4(x, xs, xst);
    block b;
    memset(&b, 0, sizeof b);
    int64_t ys[4], yst[4];
    vkl_op_shape4(y, ys, yst);
    memcpy(b.shape, ys, sizeof ys);
    memcpy(b.sx, xst, sizeof xst);
    dense_strides(b.shape, b.sy);
    if (y->dtype == VKL_F32) return copy_block(g, x, y, &b, cp->up, e);

    /* 16-bit y: flat windows of whole words; x bound whole */
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(c, VKL_F32, 512);
    for (int64_t first = 0; first < total; first += win) {
        int64_t cnt = total - first < win ? total - first : win;
        copy_pc pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)cnt;
        pc.first = (uint32_t)first;
        for (int i = 0; i < 4; i++) {
            pc.shape[i] = (uint32_t)ys[i];
            pc.sx[i] = (uint32_t)xst[i];
        }
        vkl_bind bind[2];
        if (vkl_bind_span(g, x, 0, vkl_tensor_span(x), &bind[0], &pc.x_off, e) ||
            vkl_bind_span(g, y, first, cnt, &bind[1], &pc.y_off, e))
            return -1;
        if (pc.y_off & 1) return vkl_fail(e, "internal: 16-bit output window not word-aligned");
        uint32_t spec[3] = {(uint32_t)x->dtype, 0u, (uint32_t)y->dtype};
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt / 2 + 1 + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_COPY_STRIDED, spec, 3, bind, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* Gradients are indexed logically, whatever the layout of the tensor they
 * belong to, so the copy passes dy through unchanged. */
static int backward_contiguous(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    (void)g;
    (void)n;
    if (need[0]) dsrc[0] = dy;
    return 0;
}

/* Each input element was copied to a 2x2 block: its gradient is the block's sum. */
static int backward_upsample(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (!need[0]) return 0;
    vkl_tensor *x = n->src[0];
    vkl_tensor *dx = vkl_graph_tensor(g, VKL_F32, 4, x->shape);
    copy_params p = {2};
    if (!vkl_graph_add_node(g, "upsample_nearest2x_grad", dx, &dy, 1, emit_copy, &p, sizeof p)) return -1;
    dsrc[0] = dx;
    return 0;
}

vkl_tensor *vkl_contiguous(vkl_graph *g, vkl_tensor *x)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if (!vkl_op_float_type(x->dtype)) {
        char d[96];
        vkl_tensor_describe(x, d, sizeof d);
        return vkl_graph_set_error(g, "contiguous: %s must be f32, f16 or bf16", d);
    }
    if (vkl_tensor_span(x) > UINT32_MAX) return vkl_graph_set_error(g, "contiguous: tensor too large");
    vkl_tensor *y = vkl_graph_tensor(g, x->dtype, x->ndim, x->shape);
    copy_params p = {0};
    vkl_node *n = vkl_graph_add_node(g, "contiguous", y, &x, 1, emit_copy, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_contiguous;
    return y;
}

vkl_tensor *vkl_upsample_nearest2x(vkl_graph *g, vkl_tensor *x)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    char d[96];
    vkl_tensor_describe(x, d, sizeof d);
    if (!vkl_op_float_type(x->dtype)) return vkl_graph_set_error(g, "upsample_nearest2x: %s must be f32, f16 or bf16", d);
    if (x->ndim != 4) return vkl_graph_set_error(g, "upsample_nearest2x: %s must be [N, C, H, W]", d);
    int64_t shape[4] = {x->shape[0], x->shape[1], 2 * x->shape[2], 2 * x->shape[3]};
    if (shape[0] * shape[1] * shape[2] * shape[3] > UINT32_MAX || vkl_tensor_span(x) > UINT32_MAX)
        return vkl_graph_set_error(g, "upsample_nearest2x: %s is too large", d);
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, 4, shape);
    copy_params p = {1};
    vkl_node *n = vkl_graph_add_node(g, "upsample_nearest2x", y, &x, 1, emit_copy, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_upsample;
    return y;
}

/* ---- concat: two blocks */

typedef struct { int dim; } concat_params;

static int emit_concat(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    int d = ((const concat_params *)n->params.bytes)->dim;
    vkl_tensor *y = n->dst;
    int64_t ys[4], yst[4], dense[4];
    vkl_op_shape4(y, ys, yst);
    dense_strides(ys, dense);
    int64_t at = 0;
    for (int k = 0; k < 2; k++) {
        vkl_tensor *x = n->src[k];
        int64_t xs[4], xst[4];
        vkl_op_shape4(x, xs, xst);
        block b;
        memset(&b, 0, sizeof b);
        memcpy(b.shape, xs, sizeof xs);
        memcpy(b.sx, xst, sizeof xst);
        memcpy(b.sy, dense, sizeof dense);
        b.y0 = at * dense[d];
        if (copy_block(g, x, y, &b, 0, e)) return -1;
        at += xs[d];
    }
    return 0;
}

/* The gradient of each input is its slice of dy: a strided view, no copy. */
static int backward_concat(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    int d = ((const concat_params *)n->params.bytes)->dim - (4 - dy->ndim);
    int64_t at = 0;
    for (int k = 0; k < 2; k++) {
        vkl_tensor *x = n->src[k];
        if (need[k]) {
            dsrc[k] = vkl_view(g, dy, x->ndim, x->shape, dy->stride, at * dy->stride[d]);
            if (!dsrc[k]) return -1;
            /* elementwise consumers bind a strided operand whole: past one
             * binding, hand out a windowed copy instead */
            if (vkl_tensor_span(dsrc[k]) > vkl_window_elems(vkl_graph_ctx(g), dy->dtype, 1))
                dsrc[k] = vkl_contiguous(g, dsrc[k]);
        }
        at += x->shape[d];
    }
    return 0;
}

vkl_tensor *vkl_concat(vkl_graph *g, vkl_tensor *a, vkl_tensor *b, int dim)
{
    if (!a || !b || vkl_graph_failed(g)) return NULL;
    char da[96], db[96];
    vkl_tensor_describe(a, da, sizeof da);
    vkl_tensor_describe(b, db, sizeof db);
    if (!vkl_op_float_type(a->dtype) || a->dtype != b->dtype)
        return vkl_graph_set_error(g, "concat: %s and %s must have the same dtype, f32, f16 or bf16", da, db);
    if (a->ndim != b->ndim) return vkl_graph_set_error(g, "concat: %s and %s differ in rank", da, db);
    if (dim < 0) dim += a->ndim;
    if (dim < 0 || dim >= a->ndim) return vkl_graph_set_error(g, "concat: dimension out of range for %s", da);
    int64_t shape[VKL_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) {
        if (i != dim && a->shape[i] != b->shape[i])
            return vkl_graph_set_error(g, "concat: %s and %s differ in dimension %d", da, db, i);
        shape[i] = i == dim ? a->shape[i] + b->shape[i] : a->shape[i];
    }
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, a->ndim, shape);
    if (!y) return NULL;
    if (vkl_tensor_nelem(y) > UINT32_MAX || vkl_tensor_span(a) > UINT32_MAX || vkl_tensor_span(b) > UINT32_MAX)
        return vkl_graph_set_error(g, "concat: %s and %s are too large", da, db);
    concat_params p = {dim + 4 - a->ndim};
    vkl_tensor *src[2] = {a, b};
    vkl_node *n = vkl_graph_add_node(g, "concat", y, src, 2, emit_concat, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_concat;
    return y;
}
