/* LoRA-fused convolution: y = conv(x, W) + b + conv1x1(rank_scale * conv(x, A_cat), B_cat).
 * Two nodes of conv2d.comp: the down-projection t = conv(x, A_cat) with W's
 * stride and padding ([N, R, Ho, Wo], small), then the base convolution with
 * the up-projection fused into the same register tiles (its rank loop runs
 * after the C*kh*kw loop), so y is written once and W + delta W is never
 * formed. rank_scale is read by the shader on every run: uploading new
 * multipliers changes the result without re-planning. */
#include "conv2d_internal.h"
#include "op_util.h"

vkl_tensor *vkl_conv2d_lora(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, const vkl_conv2d_params *p,
                            vkl_tensor *a_cat, vkl_tensor *b_cat, vkl_tensor *rank_scale)
{
    if (!x || !w || !p || !a_cat || !b_cat || !rank_scale || vkl_graph_failed(g)) return NULL;
    char dw[96], da[96], db[96], ds[96];
    vkl_tensor_describe(w, dw, sizeof dw);
    vkl_tensor_describe(a_cat, da, sizeof da);
    vkl_tensor_describe(b_cat, db, sizeof db);
    vkl_tensor_describe(rank_scale, ds, sizeof ds);
    if (w->ndim != 4 || a_cat->ndim != 4 || b_cat->ndim != 4)
        return vkl_graph_set_error(g, "conv2d_lora: weight %s, down %s and up %s must be 4-D", dw, da, db);
    int64_t R = a_cat->shape[0];
    if (a_cat->shape[1] != w->shape[1] || a_cat->shape[2] != w->shape[2] || a_cat->shape[3] != w->shape[3])
        return vkl_graph_set_error(g, "conv2d_lora: down weight %s must be [R, %lld, %lld, %lld] like weight %s", da,
                                   (long long)w->shape[1], (long long)w->shape[2], (long long)w->shape[3], dw);
    if (b_cat->shape[0] != w->shape[0] || b_cat->shape[1] != R || b_cat->shape[2] != 1 || b_cat->shape[3] != 1)
        return vkl_graph_set_error(g, "conv2d_lora: up weight %s must be [%lld, %lld, 1, 1]", db, (long long)w->shape[0],
                                   (long long)R);
    if (!vkl_tensor_is_contiguous(b_cat))
        return vkl_graph_set_error(g, "conv2d_lora: up weight %s must be contiguous", db);
    if (rank_scale->dtype != VKL_F32 || vkl_tensor_nelem(rank_scale) != R || !vkl_tensor_is_contiguous(rank_scale))
        return vkl_graph_set_error(g, "conv2d_lora: rank_scale %s must be contiguous f32 with %lld elements", ds,
                                   (long long)R);
    vkl_tensor *t = vkl_conv2d_build(g, "conv2d_lora_down", x, a_cat, NULL, p, NULL, NULL, NULL, NULL);
    return vkl_conv2d_build(g, "conv2d_lora", x, w, bias, p, t, b_cat, rank_scale, NULL);
}
