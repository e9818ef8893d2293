/* Backward of conv2d and of the LoRA-fused conv2d. Shader: conv2d_grad.comp
 * (conv2d_dx, conv2d_dw). CPU reference: vkl_ref_conv2d_backward in
 * runtime/ref/ref_conv2d.c.
 *
 * Only what need[] asks for is built: training adapters on a frozen UNet
 * passes d x through every frozen convolution (conv2d_dx, the same GEMM
 * size as the forward) but never forms d W of a frozen weight.
 *
 * For the fused node y = conv(x, W) + b + B (s * t), t = conv(x, A) its own
 * node, with u = B^T dy [N, R, Ho*Wo]:
 *   d t = s * u,   d B[o][r] = sum_{n,p} dy[n][o][p] s[r] t[n][r][p],
 *   d s[r] = sum_{n,p} u[n][r][p] t[n][r][p],
 * and the node of t passes d x and d A on like any convolution.
 *
 * Windows: when dy, W and dx each fit one storage binding, d x is one
 * dispatch; otherwise images are bound one at a time, then input channels
 * (rows) in ranges, and when one image of dy (or W's rows) does not fit, the
 * output channels are reduced in ranges, each later range a node adding to
 * d x. d W is one dispatch split along the N*Ho*Wo reduction into partial
 * sums (more parallel work for small weights, such as a LoRA down factor),
 * or, when the tensors do not fit, one node per image adding to d W with
 * output/input channel windows. */
#include "conv2d_internal.h"
#include "op_util.h"
#include "quant.h"

#include <string.h>

typedef struct {
    int kh, kw, sh, sw, pt, pl;
} conv_geom;

typedef struct {
    conv_geom k;
    int whole;           /* every image in one dispatch */
    int acc;             /* adds to the output (dx: later output channels; dw: later images) */
    int64_t o0, on;      /* dx: output channels this node reduces; dw: output channel window */
    int64_t rows;        /* dx: input channels per dispatch */
    int64_t z;           /* dw, not whole: the image of this node */
    int64_t cols;        /* dw, not whole: input channels per dispatch */
    int64_t splits;      /* dw, whole: partial sums along the reduction */
    vkl_conv2d_tile tile;
} grad_params;

typedef struct {
    uint32_t C, O, H, W, Ho, Wo;
    uint32_t KH, KW, SH, SW;
    int32_t pt, pl;
    uint32_t a_off, dy_off, out_off;
    uint32_t sdn, sdo, sdh, sdw;
    uint32_t sxn, sxc, sxh, sxw;
    uint32_t swo;
    uint32_t nimg, chunk, sos;
    uint32_t wq_code, wq_scale, wq_qcode;
} grad_pc;

static void geom_pc(grad_pc *pc, const conv_geom *k)
{
    pc->KH = (uint32_t)k->kh;
    pc->KW = (uint32_t)k->kw;
    pc->SH = (uint32_t)k->sh;
    pc->SW = (uint32_t)k->sw;
    pc->pt = k->pt;
    pc->pl = k->pl;
}

/* Elements of `ch` channels of one image of a strided NCHW tensor. */
static int64_t chan_span(const int64_t s[4], const int64_t st[4], int64_t ch)
{
    return (ch - 1) * st[1] + (s[2] - 1) * st[2] + (s[3] - 1) * st[3] + 1;
}

/* Largest channel count whose span fits max (0 when one does not). */
static int64_t chans_fitting(const int64_t s[4], const int64_t st[4], int64_t max)
{
    int64_t one = chan_span(s, st, 1);
    if (one > max) return 0;
    int64_t n = st[1] ? (max - one) / st[1] + 1 : s[1];
    return n < s[1] ? n : s[1];
}

static int64_t round_tile(int64_t n, int64_t total, uint32_t t)
{
    if (n < total && n > (int64_t)t) n -= n % t;
    return n;
}

/* ---- d x: src {dy, w[, dx]}, dst dx [N, C, H, W] */

