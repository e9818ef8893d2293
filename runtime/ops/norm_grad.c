/* Backward of the segment normalisations (group norm with or without SiLU,
 * layer norm, RMS norm, softmax): the rule set on the apply node by
 * vkl_seg_norm. Kernels: norm_grad.comp (part sums, apply, column sums). The
 * forward's chunk statistics are reused. CPU reference:
 * runtime/ref/ref_norm_grad.c. */
#include "norm_internal.h"

#include <stdio.h>
#include <string.h>

/* Rows per column-sum workgroup of the row norms' parameter gradients. */
#define PARAM_ROWS 64

typedef struct {
    vkl_seg_params sp;
    int pass;               /* 0 part sums, 1 dx, 2 column sums */
    int64_t lines, nblk, block;
    int64_t per;            /* segments per dispatch (fixed when the node is built) */
    int64_t rows;           /* pass 2: rows per row block */
} grad_params;

/* Segments per dispatch so that every window (x when contiguous, the
 * statistics, the part sums, dy and dx) fits one storage binding, and a
 * multiple of the offset alignment (so dispatches never write the same
 * bytes). 0 when one segment does not fit. Pass 2 also binds its whole
 * [row blocks, D, 2] output, which fails with the limit named when too big. */
static int64_t grad_window(const vkl_ctx *c, const vkl_tensor *x, const vkl_seg_params *sp, int64_t part_per_seg)
{
    const vkl_seg_desc *d = &sp->d;
    int64_t f = vkl_window_elems(c, VKL_F32, 1);
    int64_t per = f / d->seglen;
    if (f / (sp->nchunk * 2) < per) per = f / (sp->nchunk * 2);
    if (part_per_seg && f / part_per_seg < per) per = f / part_per_seg;
    if (vkl_tensor_is_contiguous(x)) {
        int64_t px = vkl_window_elems(c, x->dtype, 1) / d->seglen;
        if (px < per) per = px;
    }
    if (per < 1) return 0;
    if (per >= d->nseg) return d->nseg;
    int64_t m = (int64_t)(vkl_ctx_caps(c)->storage_align / 4);
    if (m > 1 && per >= m) per -= per % m;
    return per;
}

static void fill_dims(uint32_t dim[4], uint32_t st[4], const int64_t *d3, const int64_t *s3)
{
    dim[0] = 1;
    st[0] = 0;
    for (int i = 0; i < 3; i++) {
        dim[i + 1] = (uint32_t)d3[i];
        st[i + 1] = (uint32_t)s3[i];
    }
}

