/* Loss functions built from differentiable ops, so their gradients come from
 * the ops' own backward rules. */
#include "op_util.h"

vkl_tensor *vkl_mse_loss(vkl_graph *g, vkl_tensor *pred, vkl_tensor *target, vkl_tensor *weights,
                         vkl_tensor **per_sample)
{
    if (!pred || !target || vkl_graph_failed(g)) return NULL;
    if (vkl_tensor_nelem(pred) != vkl_tensor_nelem(target))
        return vkl_graph_set_error(g, "mse_loss: prediction and target differ in size");
    int64_t B = pred->shape[0], per = vkl_tensor_nelem(pred) / (B ? B : 1);
    if (weights && vkl_tensor_nelem(weights) != B)
        return vkl_graph_set_error(g, "mse_loss: %lld weights for a batch of %lld", (long long)vkl_tensor_nelem(weights),
                                   (long long)B);
    vkl_tensor *d = vkl_sub(g, pred, target);
    vkl_tensor *sq = vkl_mul(g, d, d);
    vkl_tensor *ps = vkl_scale(g, vkl_sum_rows(g, vkl_reshape(g, sq, 2, (int64_t[]){B, per})), 1.0f / (float)per);
    if (per_sample) *per_sample = ps;
    vkl_tensor *wps = weights ? vkl_mul(g, ps, vkl_reshape(g, weights, 2, (int64_t[]){B, 1})) : ps;
    return vkl_scale(g, vkl_sum_rows(g, vkl_reshape(g, wps, 2, (int64_t[]){1, B})), 1.0f / (float)B);
}
