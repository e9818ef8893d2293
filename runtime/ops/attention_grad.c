/* Gradient of scaled dot-product attention. vkl_attention_backward picks the
 * flash kernels (runtime/ops/attention_flash_grad.c, memory linear in Lq + Lk)
 * where they apply, except on CPU devices for large head dimensions and
 * modest score matrices (pick_path, from measurements); the unfused path
 * below serves the rest and stays selectable for comparison. Unfused, from differentiable ops:
 *   S = scale * Q K^T,  P = softmax(S),  O = P V
 *   dV = P^T dO,  dP = dO V^T,  dS = P * (dP - rowsum(dP * P)),
 *   dQ = scale * dS K,  dK = scale * dS^T Q.
 * P is recomputed here (the forward kernel never stores it), one head batch
 * at a time inside the graph; its memory is Lq x Lk per head while the
 * backward of this attention runs, and checkpoint segments keep it to one
 * block at a time. Causal: hidden scores are set very negative before the
 * softmax and the hidden probabilities to exactly 0 after it, so a row that
 * sees no key (Lk < Lq) has P = 0, as the forward kernel's zero output. */
#include "op_util.h"

#include <stdlib.h>
#include <string.h>

typedef struct { int64_t shift; float value; } mask_params;

static int emit_causal_mask(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const mask_params *mp = (const mask_params *)n->params.bytes;
    vkl_tensor *x = n->src[0], *y = n->dst;
    int64_t total = vkl_tensor_nelem(y), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    for (int64_t first = 0; first < total; first += win) {
        int64_t cnt = total - first < win ? total - first : win;
        struct { uint32_t n, first, lq, lk; int32_t shift; uint32_t x_off, y_off; float value; } pc = {
            (uint32_t)cnt, (uint32_t)first, (uint32_t)y->shape[y->ndim - 2], (uint32_t)y->shape[y->ndim - 1],
            (int32_t)mp->shift, 0, 0, mp->value};
        vkl_bind b[2];
        if (vkl_bind_span(g, x, first, cnt, &b[0], &pc.x_off, e) || vkl_bind_span(g, y, first, cnt, &b[1], &pc.y_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_CAUSAL_MASK, NULL, 0, b, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* x [..., Lq, Lk] with the entries a causal mask hides set to value. Used
 * inside the backward rule only, so it has no backward rule of its own. */
static vkl_tensor *causal_mask(vkl_graph *g, vkl_tensor *x, int64_t shift, float value)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if (x->dtype != VKL_F32 || !vkl_tensor_is_contiguous(x) || x->ndim < 2)
        return vkl_graph_set_error(g, "causal mask: scores must be contiguous f32 [..., Lq, Lk]");
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
    mask_params mp = {shift, value};
    return vkl_graph_add_node(g, "causal_mask", y, &x, 1, emit_causal_mask, &mp, sizeof mp) ? y : NULL;
}

static vkl_tensor *t2(vkl_graph *g, vkl_tensor *x)
{
    int perm[4] = {0, 1, 3, 2};
    return vkl_permute(g, x, perm);
}

static int unfused_grad(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, float scale, int causal,
                        vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    vkl_tensor *s = vkl_matmul(g, q, t2(g, k)); /* [B,H,Lq,Lk] */
    int64_t shift = k->shape[2] - q->shape[2];
    vkl_tensor *p = causal ? causal_mask(g, vkl_softmax(g, causal_mask(g, s, shift, -1e30f), scale), shift, 0.0f)
                           : vkl_softmax(g, s, scale);
    /* f16 inputs mean mixed-precision training: the probabilities (in [0, 1],
     * the largest tensor alive here with dP and dS) are kept as f16 like the
     * other stored activations; the gradients stay f32 */
    if (q->dtype == VKL_F16 && k->dtype == VKL_F16 && v->dtype == VKL_F16) p = vkl_convert(g, p, VKL_F16);
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

/* AUTO on CPU devices: the unfused path from this head dimension up, while
 * its score matrix stays within UNFUSED_MAX_SCORES. Lavapipe on 2 busy
 * cores, forward plus backward, ms (B=1, H=8 unless said; flash / unfused):
 *   D=160  Lq=Lk=256   3243 / 637     Lq=Lk=64    80 / 32    Lq=64 Lk=77   183 / 50
 *   D=80   Lq=Lk=1024  8672 / 7752    Lq=Lk=256  489 / 308   Lq=256 Lk=77  180 / 186
 *          Lq=1024 Lk=77 1123 / 597
 *   D=64   Lq=Lk=1024  5088 / 3364    Lq=Lk=256  352 / 214   Lq=1024 Lk=77 636 / 320
 *   D=40   Lq=Lk=1024  1940 / 1914    Lq=Lk=4096 (H=2) 7087 / 9092
 *          Lq=1024 Lk=77  139 / 194   Lq=4096 Lk=77 536 / 815
 * The flash kernels keep a row of q, dq or k, v, dk, dv per invocation in
 * registers, which lavapipe spills as D grows, and recompute the scores in
 * each pass; the unfused path is matrix products plus elementwise passes over
 * the scores, which cost the same at any D. At D=40 flash is as fast or
 * faster everywhere; from D=64 on, unfused wins up to 16x (D=160). */
#define UNFUSED_MIN_D 64
/* The unfused path holds about three [B,H,Lq,Lk] f32 tensors at once (arena
 * 98.6 MiB for 32 MiB of scores at Lq=Lk=1024, H=8): 64 MiB of scores is
 * about 200 MiB of arena, small beside a UNet's weights, and covers SD's
 * D >= 64 levels at 512 px for batches 1 and 2. Longer sequences (SD 2.1 at
 * 768 px: 9216^2 x 5 heads is 1.6 GiB) keep flash's linear memory. */
#define UNFUSED_MAX_SCORES ((uint64_t)64 << 20)

/* AUTO's choice. The context's tuning (VKLORA_ATTN_GRAD = flash | unfused |
 * auto) forces one (tests and comparisons; flash still gives way where the
 * kernels do not apply). */
static vkl_attn_grad_path pick_path(vkl_graph *g, const vkl_tensor *q, const vkl_tensor *k, const vkl_tensor *v)
{
    const vkl_tuning *t = vkl_ctx_tuning(vkl_graph_ctx(g));
    if (!vkl_attention_flash_grad_fits(g, q, k, v) || t->attn_grad == VKL_ATTN_GRAD_UNFUSED) return VKL_ATTN_GRAD_UNFUSED;
    if (t->attn_grad == VKL_ATTN_GRAD_FLASH || !t->cpu) return VKL_ATTN_GRAD_FLASH;
    uint64_t scores = (uint64_t)q->shape[0] * (uint64_t)q->shape[1] * (uint64_t)q->shape[2] * (uint64_t)k->shape[2] * 4u;
    return q->shape[3] >= UNFUSED_MIN_D && scores <= UNFUSED_MAX_SCORES ? VKL_ATTN_GRAD_UNFUSED : VKL_ATTN_GRAD_FLASH;
}

int vkl_attention_backward(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, vkl_tensor *o, vkl_tensor *dy,
                           float scale, int causal, const int need[3], vkl_tensor *grad[3], vkl_attn_grad_path path)
{
    for (int i = 0; i < 3; i++) grad[i] = NULL;
    if (!q || !k || !v || !dy || vkl_graph_failed(g)) return -1;
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || k->shape[2] != v->shape[2] || q->shape[3] != k->shape[3] ||
        v->shape[3] != q->shape[3] || dy->ndim != 4 || dy->shape[2] != q->shape[2] || dy->shape[3] != q->shape[3]) {
        char dq[96], dk[96], dv[96], dd[96];
        vkl_tensor_describe(q, dq, sizeof dq);
        vkl_tensor_describe(k, dk, sizeof dk);
        vkl_tensor_describe(v, dv, sizeof dv);
        vkl_tensor_describe(dy, dd, sizeof dd);
        vkl_graph_set_error(g, "attention gradient: q %s, k %s, v %s, dy %s must be 4-D [B,H,L,D] and match", dq, dk,
                            dv, dd);
        return -1;
    }
    if ((unsigned)path > VKL_ATTN_GRAD_UNFUSED) {
        vkl_graph_set_error(g, "attention gradient: unknown path %d", (int)path);
        return -1;
    }
    if (path == VKL_ATTN_GRAD_AUTO) path = pick_path(g, q, k, v);
    if (path == VKL_ATTN_GRAD_UNFUSED) return unfused_grad(g, q, k, v, scale, causal, dy, need, grad);
    return vkl_attention_flash_grad(g, q, k, v, o, scale, causal, dy, need, grad);
}