static int emit_grad(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const grad_params *gp = (const grad_params *)n->params.bytes;
    const vkl_seg_params *sp = &gp->sp;
    const vkl_seg_desc *d = &sp->d;
    vkl_ctx *c = vkl_graph_ctx(g);
    int k = 2;
    vkl_tensor *x = n->src[0], *st = n->src[1];
    vkl_tensor *gamma = sp->has_gamma ? n->src[k++] : NULL, *beta = sp->has_beta ? n->src[k++] : NULL;
    vkl_tensor *dy = n->src[k++];
    vkl_tensor *part = gp->pass == 1 ? n->src[k] : n->dst, *dx = gp->pass == 1 ? n->dst : NULL;
    int contig = vkl_tensor_is_contiguous(x);
    uint32_t spec[10] = {(uint32_t)d->mode, (uint32_t)x->dtype, gamma ? (uint32_t)gamma->dtype : 0,
                         beta ? (uint32_t)beta->dtype : 0, gamma != NULL, beta != NULL, (uint32_t)d->per_elem,
                         (uint32_t)d->silu, (uint32_t)gp->block, (uint32_t)contig};
    vkl_kernel kernel = gp->pass == 1   ? VKL_KERNEL_NORM_GRAD_APPLY
                        : gp->pass == 2 ? VKL_KERNEL_NORM_GRAD_PARAM
                        : c->caps.subgroup_arith ? VKL_KERNEL_NORM_GRAD_PART_SUBGROUP
                                                 : VKL_KERNEL_NORM_GRAD_PART;
    int64_t pw = gp->lines * gp->nblk * 2;   /* part sums per segment (passes 0, 1) */
    for (int64_t s0 = 0; s0 < d->nseg; s0 += gp->per) {
        int64_t ns = d->nseg - s0 < gp->per ? d->nseg - s0 : gp->per;
        struct {
            uint32_t nseg, seg_first, seglen, chunk, nblk, sdim[4], sst[4], edim[4], est[4];
            uint32_t x_off, s_off, p_off, dy_off, dx_off, g_off, b_off, pmod, pmul;
            float fparam;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.nseg = (uint32_t)ns;
        pc.seg_first = (uint32_t)s0;
        pc.seglen = (uint32_t)d->seglen;
        pc.chunk = SEG_CHUNK;
        pc.nblk = (uint32_t)(gp->pass == 2 ? gp->rows : gp->nblk);
        fill_dims(pc.sdim, pc.sst, d->sdim, d->sst);
        fill_dims(pc.edim, pc.est, d->edim, d->est);
        pc.pmod = (uint32_t)(d->pmod > 0 ? d->pmod : 1);
        pc.pmul = (uint32_t)d->pmul;
        pc.fparam = d->fparam;
        vkl_bind bind[7];
        int rc = contig ? vkl_bind_span(g, x, s0 * d->seglen, ns * d->seglen, &bind[0], &pc.x_off, e)
                        : vkl_bind_span(g, x, 0, vkl_tensor_span(x), &bind[0], &pc.x_off, e);
        if (rc || vkl_bind_span(g, st, s0 * sp->nchunk * 2, ns * sp->nchunk * 2, &bind[1], &pc.s_off, e) ||
            vkl_bind_span(g, dy, s0 * d->seglen, ns * d->seglen, &bind[4], &pc.dy_off, e))
            return -1;
        /* an absent gamma/beta is never read; its binding repeats x's */
        bind[2] = bind[3] = bind[0];
        if (gamma && vkl_bind_span(g, gamma, 0, vkl_tensor_nelem(gamma), &bind[2], &pc.g_off, e)) return -1;
        if (beta && vkl_bind_span(g, beta, 0, vkl_tensor_nelem(beta), &bind[3], &pc.b_off, e)) return -1;
        uint64_t groups;
        if (gp->pass == 2) {
            /* column sums of the whole row-block grid; a window covers whole row blocks */
            if (vkl_bind_span(g, part, 0, vkl_tensor_nelem(part), &bind[5], &pc.p_off, e)) return -1;
            groups = (uint64_t)((ns + gp->rows - 1) / gp->rows) * (uint64_t)((d->seglen + 63) / 64);
        } else {
            if (vkl_bind_span(g, part, s0 * pw, ns * pw, &bind[5], &pc.p_off, e)) return -1;
            groups = (uint64_t)(ns * gp->lines * gp->nblk);
        }
        if (gp->pass == 1 && vkl_bind_span(g, dx, s0 * d->seglen, ns * d->seglen, &bind[6], &pc.dx_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(groups, &gx, &gy);
        if (vkl_emit_dispatch(g, kernel, spec, 10, bind, gp->pass == 1 ? 7 : 6, &pc, sizeof pc, gx, gy, 1, e))
            return -1;
    }
    return 0;
}

/* The gradient of a parameter from its (sum g, sum g * xh) pairs: a strided
 * view in the parameter's shape. */
static vkl_tensor *param_view(vkl_graph *g, vkl_tensor *pairs, const vkl_tensor *param, int which)
{
    int64_t stride[VKL_MAX_DIMS], s = 2;
    for (int i = param->ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= param->shape[i];
    }
    return vkl_view(g, pairs, param->ndim, param->shape, stride, which);
}

int vkl_seg_norm_backward(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const vkl_seg_params *sp = (const vkl_seg_params *)n->params.bytes;
    const vkl_seg_desc *d = &sp->d;
    vkl_ctx *c = vkl_graph_ctx(g);
    int gi = sp->has_gamma ? 2 : -1, bi = sp->has_beta ? 2 + sp->has_gamma : -1;
    int need_x = need[0], need_g = gi >= 0 && need[gi], need_b = bi >= 0 && need[bi];
    if (!need_x && !need_g && !need_b) return 0;
    vkl_tensor *x = n->src[0];
    if (dy->dtype != VKL_F32 || !vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    if (!dy) return -1;
    vkl_tensor *src[VKL_NODE_MAX_SRC];
    int ns = 0;
    for (int i = 0; i < n->nsrc; i++) src[ns++] = n->src[i];
    src[ns++] = dy;

    grad_params gp;
    memset(&gp, 0, sizeof gp);
    gp.sp = *sp;
    gp.lines = d->edim[0];
    gp.block = vkl_seg_block(c);
    int64_t inner = d->edim[1] * d->edim[2];
    gp.nblk = (inner + gp.block - 1) / gp.block;
    gp.per = grad_window(c, x, sp, gp.lines * gp.nblk * 2);
    if (gp.per < 1) {
        char s[96];
        vkl_tensor_describe(x, s, sizeof s);
        vkl_graph_set_error(g, "%s backward: one segment of %s does not fit the device's storage binding limit "
                               "(maxStorageBufferRange %llu bytes)", n->op, s,
                            (unsigned long long)vkl_ctx_caps(c)->max_storage_range);
        return -1;
    }
    char name[32];
    vkl_tensor *part = NULL;
    if (need_x || (!d->per_elem && (need_g || need_b))) {
        int64_t shape[2] = {d->nseg, gp.lines * gp.nblk * 2};
        part = vkl_graph_tensor(g, VKL_F32, 2, shape);
        snprintf(name, sizeof name, "%.20s_grad_part", n->op);
        if (!part || !vkl_graph_add_node(g, name, part, src, ns, emit_grad, &gp, sizeof gp)) return -1;
    }
    if (need_x) {
        grad_params ga = gp;
        ga.pass = 1;
        src[ns] = part;
        vkl_tensor *dx = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
        snprintf(name, sizeof name, "%.20s_grad", n->op);
        if (!dx || !vkl_graph_add_node(g, name, dx, src, ns + 1, emit_grad, &ga, sizeof ga)) return -1;
        dsrc[0] = dx;
    }
    if (!need_g && !need_b) return vkl_graph_failed(g) ? -1 : 0;
    const vkl_tensor *param = need_g ? n->src[gi] : n->src[bi];
    int64_t P = vkl_tensor_nelem(param);
    vkl_tensor *pairs;
    if (d->per_elem) {
        /* column sums over blocks of rows, then over the blocks */
        grad_params gq = gp;
        gq.pass = 2;
        gq.rows = gp.per < PARAM_ROWS ? gp.per : PARAM_ROWS;
        if (gq.per < d->nseg) gq.per -= gq.per % gq.rows;
        int64_t nrb = (d->nseg + gq.rows - 1) / gq.rows;
        int64_t shape[3] = {nrb, P, 2}, to[3] = {1, P, 2};
        vkl_tensor *q = vkl_graph_tensor(g, VKL_F32, 3, shape);
        snprintf(name, sizeof name, "%.20s_grad_param", n->op);
        if (!q || !vkl_graph_add_node(g, name, q, src, ns, emit_grad, &gq, sizeof gq)) return -1;
        pairs = vkl_sum_to(g, q, 3, to);
    } else {
        /* part sums [N, groups, lines, blocks, 2] = [N, C, blocks, 2]: sum over N and blocks */
        int64_t shape[4] = {d->nseg / (d->pmod > 0 ? d->pmod : 1), P, gp.nblk, 2}, to[4] = {1, P, 1, 2};
        pairs = vkl_sum_to(g, vkl_reshape(g, part, 4, shape), 4, to);
    }
    if (need_b) dsrc[bi] = param_view(g, pairs, n->src[bi], 0);
    if (need_g) dsrc[gi] = param_view(g, pairs, n->src[gi], 1);
    return vkl_graph_failed(g) ? -1 : 0;
}
