/* Gradient of scaled dot-product attention, from differentiable ops:
 *   S = scale * Q K^T,  P = softmax(S),  O = P V
 *   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),
 *   dQ = scale * dS K,  dK = scale * dS^T Q.
 * P is recomputed here (the forward kernel never stores it), one head batch
 * at a time inside the graph; its memory is Lq x Lk per head while the
 * backward of this attention runs, and checkpoint segments keep it to one
 * block at a time. */
#include "op_util.h"

static vkl_tensor *t2(vkl_graph *g, vkl_tensor *x)
{
    int perm[4] = {0, 1, 3, 2};
    return vkl_permute(g, x, perm);
}

int vkl_attention_grad(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, float scale, int causal,
                       vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (causal) {
        vkl_graph_set_error(g, "attention with a causal mask has no gradient rule yet");
        return -1;
    }
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) {
        vkl_graph_set_error(g, "attention gradient: q, k, v must be 4-D");
        return -1;
    }
    vkl_tensor *p = vkl_softmax(g, vkl_matmul(g, q, t2(g, k)), scale); /* [B,H,Lq,Lk] */
    if (need[2]) dsrc[2] = vkl_matmul(g, t2(g, p), dy);
    if (need[0] || need[1]) {
        vkl_tensor *dp = vkl_matmul(g, dy, t2(g, v));
        vkl_tensor *row = vkl_sum_rows(g, vkl_mul(g, dp, p));
        vkl_tensor *ds = vkl_mul(g, p, vkl_sub(g, dp, row));
        if (need[0]) dsrc[0] = vkl_scale(g, vkl_matmul(g, ds, k), scale);
        if (need[1]) dsrc[1] = vkl_scale(g, vkl_matmul(g, t2(g, ds), q), scale);
    }
    return vkl_graph_failed(g) ? -1 : 0;
}