static int emit_dx(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const grad_params *gp = (const grad_params *)n->params.bytes;
    vkl_tensor *dy = n->src[0], *w = n->src[1], *dx = n->dst;
    int64_t ds[4], dst[4];
    vkl_op_shape4(dy, ds, dst);
    int64_t N = dx->shape[0], C = dx->shape[1], H = dx->shape[2], W = dx->shape[3], HW = H * W;
    int64_t KK = (int64_t)gp->k.kh * gp->k.kw, WK = C * KK;
    const vkl_conv2d_tile *tl = &gp->tile;
    int64_t phases = (int64_t)gp->k.sh * gp->k.sw;
    int64_t pmax = ((H + gp->k.sh - 1) / gp->k.sh) * ((W + gp->k.sw - 1) / gp->k.sw);
    /* images smaller than one workgroup's columns: columns over all images */
    int fold = gp->whole && N > 1 && pmax < (int64_t)tl->tn * tl->wg;
    uint32_t spec[7] = {tl->wg, tl->tm, tl->tn, (uint32_t)w->dtype, (uint32_t)dy->dtype, gp->acc ? 1u : 0u,
                        fold ? 1u : 0u};
    int64_t images = gp->whole ? 1 : N, rows = gp->whole ? C : gp->rows;
    int64_t dspan = chan_span(ds, dst, gp->on);
    /* a frozen NF4 / NF4_DQ kernel is bound whole and dequantised in the shader */
    int quant = vkl_dtype_is_quant(w->dtype);
    vkl_bind wbind;
    vkl_quant_offsets wq = {0, 0, 0};
    if (quant && vkl_bind_quant(g, w, &wbind, &wq, e)) return -1;
    for (int64_t z = 0; z < images; z++) {
        for (int64_t c0 = 0; c0 < C; c0 += rows) {
            int64_t cn = C - c0 < rows ? C - c0 : rows;
            grad_pc pc;
            memset(&pc, 0, sizeof pc);
            geom_pc(&pc, &gp->k);
            pc.C = (uint32_t)cn;
            pc.O = (uint32_t)gp->on;
            pc.H = (uint32_t)H;
            pc.W = (uint32_t)W;
            pc.Ho = (uint32_t)ds[2];
            pc.Wo = (uint32_t)ds[3];
            pc.sdn = gp->whole ? (uint32_t)dst[0] : 0;
            pc.sdo = (uint32_t)dst[1];
            pc.sdh = (uint32_t)dst[2];
            pc.sdw = (uint32_t)dst[3];
            pc.sxn = gp->whole ? (uint32_t)(C * HW) : 0;
            pc.sxc = (uint32_t)HW;
            pc.swo = (uint32_t)WK;
            vkl_bind bind[3];
            pc.wq_code = wq.code_off;
            pc.wq_scale = wq.scale_off;
            pc.wq_qcode = wq.qcode_off;
            if (quant) {
                bind[0] = wbind;
                pc.a_off = wq.code_off + (uint32_t)(gp->o0 * WK + c0 * KK);
            }
            if (vkl_bind_span(g, dy, z * dst[0] + gp->o0 * dst[1], gp->whole ? (N - 1) * dst[0] + dspan : dspan,
                              &bind[1], &pc.dy_off, e) ||
                (!quant &&
                 vkl_bind_span(g, w, gp->o0 * WK + c0 * KK, (gp->on - 1) * WK + cn * KK, &bind[0], &pc.a_off, e)) ||
                vkl_bind_span(g, dx, (z * C + c0) * HW, gp->whole ? N * C * HW : cn * HW, &bind[2], &pc.out_off, e))
                return -1;
            pc.nimg = (uint32_t)N;
            int64_t cols = fold ? N * pmax : pmax;
            uint32_t gx = (uint32_t)(((cols + tl->tn - 1) / tl->tn + tl->wg - 1) / tl->wg);
            uint32_t gy = (uint32_t)((cn + tl->tm - 1) / tl->tm);
            uint32_t gz = (uint32_t)((gp->whole && !fold ? N : 1) * phases);
            if (vkl_emit_dispatch(g, VKL_KERNEL_CONV2D_DX, spec, 7, bind, 3, &pc, sizeof pc, gx, gy, gz, e)) return -1;
        }
    }
    return 0;
}

