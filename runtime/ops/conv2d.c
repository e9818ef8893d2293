/* 2-D convolution. Shader: conv2d.comp. CPU reference: runtime/ref/ref_conv2d.c.
 *
 * Activation layout: NCHW, as everywhere in vklora (the layout of the
 * PyTorch checkpoints, of group norm's channel groups and of the attention
 * reshapes, so no transposes are needed between ops). The convolution is an
 * implicit GEMM per image: rows are output channels, columns are the Ho*Wo
 * output pixels, the reduction runs over C*kh*kw, and input patches are
 * gathered on the fly from the NCHW image. With output pixels as GEMM columns
 * the result of each tile row is a contiguous run of one output channel
 * plane, so NCHW output needs no scatter; the weight [O, C, kh, kw] is the
 * GEMM's left operand as stored.
 *
 * A 1x1 convolution with stride 1, no padding and a contiguous input is a
 * plain GEMM, W [O, C] . x [N, C, H*W]: it goes through vkl_matmul (measured
 * about 2x faster than this kernel on lavapipe for 320 channels at 64x64) and
 * the bias, which is per row here and per column in matmul, is a broadcast
 * add. LoRA-fused 1x1 convolutions stay in this kernel (one pass over y), and
 * so do 1x1 convolutions whose one image of x or y exceeds a binding.
 *
 * Tensors larger than one storage binding: when x, w and y each fit in one
 * binding every image is one dispatch (z = image); otherwise the work is
 * split per image first, then by ranges of output channels (windows of y and
 * of w's rows), and when one image's input does not fit, by ranges of input
 * channels: each later range is its own graph node that adds to y.
 *
 * Backward rules: runtime/ops/conv2d_grad.c. */
#include "conv2d_internal.h"
#include "op_util.h"
#include "quant.h"

#include <string.h>

void vkl_conv2d_default_tile(const vkl_ctx *c, vkl_conv2d_tile *t)
{
    /* lavapipe turns every buffer load into a loop over the 8 lanes, so the
     * tile is as large as the registers allow (32 channels x 16 pixels
     * measured fastest on SD shapes); GPUs want many small tiles. */
    int cpu = vkl_ctx_tuning(c)->cpu;
    t->wg = cpu ? 8 : 64;
    t->tm = cpu ? 32 : 4;
    t->tn = cpu ? 16 : 4;
}

typedef struct {
    uint32_t C, H, W, O, Ho, Wo;
    uint32_t kdims; /* KH | KW << 8 | SH << 16 | SW << 24 */
    int32_t pt, pl;
    uint32_t has_bias;
    uint32_t x_off, w_off, y_off, bias_off;
    uint32_t sxn, sxc, sxh, sxw;
    uint32_t swo, syn;
    uint32_t t_off, b_off, s_off, R, stn, sbo;
    uint32_t nimg;
    uint32_t wq_code, wq_scale, wq_qcode;
} conv_pc;

/* Elements of one image's input channels [0, cc) as the shader reads them. */
static int64_t x_span(const int64_t xs[4], const int64_t xst[4], int64_t cc)
{
    return (cc - 1) * xst[1] + (xs[2] - 1) * xst[2] + (xs[3] - 1) * xst[3] + 1;
}

