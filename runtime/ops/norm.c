/* The normalisations: group norm, layer norm and RMS norm (shapes and
 * parameter checks, at the end of this file) on the segment normalisations
 * that softmax shares too (see norm_internal.h). Shaders: norm_stats.comp
 * (subgroup and shared-memory variants, chosen by the device's caps) and
 * norm_apply.comp; the backward in norm_grad.c. CPU reference:
 * runtime/ref/ref_norm.c. */
#include "norm_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Elements of one line per apply workgroup. Every workgroup first merges its
 * segment's chunk statistics; on lavapipe those loads cost as much as element
 * loads, so CPUs take longer blocks, GPUs more workgroups. */
int64_t vkl_seg_block(const vkl_ctx *c) { return vkl_ctx_tuning(c)->seg_block; }

typedef vkl_seg_params seg_params;

/* Segments per dispatch so that the windows of x (when contiguous), y and the
 * statistics each fit one storage binding. Windows start on the device's
 * offset alignment when they can, so that the ranges that consecutive
 * dispatches of a node write never share bytes. */
static int seg_window(vkl_graph *g, const vkl_tensor *x, const seg_params *sp, int64_t *per_out, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    const vkl_seg_desc *d = &sp->d;
    int64_t per = vkl_window_elems(c, VKL_F32, 1) / d->seglen;
    int64_t ps = vkl_window_elems(c, VKL_F32, 1) / (sp->nchunk * 2);
    if (ps < per) per = ps;
    if (vkl_tensor_is_contiguous(x)) {
        int64_t px = vkl_window_elems(c, x->dtype, 1) / d->seglen;
        if (px < per) per = px;
    }
    if (per < 1) {
        char s[96];
        vkl_tensor_describe(x, s, sizeof s);
        return vkl_fail(e, "%s: one segment of %lld elements does not fit the device's storage binding limit "
                           "(maxStorageBufferRange %llu bytes)", s, (long long)d->seglen,
                        (unsigned long long)c->caps.max_storage_range);
    }
    if (per < d->nseg) {
        int64_t m = (int64_t)(c->caps.storage_align / 4);
        if (m > 1 && per >= m) per -= per % m;
    } else {
        per = d->nseg;
    }
    *per_out = per;
    return 0;
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

static int bind_x(vkl_graph *g, const vkl_tensor *x, const vkl_seg_desc *d, int64_t s0, int64_t ns, vkl_bind *b,
                  uint32_t *off, uint32_t *contig, vkl_err *e)
{
    *contig = (uint32_t)vkl_tensor_is_contiguous(x);
    if (*contig) return vkl_bind_span(g, x, s0 * d->seglen, ns * d->seglen, b, off, e);
    return vkl_bind_span(g, x, 0, vkl_tensor_span(x), b, off, e);
}

static int emit_stats(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const seg_params *sp = (const seg_params *)n->params.bytes;
    const vkl_seg_desc *d = &sp->d;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *x = n->src[0], *st = n->dst;
    int64_t per;
    if (seg_window(g, x, sp, &per, e)) return -1;
    vkl_kernel kernel = c->caps.subgroup_arith ? VKL_KERNEL_NORM_STATS_SUBGROUP : VKL_KERNEL_NORM_STATS;
    uint32_t spec[2] = {(uint32_t)d->mode, (uint32_t)x->dtype};
    for (int64_t s0 = 0; s0 < d->nseg; s0 += per) {
        int64_t ns = d->nseg - s0 < per ? d->nseg - s0 : per;
        struct {
            uint32_t nseg, seg_first, seglen, nchunk, chunk, sdim[4], sst[4], edim[4], est[4], x_off, s_off, x_contig;
            float scale;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.nseg = (uint32_t)ns;
        pc.seg_first = (uint32_t)s0;
        pc.seglen = (uint32_t)d->seglen;
        pc.nchunk = (uint32_t)sp->nchunk;
        pc.chunk = SEG_CHUNK;
        fill_dims(pc.sdim, pc.sst, d->sdim, d->sst);
        fill_dims(pc.edim, pc.est, d->edim, d->est);
        pc.scale = d->fparam;
        vkl_bind bind[2];
        if (bind_x(g, x, d, s0, ns, &bind[0], &pc.x_off, &pc.x_contig, e) ||
            vkl_bind_span(g, st, s0 * sp->nchunk * 2, ns * sp->nchunk * 2, &bind[1], &pc.s_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid((uint64_t)(ns * sp->nchunk), &gx, &gy);
        if (vkl_emit_dispatch(g, kernel, spec, 2, bind, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int emit_apply(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const seg_params *sp = (const seg_params *)n->params.bytes;
    const vkl_seg_desc *d = &sp->d;
    vkl_tensor *x = n->src[0], *st = n->src[1], *y = n->dst;
    vkl_tensor *gamma = sp->has_gamma ? n->src[2] : NULL, *beta = sp->has_beta ? n->src[2 + sp->has_gamma] : NULL;
    int64_t per;
    if (seg_window(g, x, sp, &per, e)) return -1;
    int64_t lines = d->edim[0], inner = d->edim[1] * d->edim[2];
    int64_t block = vkl_seg_block(vkl_graph_ctx(g)), nblk = (inner + block - 1) / block;
    uint32_t spec[9] = {(uint32_t)d->mode, (uint32_t)x->dtype, gamma ? (uint32_t)gamma->dtype : 0,
                        beta ? (uint32_t)beta->dtype : 0, gamma != NULL, beta != NULL, (uint32_t)d->per_elem,
                        (uint32_t)d->silu, (uint32_t)block};
    for (int64_t s0 = 0; s0 < d->nseg; s0 += per) {
        int64_t ns = d->nseg - s0 < per ? d->nseg - s0 : per;
        struct {
            uint32_t nseg, seg_first, seglen, nchunk, chunk, nblk, sdim[4], sst[4], edim[4], est[4];
            uint32_t x_off, s_off, y_off, g_off, b_off, x_contig, pmod, pmul;
            float fparam;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.nseg = (uint32_t)ns;
        pc.seg_first = (uint32_t)s0;
        pc.seglen = (uint32_t)d->seglen;
        pc.nchunk = (uint32_t)sp->nchunk;
        pc.chunk = SEG_CHUNK;
        pc.nblk = (uint32_t)nblk;
        fill_dims(pc.sdim, pc.sst, d->sdim, d->sst);
        fill_dims(pc.edim, pc.est, d->edim, d->est);
        pc.pmod = (uint32_t)(d->pmod > 0 ? d->pmod : 1);
        pc.pmul = (uint32_t)d->pmul;
        pc.fparam = d->fparam;
        vkl_bind bind[5];
        if (bind_x(g, x, d, s0, ns, &bind[0], &pc.x_off, &pc.x_contig, e) ||
            vkl_bind_span(g, st, s0 * sp->nchunk * 2, ns * sp->nchunk * 2, &bind[1], &pc.s_off, e) ||
            vkl_bind_span(g, y, s0 * d->seglen, ns * d->seglen, &bind[4], &pc.y_off, e))
            return -1;
        /* an absent gamma/beta is never read; its binding repeats x's */
        bind[2] = bind[3] = bind[0];
        if (gamma && vkl_bind_span(g, gamma, 0, vkl_tensor_nelem(gamma), &bind[2], &pc.g_off, e)) return -1;
        if (beta && vkl_bind_span(g, beta, 0, vkl_tensor_nelem(beta), &bind[3], &pc.b_off, e)) return -1;
        uint32_t gx, gy;
        vkl_op_grid((uint64_t)(ns * lines * nblk), &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_NORM_APPLY, spec, 9, bind, 5, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

vkl_tensor *vkl_seg_norm(vkl_graph *g, const char *name, vkl_tensor *x, vkl_tensor *gamma, vkl_tensor *beta,
                         const vkl_seg_desc *d)
{
    if (!vkl_op_float_type(x->dtype)) return vkl_graph_set_error(g, "%s: input must be f32, f16 or bf16", name);
    const char *pname[2] = {"gamma", "beta"};
    vkl_tensor *par[2] = {gamma, beta};
    for (int i = 0; i < 2; i++) {
        if (!par[i]) continue;
        if (!vkl_op_float_type(par[i]->dtype) || !vkl_tensor_is_contiguous(par[i]))
            return vkl_graph_set_error(g, "%s: %s must be a contiguous f32, f16 or bf16 tensor", name, pname[i]);
    }
    if (d->nseg < 1 || d->seglen < 1) return vkl_graph_set_error(g, "%s: empty input", name);
    /* shader indices are 32-bit */
    if (d->seglen > (int64_t)UINT32_MAX / 2 || d->nseg > (int64_t)UINT32_MAX / 2)
        return vkl_graph_set_error(g, "%s: %lld segments of %lld elements exceed 32-bit indexing", name,
                                   (long long)d->nseg, (long long)d->seglen);
    seg_params sp;
    memset(&sp, 0, sizeof sp);
    sp.d = *d;
    sp.nchunk = (d->seglen + SEG_CHUNK - 1) / SEG_CHUNK;
    sp.has_gamma = gamma != NULL;
    sp.has_beta = beta != NULL;
    int64_t sshape[2] = {d->nseg, sp.nchunk * 2};
    vkl_tensor *st = vkl_graph_tensor(g, VKL_F32, 2, sshape);
    char sname[32];
    snprintf(sname, sizeof sname, "%s_stats", name);
    if (!st || !vkl_graph_add_node(g, sname, st, &x, 1, emit_stats, &sp, sizeof sp)) return NULL;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
    vkl_tensor *src[4] = {x, st, NULL, NULL};
    int nsrc = 2;
    if (gamma) src[nsrc++] = gamma;
    if (beta) src[nsrc++] = beta;
    vkl_node *n = y ? vkl_graph_add_node(g, name, y, src, nsrc, emit_apply, &sp, sizeof sp) : NULL;
    if (!n) return NULL;
    n->backward = vkl_seg_norm_backward;
    return y;
}

void vkl_seg_rows_desc(const vkl_tensor *x, vkl_seg_mode mode, float fparam, vkl_seg_desc *d)
{
    int64_t s4[4], st4[4];
    vkl_op_shape4(x, s4, st4);
    memset(d, 0, sizeof *d);
    d->mode = mode;
    d->nseg = s4[0] * s4[1] * s4[2];
    d->seglen = s4[3];
    for (int i = 0; i < 3; i++) {
        d->sdim[i] = s4[i];
        d->sst[i] = st4[i];
    }
    d->edim[0] = d->edim[1] = 1;
    d->edim[2] = s4[3];
    d->est[2] = st4[3];
    d->per_elem = 1;
    d->pmod = 1;
    d->fparam = fparam;
}

/* ---- group norm, layer norm, RMS norm */

static int check_param(vkl_graph *g, const char *op, const char *what, const vkl_tensor *p, int64_t n)
{
    if (!p || vkl_tensor_nelem(p) == n) return 0;
    char s[96];
    vkl_tensor_describe(p, s, sizeof s);
    vkl_graph_set_error(g, "%s: %s %s must have %lld elements", op, what, s, (long long)n);
    return -1;
}

static int check_eps(vkl_graph *g, const char *op, float eps)
{
    if (eps >= 0 && isfinite(eps)) return 0;
    vkl_graph_set_error(g, "%s: eps %g must be finite and >= 0", op, (double)eps);
    return -1;
}

vkl_tensor *vkl_group_norm(vkl_graph *g, vkl_tensor *x, int groups, float eps, vkl_tensor *gamma, vkl_tensor *beta,
                           int silu)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    char s[96];
    vkl_tensor_describe(x, s, sizeof s);
    if (x->ndim < 2) return vkl_graph_set_error(g, "group_norm: input %s must be [N,C], [N,C,L] or [N,C,H,W]", s);
    int64_t C = x->shape[1];
    if (groups < 1 || C % groups)
        return vkl_graph_set_error(g, "group_norm: %d groups do not divide the %lld channels of %s", groups,
                                   (long long)C, s);
    if (check_eps(g, "group_norm", eps) || check_param(g, "group_norm", "gamma", gamma, C) ||
        check_param(g, "group_norm", "beta", beta, C))
        return NULL;
    int64_t cpg = C / groups;
    int nd = x->ndim;
    vkl_seg_desc d;
    memset(&d, 0, sizeof d);
    d.mode = VKL_SEG_MEANVAR;
    d.nseg = x->shape[0] * groups;
    d.sdim[0] = 1;
    d.sdim[1] = x->shape[0];
    d.sdim[2] = groups;
    d.sst[1] = x->stride[0];
    d.sst[2] = cpg * x->stride[1];
    d.edim[0] = cpg;
    d.edim[1] = nd == 4 ? x->shape[2] : 1;
    d.edim[2] = nd >= 3 ? x->shape[nd - 1] : 1;
    d.est[0] = x->stride[1];
    d.est[1] = nd == 4 ? x->stride[2] : 0;
    d.est[2] = nd >= 3 ? x->stride[nd - 1] : 0;
    d.seglen = d.edim[0] * d.edim[1] * d.edim[2];
    d.pmod = groups;
    d.pmul = cpg;
    d.fparam = eps;
    d.silu = silu != 0;
    return vkl_seg_norm(g, silu ? "group_norm_silu" : "group_norm", x, gamma, beta, &d);
}

vkl_tensor *vkl_layer_norm(vkl_graph *g, vkl_tensor *x, vkl_tensor *gamma, vkl_tensor *beta, float eps)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    int64_t D = x->shape[x->ndim - 1];
    if (check_eps(g, "layer_norm", eps) || check_param(g, "layer_norm", "gamma", gamma, D) ||
        check_param(g, "layer_norm", "beta", beta, D))
        return NULL;
    vkl_seg_desc d;
    vkl_seg_rows_desc(x, VKL_SEG_MEANVAR, eps, &d);
    return vkl_seg_norm(g, "layer_norm", x, gamma, beta, &d);
}

vkl_tensor *vkl_rms_norm(vkl_graph *g, vkl_tensor *x, vkl_tensor *gamma, float eps)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    int64_t D = x->shape[x->ndim - 1];
    if (check_eps(g, "rms_norm", eps) || check_param(g, "rms_norm", "gamma", gamma, D)) return NULL;
    vkl_seg_desc d;
    vkl_seg_rows_desc(x, VKL_SEG_RMS, eps, &d);
    return vkl_seg_norm(g, "rms_norm", x, gamma, NULL, &d);
}