static vkl_tensor *conv_dx(vkl_graph *g, vkl_tensor *dy, vkl_tensor *w, const conv_geom *k, const int64_t xs[4],
                           const vkl_conv2d_tile *tile)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], O = w->shape[0], KK = (int64_t)k->kh * k->kw;
    int64_t ds[4], dst[4];
    vkl_op_shape4(dy, ds, dst);
    int64_t max_dy = vkl_window_elems(c, dy->dtype, 1);
    int64_t max_w = vkl_dtype_is_quant(w->dtype) ? INT64_MAX : vkl_window_elems(c, w->dtype, 1);
    int64_t max_x = vkl_window_elems(c, VKL_F32, 1);
    if (vkl_tensor_span(dy) > UINT32_MAX || N * C * H * W > UINT32_MAX)
        return vkl_graph_set_error(g, "conv2d backward: input gradient too large (more than 2^32 elements)");
    grad_params gp;
    memset(&gp, 0, sizeof gp);
    gp.k = *k;
    gp.tile = *tile;
    gp.whole = vkl_tensor_span(dy) <= max_dy && vkl_tensor_nelem(w) <= max_w && N * C * H * W <= max_x;
    int64_t on = O;
    gp.rows = C;
    if (!gp.whole) {
        on = chans_fitting(ds, dst, max_dy);
        gp.rows = max_x / (H * W);
        if (gp.rows > C) gp.rows = C;
        /* W's window: rows o0..o0+on, input channels c0..c0+rows */
        if (gp.rows >= 1 && on >= 1 && (on - 1) * C * KK + gp.rows * KK > max_w) {
            if (gp.rows * KK > max_w) gp.rows = max_w / KK;
            int64_t by_w = (max_w - gp.rows * KK) / (C * KK) + 1;
            if (by_w < on) on = by_w;
        }
        if (on < 1 || gp.rows < 1) {
            char d[96];
            vkl_tensor_describe(dy, d, sizeof d);
            return vkl_graph_set_error(g, "conv2d backward: one channel of %s (or of the input gradient) exceeds the "
                                          "storage binding limit (%llu bytes)", d,
                                       (unsigned long long)vkl_ctx_caps(c)->max_storage_range);
        }
        gp.rows = round_tile(gp.rows, C, tile->tm);
    }
    vkl_tensor *dx = vkl_graph_tensor(g, VKL_F32, 4, xs);
    for (int64_t o0 = 0; o0 < O; o0 += on) {
        gp.o0 = o0;
        gp.on = O - o0 < on ? O - o0 : on;
        gp.acc = o0 > 0;
        vkl_tensor *src[3] = {dy, w, dx};
        if (!vkl_graph_add_node(g, "conv2d_dx", dx, src, gp.acc ? 3 : 2, emit_dx, &gp, sizeof gp)) return NULL;
    }
    return dx;
}

/* ---- d w: src {x, dy[, dw]}, dst dw partials [S, O, C*kh*kw] */