static int emit_conv(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const vkl_conv2d_node_params *cp = (const vkl_conv2d_node_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *x = n->src[0], *w = n->src[1], *y = n->dst;
    vkl_tensor *bias = cp->ib >= 0 ? n->src[cp->ib] : NULL;
    vkl_tensor *t = cp->it >= 0 ? n->src[cp->it] : NULL;
    vkl_tensor *bc = cp->ibc >= 0 ? n->src[cp->ibc] : NULL;
    vkl_tensor *rs = cp->irs >= 0 ? n->src[cp->irs] : NULL;
    int64_t xs[4], xst[4];
    vkl_op_shape4(x, xs, xst);
    int64_t N = y->shape[0], O = y->shape[1], Ho = y->shape[2], Wo = y->shape[3], P = Ho * Wo;
    int64_t KK = (int64_t)cp->kh * cp->kw, K = w->shape[1] * KK, R = t ? t->shape[1] : 0;
    const vkl_conv2d_tile *tl = &cp->tile;
    int acc = !cp->acc ? 0 : n->src[n->nsrc - 1] == y ? 1 : 2;
    int padded = cp->pt || cp->pl || (Ho - 1) * cp->sh + cp->kh > xs[2] || (Wo - 1) * cp->sw + cp->kw > xs[3];
    /* kernel size, stride and bias are push constants: fewer pipelines to compile */
    uint32_t spec[11] = {tl->wg, tl->tm, tl->tn, (uint32_t)x->dtype, (uint32_t)w->dtype,
                         bias ? (uint32_t)bias->dtype : 0u, padded ? 1u : 0u, (uint32_t)acc, t ? 1u : 0u,
                         bc ? (uint32_t)bc->dtype : 0u, 0u};

    /* an NF4 weight is bound whole (vkl_bind_quant), never windowed */
    int quant = vkl_dtype_is_quant(w->dtype);
    vkl_bind wbind;
    vkl_quant_offsets wq = {0, 0, 0};
    if (quant && vkl_bind_quant(g, w, &wbind, &wq, e)) return -1;
    int64_t max_x = vkl_window_elems(c, x->dtype, 1), max_w = quant ? INT64_MAX : vkl_window_elems(c, w->dtype, 1);
    int64_t max_y = vkl_window_elems(c, VKL_F32, 1);
    int64_t xspan1 = x_span(xs, xst, cp->cc);   /* one image, this node's channels */
    int64_t wspan_rows = K * (O - 1) + cp->cc * KK;
    int whole = (N - 1) * xst[0] + xspan1 <= max_x && wspan_rows <= max_w && N * O * P <= max_y &&
                (!t || vkl_tensor_span(t) <= max_y);
    /* output channels per dispatch: windows of w's rows and of y's planes */
    int64_t oc = O;
    if (!whole) {
        int64_t by_w = (max_w - cp->cc * KK) / K + 1, by_y = max_y / P;
        oc = by_w < by_y ? by_w : by_y;
        if (oc > O) oc = O;
        if (oc > (int64_t)tl->tm) oc -= oc % tl->tm;
        if (oc < 1) {
            char d[96];
            vkl_tensor_describe(y, d, sizeof d);
            return vkl_fail(e, "conv2d: one output channel of %s does not fit the storage binding limit (%llu bytes)",
                            d, (unsigned long long)c->caps.max_storage_range);
        }
    }
    int64_t images = whole ? 1 : N;
    /* images smaller than one workgroup's columns: columns over all images */
    int fold = whole && N > 1 && P < (int64_t)tl->tn * tl->wg && N * P <= UINT32_MAX;
    spec[10] = fold ? 1u : 0u;
    for (int64_t z = 0; z < images; z++) {
        for (int64_t o0 = 0; o0 < O; o0 += oc) {
            int64_t on = O - o0 < oc ? O - o0 : oc;
            conv_pc pc;
            memset(&pc, 0, sizeof pc);
            pc.C = (uint32_t)cp->cc;
            pc.H = (uint32_t)xs[2];
            pc.W = (uint32_t)xs[3];
            pc.O = (uint32_t)on;
            pc.Ho = (uint32_t)Ho;
            pc.Wo = (uint32_t)Wo;
            pc.kdims = (uint32_t)cp->kh | (uint32_t)cp->kw << 8 | (uint32_t)cp->sh << 16 | (uint32_t)cp->sw << 24;
            pc.wq_code = wq.code_off;
            pc.wq_scale = wq.scale_off;
            pc.wq_qcode = wq.qcode_off;
            pc.has_bias = bias != NULL;
            pc.pt = cp->pt;
            pc.pl = cp->pl;
            pc.sxn = whole ? (uint32_t)xst[0] : 0;
            pc.sxc = (uint32_t)xst[1];
            pc.sxh = (uint32_t)xst[2];
            pc.sxw = (uint32_t)xst[3];
            pc.swo = (uint32_t)K;
            pc.syn = whole ? (uint32_t)(O * P) : 0;
            vkl_bind bind[8];
            int64_t xfirst = z * xst[0] + cp->c0 * xst[1];
            int64_t xspan = whole ? (N - 1) * xst[0] + xspan1 : xspan1;
            if (quant) {
                bind[1] = wbind;
                pc.w_off = wq.code_off + (uint32_t)(o0 * K + cp->c0 * KK);
            }
            if (vkl_bind_span(g, x, xfirst, xspan, &bind[0], &pc.x_off, e) ||
                (!quant &&
                 vkl_bind_span(g, w, o0 * K + cp->c0 * KK, K * (on - 1) + cp->cc * KK, &bind[1], &pc.w_off, e)) ||
                vkl_bind_span(g, y, (z * O + o0) * P, whole ? N * O * P : on * P, &bind[2], &pc.y_off, e))
                return -1;
            if (bias) {
                if (vkl_bind_span(g, bias, o0, on, &bind[3], &pc.bias_off, e)) return -1;
            } else {
                bind[3] = bind[1];
            }
            if (t) {
                pc.R = (uint32_t)R;
                pc.stn = whole ? (uint32_t)(R * P) : 0;
                pc.sbo = (uint32_t)R;
                if (vkl_bind_span(g, t, z * R * P, whole ? N * R * P : R * P, &bind[4], &pc.t_off, e) ||
                    vkl_bind_span(g, bc, o0 * R, on * R, &bind[5], &pc.b_off, e) ||
                    vkl_bind_span(g, rs, 0, R, &bind[6], &pc.s_off, e))
                    return -1;
            } else {
                bind[4] = bind[5] = bind[6] = bind[1];
            }
            /* the earlier channel ranges: y itself (read through y's own
             * binding), or, when a checkpoint segment replays this node into
             * a new tensor, the recomputed copy of y (binding 7) */
            bind[7] = bind[1];
            if (acc == 2) {
                uint32_t yin_off;
                if (vkl_bind_span(g, n->src[n->nsrc - 1], (z * O + o0) * P, whole ? N * O * P : on * P, &bind[7],
                                  &yin_off, e))
                    return -1;
                if (yin_off != pc.y_off) return vkl_fail(e, "internal: conv2d accumulation windows differ in alignment");
            }
            int64_t cols = fold ? N * P : P;
            pc.nimg = (uint32_t)N;
            uint32_t gx = (uint32_t)(((cols + tl->tn - 1) / tl->tn + tl->wg - 1) / tl->wg);
            uint32_t gy = (uint32_t)((on + tl->tm - 1) / tl->tm);
            uint32_t gz = whole && !fold ? (uint32_t)N : 1;
            if (vkl_emit_dispatch(g, VKL_KERNEL_CONV2D, spec, 11, bind, 8, &pc, sizeof pc, gx, gy, gz, e)) return -1;
        }
    }
    return 0;
}

static int check_float(vkl_graph *g, const char *name, const char *what, const vkl_tensor *t)
{
    if (!t || vkl_op_float_type(t->dtype)) return 0;
    char d[96];
    vkl_tensor_describe(t, d, sizeof d);
    vkl_graph_set_error(g, "%s: %s %s must be f32, f16 or bf16", name, what, d);
    return -1;
}

/* y [N, O, H, W] = W [O, C] . x [N, C, H*W] + bias[o] */
static vkl_tensor *conv1x1_matmul(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias)
{
    int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[0];
    int64_t xs[3] = {N, C, H * W}, ws[2] = {O, C}, ys[4] = {N, O, H, W}, bs[2] = {O, 1};
    vkl_tensor *y = vkl_matmul(g, vkl_reshape(g, w, 2, ws), vkl_reshape(g, x, 3, xs));
    if (bias) {
        if (!vkl_tensor_is_contiguous(bias)) bias = vkl_contiguous(g, bias);
        y = vkl_add(g, y, vkl_reshape(g, bias, 2, bs));
    }
    return vkl_reshape(g, y, 4, ys);
}

vkl_tensor *vkl_conv2d_build(vkl_graph *g, const char *name, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias,
                             const vkl_conv2d_params *p, vkl_tensor *t, vkl_tensor *b_cat, vkl_tensor *rank_scale,
                             const vkl_conv2d_tile *tile)
{
    if (!x || !w || !p || vkl_graph_failed(g)) return NULL;
    vkl_ctx *c = vkl_graph_ctx(g);
    char dx[96], dw[96];
    vkl_tensor_describe(x, dx, sizeof dx);
    vkl_tensor_describe(w, dw, sizeof dw);
    /* the weight may also be a frozen NF4 / NF4_DQ base (dequantised in the shader) */
    int nf4 = w->dtype == VKL_NF4 || w->dtype == VKL_NF4_DQ;
    if (!nf4 && vkl_dtype_is_quant(w->dtype))
        return vkl_graph_set_error(g, "%s: weight %s must be f32, f16, bf16, NF4 or NF4_DQ", name, dw);
    const vkl_tensor *wroot = w->view_of ? w->view_of : w;
    if (nf4 && (w->offset != wroot->offset || vkl_tensor_nelem(w) != vkl_tensor_nelem(wroot)))
        return vkl_graph_set_error(g, "%s: an NF4 weight (%s) must be a whole kernel, not a part of one", name, dw);
    if (check_float(g, name, "input", x) || (!nf4 && check_float(g, name, "weight", w)) ||
        check_float(g, name, "bias", bias) ||
        check_float(g, name, "LoRA up weight", b_cat))
        return NULL;
    if (x->ndim != 4) return vkl_graph_set_error(g, "%s: input %s must be [N, C, H, W]", name, dx);
    if (w->ndim != 4) return vkl_graph_set_error(g, "%s: weight %s must be [O, C, kh, kw]", name, dw);
    if (!vkl_tensor_is_contiguous(w)) return vkl_graph_set_error(g, "%s: weight %s must be contiguous", name, dw);
    if (w->shape[1] != x->shape[1])
        return vkl_graph_set_error(g, "%s: weight %s expects %lld input channels, input %s has %lld", name, dw,
                                   (long long)w->shape[1], dx, (long long)x->shape[1]);
    if (p->stride_h < 1 || p->stride_w < 1 || p->pad_top < 0 || p->pad_bottom < 0 || p->pad_left < 0 ||
        p->pad_right < 0)
        return vkl_graph_set_error(g, "%s: strides must be >= 1 and padding >= 0", name);
    int64_t N = x->shape[0], H = x->shape[2], W = x->shape[3], O = w->shape[0], kh = w->shape[2], kw = w->shape[3];
    if (H + p->pad_top + p->pad_bottom < kh || W + p->pad_left + p->pad_right < kw)
        return vkl_graph_set_error(g, "%s: kernel %s is larger than the padded input %s", name, dw, dx);
    if (kh > 64 || kw > 64 || p->stride_h > 64 || p->stride_w > 64 || p->pad_top > 1024 || p->pad_left > 1024)
        return vkl_graph_set_error(g, "%s: kernel, stride or padding of %s beyond what conv2d supports", name, dw);
    int64_t Ho = (H + p->pad_top + p->pad_bottom - kh) / p->stride_h + 1;
    int64_t Wo = (W + p->pad_left + p->pad_right - kw) / p->stride_w + 1;
    if (bias && vkl_tensor_nelem(bias) != O)
        return vkl_graph_set_error(g, "%s: bias has %lld elements, weight %s has %lld output channels", name,
                                   (long long)vkl_tensor_nelem(bias), dw, (long long)O);
    if (t && (t->dtype != VKL_F32 || !vkl_tensor_is_contiguous(t) || t->ndim != 4 || t->shape[0] != N ||
              t->shape[2] != Ho || t->shape[3] != Wo || !b_cat || !rank_scale))
        return vkl_graph_set_error(g, "%s: internal: LoRA down-projection has the wrong shape", name);
    int64_t xs[4], xst[4];
    vkl_op_shape4(x, xs, xst);
    if (vkl_tensor_span(x) > UINT32_MAX || N * O * Ho * Wo > UINT32_MAX || vkl_tensor_nelem(w) > UINT32_MAX)
        return vkl_graph_set_error(g, "%s: %s * %s is too large (more than 2^32 elements)", name, dx, dw);

    /* input channels per node: one image's channel range must fit one binding */
    int64_t C = xs[1], KK = kh * kw, max_x = vkl_window_elems(c, x->dtype, 1);
    int64_t max_w = vkl_dtype_is_quant(w->dtype) ? INT64_MAX : vkl_window_elems(c, w->dtype, 1);
    int64_t cc = C;
    if (x_span(xs, xst, C) > max_x) {
        int64_t plane = x_span(xs, xst, 1);
        cc = plane <= max_x && xst[1] ? (max_x - plane) / xst[1] + 1 : 0;
    }
    if (cc * KK > max_w) cc = max_w / KK;
    if (cc < 1)
        return vkl_graph_set_error(g, "%s: one channel of input %s (or one weight row of %s) exceeds the storage "
                                      "binding limit (%llu bytes)", name, dx, dw,
                                   (unsigned long long)vkl_ctx_caps(c)->max_storage_range);
    /* matmul splits by images and rows of W only: when one image of x or y
     * exceeds a binding (256 channels at 512x512 in the SD VAE decoder on a
     * 128 MiB binding) this kernel's channel ranges take it */
    /* (vkl_matmul reads a quantised right operand only: NF4 kernels stay here) */
    if (!t && !tile && !vkl_dtype_is_quant(w->dtype) && kh == 1 && kw == 1 && p->stride_h == 1 && p->stride_w == 1 && !p->pad_top &&
        !p->pad_bottom && !p->pad_left && !p->pad_right && vkl_tensor_is_contiguous(x) && cc == C &&
        O * Ho * Wo <= vkl_window_elems(c, VKL_F32, 1))
        return conv1x1_matmul(g, x, w, bias);

    int64_t shape[4] = {N, O, Ho, Wo};
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, 4, shape);
    vkl_conv2d_node_params cp;
    memset(&cp, 0, sizeof cp);
    cp.kh = (int)kh;
    cp.kw = (int)kw;
    cp.sh = p->stride_h;
    cp.sw = p->stride_w;
    cp.pt = p->pad_top;
    cp.pl = p->pad_left;
    cp.forced_tile = tile != NULL;
    if (tile) cp.tile = *tile;
    else {
        vkl_conv2d_default_tile(c, &cp.tile);
        /* few output channels (a LoRA down-projection): a short tile, one
         * size only, since every tile shape is a pipeline to compile */
        if (cp.tile.tm > 8 && O <= 8) cp.tile.tm = 8;
    }
    for (int64_t c0 = 0; c0 < C; c0 += cc) {
        vkl_tensor *src[6] = {x, w};
        int ns = 2;
        cp.ib = cp.it = cp.ibc = cp.irs = -1;
        cp.acc = c0 > 0;
        cp.c0 = c0;
        cp.cc = C - c0 < cc ? C - c0 : cc;
        if (c0 == 0) {
            if (bias) cp.ib = ns, src[ns++] = bias;
            if (t) {
                cp.it = ns, src[ns++] = t;
                cp.ibc = ns, src[ns++] = b_cat;
                cp.irs = ns, src[ns++] = rank_scale;
            }
        } else {
            src[ns++] = y;   /* read: it holds the earlier channel ranges */
        }
        vkl_node *n = vkl_graph_add_node(g, name, y, src, ns, emit_conv, &cp, sizeof cp);
        if (!n) return NULL;
        n->backward = vkl_conv2d_backward;
    }
    return y;
}

vkl_tensor *vkl_conv2d_ex(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, const vkl_conv2d_params *p)
{
    return vkl_conv2d_build(g, "conv2d", x, w, bias, p, NULL, NULL, NULL, NULL);
}

vkl_tensor *vkl_conv2d(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, int stride, int pad)
{
    vkl_conv2d_params p = {stride, stride, pad, pad, pad, pad};
    return vkl_conv2d_build(g, "conv2d", x, w, bias, &p, NULL, NULL, NULL, NULL);
}
