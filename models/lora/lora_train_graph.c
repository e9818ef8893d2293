/* Training-mode layers of an adapter set (lora_apply.h): LoHa / LoKr delta W
 * and DoRA W' built in the graph from trainable factors, with ops that all
 * have backward rules, so each step differentiates through the construction. */
#include "lora/lora_apply.h"

#define F(r) (tf[VKL_LORA_##r])

static int64_t rest_of(const vkl_tensor *t)
{
    int64_t n = 1;
    for (int i = 1; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* A factor as a matrix [rows, everything else] (4-D LoKr w2, conv up/down). */
static vkl_tensor *flat(vkl_graph *g, vkl_tensor *t)
{
    if (!t || t->ndim == 2) return t;
    return vkl_reshape(g, t, 2, (int64_t[]){t->shape[0], rest_of(t)});
}

static vkl_tensor *loha(vkl_graph *g, vkl_tensor *const *tf, float scale)
{
    vkl_tensor *p1 = vkl_matmul(g, F(HADA_W1A), flat(g, F(HADA_W1B)));
    vkl_tensor *p2 = vkl_matmul(g, F(HADA_W2A), flat(g, F(HADA_W2B)));
    return vkl_scale(g, vkl_mul(g, p1, p2), scale);
}

/* kron(w1 [A,C], w2 [B,X]) = W [A*B, C*X] with W[a*B+b, c*X+x] = w1[a,c] w2[b,x]:
 * the broadcast product of w1 as [A,1,C,1] and w2 as [1,B,1,X] is W's memory. */
static vkl_tensor *lokr(vkl_graph *g, vkl_tensor *const *tf, float scale)
{
    vkl_tensor *w1 = F(LOKR_W1) ? F(LOKR_W1) : vkl_matmul(g, F(LOKR_W1A), F(LOKR_W1B));
    vkl_tensor *w2 = F(LOKR_W2) ? flat(g, F(LOKR_W2)) : vkl_matmul(g, F(LOKR_W2A), F(LOKR_W2B));
    if (!w1 || !w2) return NULL;
    int64_t A = w1->shape[0], C = w1->shape[1], B = w2->shape[0], X = w2->shape[1];
    vkl_tensor *k = vkl_mul(g, vkl_reshape(g, w1, 4, (int64_t[]){A, 1, C, 1}),
                            vkl_reshape(g, w2, 4, (int64_t[]){1, B, 1, X}));
    return vkl_scale(g, vkl_reshape(g, k, 2, (int64_t[]){A * B, C * X}), scale);
}

/* W' = mag * V / ||V||, V = W + s up @ down, as lora_delta.c: the norm per
 * output row when mag has shape[0] == out, else per input channel (over out
 * and the kernel, LyCORIS's dora_scale [1, in, 1, 1]). */
static vkl_tensor *dora(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *w)
{
    vkl_tensor *const *tf = sl->tf;
    int64_t O = sl->wshape[0], I = sl->wndim > 1 ? sl->wshape[1] : 1, KK = 1;
    for (int i = 2; i < sl->wndim; i++) KK *= sl->wshape[i];
    vkl_tensor *mag = F(MAG);
    int out_axis = mag->ndim == 1 ? vkl_tensor_nelem(mag) == O : mag->shape[0] == O;
    vkl_tensor *v = vkl_add(g, flat(g, w), vkl_scale(g, vkl_matmul(g, flat(g, F(UP)), flat(g, F(DOWN))), sl->tscale));
    vkl_tensor *v3 = vkl_reshape(g, v, 3, (int64_t[]){O, I, KK});
    vkl_tensor *sq = vkl_mul(g, v3, v3), *fac;
    if (out_axis) {
        vkl_tensor *n = vkl_unary(g, vkl_sum_rows(g, vkl_reshape(g, sq, 2, (int64_t[]){O, I * KK})), VKL_UNARY_SQRT,
                                  1.0f, 0.0f);
        fac = vkl_div(g, vkl_reshape(g, mag, 2, (int64_t[]){O, 1}), n);
        fac = vkl_reshape(g, fac, 3, (int64_t[]){O, 1, 1});
    } else {
        /* column sums as ones[1,O] @ rows: a matmul, whose backward rule exists */
        vkl_tensor *rows = vkl_reshape(g, vkl_sum_rows(g, sq), 2, (int64_t[]){O, I});
        vkl_tensor *n = vkl_unary(g, vkl_matmul(g, vkl_fill(g, 2, (int64_t[]){1, O}, 1.0f), rows), VKL_UNARY_SQRT,
                                  1.0f, 0.0f);
        fac = vkl_div(g, vkl_reshape(g, mag, 2, (int64_t[]){1, I}), n);
        fac = vkl_reshape(g, fac, 3, (int64_t[]){1, I, 1});
    }
    return vkl_reshape(g, vkl_mul(g, v3, fac), 2, (int64_t[]){O, I * KK});
}

vkl_tensor *vkl_lora_trained_weight(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *w)
{
    if (sl->tkind == VKL_LORA_KIND_DORA) return dora(g, sl, w);
    return vkl_lora_factored_delta(g, sl->tf, sl->tkind, sl->tscale, sl->module);
}

vkl_tensor *vkl_lora_factored_delta(vkl_graph *g, vkl_tensor *const *tf, vkl_lora_kind kind, float scale,
                                    const char *module)
{
    switch (kind) {
    case VKL_LORA_KIND_LOHA: return loha(g, tf, scale);
    case VKL_LORA_KIND_LOKR: return lokr(g, tf, scale);
    default: return vkl_graph_set_error(g, "adapter module %s: no factored form for its kind", module);
    }
}

static vkl_tensor *as_weight(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *m)
{
    return vkl_reshape(g, m, sl->wndim, sl->wshape);
}

vkl_tensor *vkl_lora_trained_linear(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *x, vkl_tensor *w,
                                    vkl_tensor *bias)
{
    vkl_tensor *m = vkl_lora_trained_weight(g, sl, w);
    if (sl->tkind == VKL_LORA_KIND_DORA) return vkl_linear(g, x, m, bias);
    return vkl_add(g, vkl_linear(g, x, flat(g, w), bias), vkl_linear(g, x, m, NULL));
}

vkl_tensor *vkl_lora_trained_conv2d(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *x, vkl_tensor *w,
                                    vkl_tensor *bias, const vkl_conv2d_params *p)
{
    vkl_tensor *m = vkl_lora_trained_weight(g, sl, w);
    if (!m) return NULL;
    if (sl->tkind == VKL_LORA_KIND_DORA) return vkl_conv2d_ex(g, x, as_weight(g, sl, m), bias, p);
    return vkl_add(g, vkl_conv2d_ex(g, x, w, bias, p), vkl_conv2d_ex(g, x, as_weight(g, sl, m), NULL, p));
}