static int emit_dw(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const grad_params *gp = (const grad_params *)n->params.bytes;
    vkl_tensor *x = n->src[0], *dy = n->src[1], *out = n->dst;
    int64_t xs[4], xst[4], ds[4], dst[4];
    vkl_op_shape4(x, xs, xst);
    vkl_op_shape4(dy, ds, dst);
    int64_t N = xs[0], C = xs[1], O = ds[1], P = ds[2] * ds[3], KK = (int64_t)gp->k.kh * gp->k.kw, WK = C * KK;
    const vkl_conv2d_tile *tl = &gp->tile;
    uint32_t spec[6] = {tl->wg, tl->tm, tl->tn, (uint32_t)x->dtype, (uint32_t)dy->dtype, gp->acc ? 1u : 0u};
    int64_t orows = gp->whole ? O : gp->on, cols = gp->whole ? C : gp->cols;
    int64_t z = gp->whole ? 0 : gp->z, S = gp->whole ? gp->splits : 1;
    for (int64_t o0 = 0; o0 < O; o0 += orows) {
        int64_t on = O - o0 < orows ? O - o0 : orows;
        for (int64_t c0 = 0; c0 < C; c0 += cols) {
            int64_t cn = C - c0 < cols ? C - c0 : cols;
            grad_pc pc;
            memset(&pc, 0, sizeof pc);
            geom_pc(&pc, &gp->k);
            pc.C = (uint32_t)(cn * KK);
            pc.O = (uint32_t)on;
            pc.H = (uint32_t)xs[2];
            pc.W = (uint32_t)xs[3];
            pc.Ho = (uint32_t)ds[2];
            pc.Wo = (uint32_t)ds[3];
            pc.sdn = (uint32_t)dst[0];
            pc.sdo = (uint32_t)dst[1];
            pc.sdh = (uint32_t)dst[2];
            pc.sdw = (uint32_t)dst[3];
            pc.sxn = (uint32_t)xst[0];
            pc.sxc = (uint32_t)xst[1];
            pc.sxh = (uint32_t)xst[2];
            pc.sxw = (uint32_t)xst[3];
            pc.swo = (uint32_t)WK;
            pc.nimg = gp->whole ? (uint32_t)N : 1u;
            int64_t steps = (int64_t)pc.nimg * P;
            pc.chunk = (uint32_t)((steps + S - 1) / S);
            pc.sos = (uint32_t)(O * WK);
            vkl_bind bind[3];
            int64_t xspan = gp->whole ? vkl_tensor_span(x) : chan_span(xs, xst, cn);
            int64_t dspan = gp->whole ? vkl_tensor_span(dy) : chan_span(ds, dst, on);
            if (vkl_bind_span(g, x, gp->whole ? 0 : z * xst[0] + c0 * xst[1], xspan, &bind[0], &pc.a_off, e) ||
                vkl_bind_span(g, dy, gp->whole ? 0 : z * dst[0] + o0 * dst[1], dspan, &bind[1], &pc.dy_off, e) ||
                vkl_bind_span(g, out, o0 * WK + c0 * KK, gp->whole ? S * O * WK : (on - 1) * WK + cn * KK, &bind[2],
                              &pc.out_off, e))
                return -1;
            uint32_t gx = (uint32_t)(((cn * KK + tl->tn - 1) / tl->tn + tl->wg - 1) / tl->wg);
            uint32_t gy = (uint32_t)((on + tl->tm - 1) / tl->tm);
            if (vkl_emit_dispatch(g, VKL_KERNEL_CONV2D_DW, spec, 6, bind, 3, &pc, sizeof pc, gx, gy, (uint32_t)S, e)) return -1;
        }
    }
    return 0;
}

