/* Group norm, layer norm and RMS norm: shapes and parameter checks; the
 * kernels are the segment normalisations of segnorm.c. CPU reference:
 * runtime/ref/ref_norm.c. */
#include "segnorm.h"

#include <math.h>
#include <string.h>

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