static vkl_tensor *conv_dw(vkl_graph *g, vkl_tensor *x, vkl_tensor *dy, const conv_geom *k, const int64_t ws[4],
                           const vkl_conv2d_tile *tile)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t xs[4], xst[4], ds[4], dst[4];
    vkl_op_shape4(x, xs, xst);
    vkl_op_shape4(dy, ds, dst);
    int64_t N = xs[0], C = xs[1], O = ws[0], KK = ws[2] * ws[3], WK = C * KK, P = ds[2] * ds[3];
    int64_t max_x = vkl_window_elems(c, x->dtype, 1), max_dy = vkl_window_elems(c, dy->dtype, 1);
    int64_t max_o = vkl_window_elems(c, VKL_F32, 1);
    if (vkl_tensor_span(x) > UINT32_MAX || vkl_tensor_span(dy) > UINT32_MAX || O * WK > UINT32_MAX)
        return vkl_graph_set_error(g, "conv2d backward: weight gradient operands too large (more than 2^32 elements)");
    grad_params gp;
    memset(&gp, 0, sizeof gp);
    gp.k = *k;
    gp.tile = *tile;
    gp.whole = vkl_tensor_span(x) <= max_x && vkl_tensor_span(dy) <= max_dy && O * WK <= max_o;
    int64_t shape2[2] = {O, WK};
    vkl_tensor *dw;
    if (gp.whole) {
        /* enough workgroups for every core (a GPU wants many more), at least
         * 256 reduction steps each, partials within one binding */
        int cpu = vkl_ctx_tuning(c)->cpu;
        int64_t tiles = ((WK + tile->tn - 1) / tile->tn + tile->wg - 1) / tile->wg * ((O + tile->tm - 1) / tile->tm);
        int64_t want = cpu ? 64 : 1024;
        int64_t S = (want + tiles - 1) / tiles;
        if (S > N * P / 256) S = N * P / 256;
        if (S > 64) S = 64;
        if (S > max_o / (O * WK)) S = max_o / (O * WK);
        if (S < 1) S = 1;
        gp.splits = S;
        int64_t ps[3] = {S, O, WK};
        dw = vkl_graph_tensor(g, VKL_F32, 3, ps);
        vkl_tensor *src[2] = {x, dy};
        if (!vkl_graph_add_node(g, "conv2d_dw", dw, src, 2, emit_dw, &gp, sizeof gp)) return NULL;
        dw = S > 1 ? vkl_sum_to(g, dw, 2, shape2) : vkl_reshape(g, dw, 2, shape2);
    } else {
        gp.splits = 1;
        gp.cols = chans_fitting(xs, xst, max_x);
        gp.on = chans_fitting(ds, dst, max_dy);
        if (gp.cols >= 1 && gp.on >= 1 && (gp.on - 1) * WK + gp.cols * KK > max_o) {
            if (gp.cols * KK > max_o) gp.cols = max_o / KK;
            int64_t by_o = (max_o - gp.cols * KK) / WK + 1;
            if (by_o < gp.on) gp.on = by_o;
        }
        if (gp.cols < 1 || gp.on < 1) {
            char d[96];
            vkl_tensor_describe(x, d, sizeof d);
            return vkl_graph_set_error(g, "conv2d backward: one channel of %s (or a weight-gradient row) exceeds the "
                                          "storage binding limit (%llu bytes)", d,
                                       (unsigned long long)vkl_ctx_caps(c)->max_storage_range);
        }
        gp.on = round_tile(gp.on, O, tile->tm);
        int64_t ps[3] = {1, O, WK};
        dw = vkl_graph_tensor(g, VKL_F32, 3, ps);
        for (int64_t z = 0; z < N; z++) {
            gp.z = z;
            gp.acc = z > 0;
            vkl_tensor *src[3] = {x, dy, dw};
            if (!vkl_graph_add_node(g, "conv2d_dw", dw, src, gp.acc ? 3 : 2, emit_dw, &gp, sizeof gp)) return NULL;
        }
        dw = vkl_reshape(g, dw, 2, shape2);
    }
    return vkl_reshape(g, dw, 4, ws);
}

/* [N, K, ...] contiguous -> [K]: sums over images and the trailing dims
 * (row sums, which are windowed, then a small sum over images). */
static vkl_tensor *sum_images_rows(vkl_graph *g, vkl_tensor *t, int64_t N, int64_t K)
{
    if (!t) return NULL;
    if (!vkl_tensor_is_contiguous(t)) t = vkl_scale(g, t, 1.0f);
    int64_t rs[2] = {N * K, vkl_tensor_nelem(t) / (N * K)}, nk[2] = {N, K}, k1[1] = {K};
    vkl_tensor *s = vkl_reshape(g, vkl_sum_rows(g, vkl_reshape(g, t, 2, rs)), 2, nk);
    return vkl_sum_to(g, s, 1, k1);
}

static void backward_tiles(const vkl_ctx *c, const vkl_conv2d_node_params *cp, int64_t dw_rows, vkl_conv2d_tile *tx,
                           vkl_conv2d_tile *tw)
{
    if (cp->forced_tile) {
        *tx = *tw = cp->tile;
        return;
    }
    vkl_conv2d_default_tile(c, tx);
    *tw = *tx;
    /* few weight rows (a LoRA down factor): a short tile, as in the forward */
    if (tw->tm > 8 && dw_rows <= 8) tw->tm = 8;
}

int vkl_conv2d_backward(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const vkl_conv2d_node_params *cp = (const vkl_conv2d_node_params *)n->params.bytes;
    if (cp->acc) return 0;
    vkl_tensor *x = n->src[0], *w = n->src[1];
    conv_geom k = {cp->kh, cp->kw, cp->sh, cp->sw, cp->pt, cp->pl};
    vkl_conv2d_tile tx, tw;
    backward_tiles(vkl_graph_ctx(g), cp, w->shape[0], &tx, &tw);
    int64_t N = dy->shape[0], O = dy->shape[1];
    int64_t xs[4] = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    if (need[0]) dsrc[0] = conv_dx(g, dy, w, &k, xs, &tx);
    if (need[1] && vkl_dtype_is_quant(w->dtype)) {
        char d[96];
        vkl_tensor_describe(w, d, sizeof d);
        vkl_graph_set_error(g, "conv2d backward: weight %s is a frozen quantised base; its gradient is not formed "
                               "(train an adapter on it, or load f16/f32 weights)", d);
        return -1;
    }
    if (need[1]) dsrc[1] = conv_dw(g, x, dy, &k, w->shape, &tw);
    if (cp->ib >= 0 && need[cp->ib]) {
        vkl_tensor *b = n->src[cp->ib];
        dsrc[cp->ib] = vkl_reshape(g, sum_images_rows(g, dy, N, O), b->ndim, b->shape);
    }
    if (cp->it >= 0) {
        vkl_tensor *t = n->src[cp->it], *bc = n->src[cp->ibc], *rs = n->src[cp->irs];
        int64_t R = t->shape[1], r3[3] = {R, 1, 1}, or_[2] = {O, R};
        int need_t = need[cp->it], need_b = need[cp->ibc], need_s = need[cp->irs];
        vkl_tensor *s3 = vkl_reshape(g, rs, 3, r3);
        /* the 1x1 products run as convolutions (windowed like any other) */
        static const conv_geom one = {1, 1, 1, 1, 0, 0};
        if (need_t || need_s) {
            /* u = B^T dy: a 1x1 convolution of dy with B^T [R, O, 1, 1] */
            int64_t ro4[4] = {R, O, 1, 1};
            vkl_tensor *bt = vkl_contiguous(g, vkl_permute(g, vkl_reshape(g, bc, 2, or_), (int[]){1, 0}));
            vkl_conv2d_params p1 = {1, 1, 0, 0, 0, 0};
            vkl_conv2d_tile tu;
            vkl_conv2d_default_tile(vkl_graph_ctx(g), &tu);
            if (cp->forced_tile) tu = cp->tile;
            else if (tu.tm > 8 && R <= 8) tu.tm = 8;
            vkl_tensor *u = vkl_conv2d_build(g, "conv2d_lora_grad_up", dy, vkl_reshape(g, bt, 4, ro4), NULL, &p1,
                                             NULL, NULL, NULL, &tu);
            if (need_t) dsrc[cp->it] = vkl_mul(g, u, s3);
            if (need_s)
                dsrc[cp->irs] = vkl_reshape(g, sum_images_rows(g, vkl_mul(g, u, t), N, R), rs->ndim, rs->shape);
        }
        if (need_b) {
            /* d B[o][r] = sum dy[n][o][p] (s t)[n][r][p]: a 1x1 weight gradient */
            int64_t bs4[4] = {O, R, 1, 1};
            vkl_tensor *db = conv_dw(g, vkl_mul(g, t, s3), dy, &one, bs4, &tw);
            dsrc[cp->ibc] = vkl_reshape(g, db, bc->ndim, bc->shape);
        }
    }
    return vkl_graph_failed(g) ? -1 : 0;
}
