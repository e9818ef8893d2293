/* Scaled dot-product attention (flash style, online softmax). Shader:
 * attention.comp. CPU reference: runtime/ref/ref_attention.c.
 *
 * Storage-binding limits: when q, k, v and the output each fit one binding,
 * one dispatch covers every (batch, head); otherwise each (batch, head) is its
 * own dispatch, split further by query rows. When one (batch, head) slice of
 * k or v exceeds a binding, the keys are split into chunks, each a node of its
 * own: a chunk writes the running softmax state [acc, m, l] per query row
 * (a [B,H,Lq,D+2] tensor) that the next chunk resumes from, so nothing grows
 * with Lq x Lk and every pass binds only a window of the keys. */
#include "op_util.h"

#include <string.h>

#define ATTN_MAX_D VKL_ATTN_MAX_FUSED_D

typedef struct {
    float scale;
    int causal, variant;
    int state_in, state_out;
    int64_t k0, nk;   /* the keys of this node */
    int64_t lk;       /* all keys (causal offset) */
} attn_params;

typedef struct {
    uint32_t nq, nk;
    int32_t cshift;
    uint32_t nh;
    uint32_t q_off, k_off, v_off, o_off, s_off;
    uint32_t sq[4], sk[4], sv[4];
    uint32_t o_bh, o_row, s_bh, s_row;
    float scale;
} attn_pc;

/* Keys per unrolled block. lavapipe's compile time grows with the square of
 * the buffer loads in the shader (each is a bounds-checked branch), and the
 * body loads 2 * KB * D elements: keep that near 640 (about 3 s to compile;
 * twice as many loads take four times as long). */
static uint32_t block_keys(int64_t d)
{
    int64_t kb = 320 / d;
    return kb >= 16 ? 16 : kb >= 8 ? 8 : kb >= 4 ? 4 : kb >= 2 ? 2 : 1;
}

vkl_attn_variant vkl_attention_pick(const vkl_ctx *c, int64_t d, vkl_attn_variant want, uint32_t *wg, uint32_t *tq,
                                    uint32_t *kb, uint32_t *kt)
{
    const vkl_caps *cp = vkl_ctx_caps(c);
    int cpu = vkl_ctx_tuning(c)->cpu;
    vkl_attn_variant v = want != VKL_ATTN_AUTO ? want : cpu ? VKL_ATTN_STREAM : VKL_ATTN_TILED;
    if (d < 1) d = 1;
    if (v == VKL_ATTN_TILED) {
        /* K and V tiles of kt keys (a multiple of kb); fall back to streaming
         * when even one block does not fit the shared memory */
        uint32_t b = block_keys(d), fit = cp->max_shared_memory / (uint32_t)(2 * d * sizeof(float));
        uint32_t w = cp->max_wg_invocations < 64 ? cp->max_wg_invocations : 64;
        if (fit >= b && w >= 8) {
            *wg = w;
            *tq = 1;
            *kb = b;
            *kt = (fit < 32 ? fit : 32) / b * b;
            return v;
        }
        v = VKL_ATTN_STREAM;
    }
    /* lavapipe: one 8-lane SIMD chunk per workgroup; every K/V load (a
     * broadcast) feeds TQ rows per lane (8 rows: 5x the speed of 2 at D=40);
     * KB keys share one softmax rescale. q and acc (2 TQ D values) live
     * across the key loop and compile time grows fast with them (TQ 4 at
     * D=80 and 2 at D=160 run faster but take ~10 s each to compile). */
    *wg = cpu ? 8 : 64;
    *tq = cpu && d <= 40 ? 8 : cpu && d <= 64 ? 2 : 1;
    *kb = block_keys(d);
    *kt = *kb;
    return v;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static int emit_attention(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const attn_params *ap = (const attn_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *q = n->src[0], *k = n->src[1], *v = n->src[2], *sin = ap->state_in ? n->src[3] : NULL, *y = n->dst;
    int64_t qs[4], sq[4], ks[4], sk[4], vs[4], sv[4];
    vkl_op_shape4(q, qs, sq);
    vkl_op_shape4(k, ks, sk);
    vkl_op_shape4(v, vs, sv);
    int64_t B = qs[0], H = qs[1], Lq = qs[2], D = qs[3], nk = ap->nk, k0 = ap->k0;
    int64_t W = ap->state_out ? D + 2 : D, SW = D + 2;
    uint32_t wg, tq, kb, kt;
    vkl_attn_variant var = vkl_attention_pick(c, D, (vkl_attn_variant)ap->variant, &wg, &tq, &kb, &kt);
    uint32_t spec[11] = {wg, (uint32_t)D, tq, kb, (uint32_t)q->dtype, (uint32_t)k->dtype, (uint32_t)v->dtype,
                         ap->causal ? 1u : 0u, ap->state_in ? 1u : 0u, ap->state_out ? 1u : 0u, kt};
    vkl_kernel kernel = var == VKL_ATTN_TILED ? VKL_KERNEL_ATTENTION_TILED : VKL_KERNEL_ATTENTION;

    int64_t maxq = vkl_window_elems(c, q->dtype, 1), maxk = vkl_window_elems(c, k->dtype, 1);
    int64_t maxv = vkl_window_elems(c, v->dtype, 1), maxf = vkl_window_elems(c, VKL_F32, 1);
    /* spans of one (batch, head) slice over this node's keys */
    int64_t k_slice = (nk - 1) * sk[2] + (D - 1) * sk[3] + 1, v_slice = (nk - 1) * sv[2] + (D - 1) * sv[3] + 1;
    int64_t k_all = (B - 1) * sk[0] + (H - 1) * sk[1] + k_slice, v_all = (B - 1) * sv[0] + (H - 1) * sv[1] + v_slice;
    int whole = vkl_tensor_span(q) <= maxq && k_all <= maxk && v_all <= maxv && B * H * Lq * W <= maxf &&
                (!sin || B * H * Lq * SW <= maxf) && B * H <= (int64_t)c->caps.max_wg_count[2];
    if (!whole && (k_slice > maxk || v_slice > maxv))
        return vkl_fail(e, "internal: attention key chunk of %lld keys exceeds the storage binding limit", (long long)nk);

    int64_t rows = Lq;
    if (!whole) {
        int64_t q_row = (D - 1) * sq[3] + 1;
        int64_t by_q = q_row > maxq ? 0 : sq[2] ? (maxq - q_row) / sq[2] + 1 : Lq;
        rows = min64(min64(by_q, maxf / W), maxf / SW);
        if (rows > Lq) rows = Lq;
        if (rows < 1) {
            char d[96];
            vkl_tensor_describe(q, d, sizeof d);
            return vkl_fail(e, "attention: one query row of %s does not fit the storage binding limit (%llu bytes)", d,
                            (unsigned long long)c->caps.max_storage_range);
        }
        int64_t blk = (int64_t)wg * tq;
        if (rows > blk) rows -= rows % blk;
    }
    int64_t nbh = whole ? 1 : B * H;
    for (int64_t bh = 0; bh < nbh; bh++) {
        int64_t b = bh / H, h = bh % H;
        int64_t q_first = whole ? 0 : b * sq[0] + h * sq[1];
        int64_t k_first = (whole ? 0 : b * sk[0] + h * sk[1]) + k0 * sk[2];
        int64_t v_first = (whole ? 0 : b * sv[0] + h * sv[1]) + k0 * sv[2];
        for (int64_t r0 = 0; r0 < Lq; r0 += rows) {
            int64_t nr = min64(rows, Lq - r0);
            attn_pc pc;
            memset(&pc, 0, sizeof pc);
            pc.nq = (uint32_t)nr;
            pc.nk = (uint32_t)nk;
            pc.cshift = (int32_t)(r0 + ap->lk - Lq - k0);
            pc.nh = whole ? (uint32_t)H : 1u;
            for (int i = 0; i < 4; i++) {
                int keep = whole || i >= 2;
                pc.sq[i] = keep ? (uint32_t)sq[i] : 0;
                pc.sk[i] = keep ? (uint32_t)sk[i] : 0;
                pc.sv[i] = keep ? (uint32_t)sv[i] : 0;
            }
            pc.o_bh = whole ? (uint32_t)(Lq * W) : 0;
            pc.o_row = (uint32_t)W;
            pc.s_bh = whole ? (uint32_t)(Lq * SW) : 0;
            pc.s_row = (uint32_t)SW;
            pc.scale = ap->scale * 1.4426950408889634f;
            vkl_bind bind[5];
            int64_t q_span = whole ? vkl_tensor_span(q) : (nr - 1) * sq[2] + (D - 1) * sq[3] + 1;
            int64_t o_first = whole ? 0 : bh * Lq * W + r0 * W, s_first = whole ? 0 : bh * Lq * SW + r0 * SW;
            if (vkl_bind_span(g, q, q_first + r0 * sq[2], q_span, &bind[0], &pc.q_off, e) ||
                vkl_bind_span(g, k, k_first, whole ? k_all : k_slice, &bind[1], &pc.k_off, e) ||
                vkl_bind_span(g, v, v_first, whole ? v_all : v_slice, &bind[2], &pc.v_off, e) ||
                vkl_bind_span(g, y, o_first, whole ? B * H * Lq * W : nr * W, &bind[3], &pc.o_off, e))
                return -1;
            if (sin) {
                if (vkl_bind_span(g, sin, s_first, whole ? B * H * Lq * SW : nr * SW, &bind[4], &pc.s_off, e))
                    return -1;
            } else {
                bind[4] = bind[0];
            }
            uint32_t gx = (uint32_t)((nr + (int64_t)wg * tq - 1) / ((int64_t)wg * tq));
            uint32_t gz = whole ? (uint32_t)(B * H) : 1u;
            if (vkl_emit_dispatch(g, kernel, spec, 11, bind, 5, &pc, sizeof pc, gx, 1, gz, e)) return -1;
        }
    }
    return 0;
}

/* Keys per chunk so that one (batch, head) slice of k and of v fits a binding. */
static int64_t keys_per_chunk(vkl_ctx *c, const vkl_tensor *t, const int64_t st[4], int64_t D)
{
    int64_t maxw = vkl_window_elems(c, t->dtype, 1), row = (D - 1) * st[3] + 1;
    if (row > maxw) return 0;
    return st[2] ? (maxw - row) / st[2] + 1 : INT64_MAX;
}

/* Only the node producing the output carries the rule: it differentiates the
 * whole attention from q, k and v (runtime/ops/attention_grad.c), so the
 * key-chunk state passed between nodes needs no gradient of its own. The
 * output n->dst is live when the rule's ops run (a checkpoint segment
 * replays this node first and hands the rule the replayed node). */
static int backward_attention(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const attn_params *ap = (const attn_params *)n->params.bytes;
    int need3[3] = {need[0], need[1], need[2]};
    vkl_tensor *grad[3];
    if (vkl_attention_backward(g, n->src[0], n->src[1], n->src[2], n->dst, dy, ap->scale, ap->causal, need3, grad,
                               VKL_ATTN_GRAD_AUTO))
        return -1;
    for (int i = 0; i < 3; i++) dsrc[i] = grad[i];
    return 0;
}

vkl_tensor *vkl_attention_ex(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, float scale, int causal,
                             vkl_attn_variant variant)
{
    if (!q || !k || !v || vkl_graph_failed(g)) return NULL;
    char dq[96], dk[96], dv[96];
    vkl_tensor_describe(q, dq, sizeof dq);
    vkl_tensor_describe(k, dk, sizeof dk);
    vkl_tensor_describe(v, dv, sizeof dv);
    if (!vkl_op_float_type(q->dtype) || !vkl_op_float_type(k->dtype) || !vkl_op_float_type(v->dtype))
        return vkl_graph_set_error(g, "attention: q %s, k %s, v %s must be f32, f16 or bf16", dq, dk, dv);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return vkl_graph_set_error(g, "attention: q %s, k %s, v %s must be 4-D [B,H,L,D]", dq, dk, dv);
    if ((unsigned)variant > VKL_ATTN_TILED) return vkl_graph_set_error(g, "attention: unknown variant %d", (int)variant);
    int64_t qs[4], sq[4], ks[4], sk[4], vs[4], sv[4];
    vkl_op_shape4(q, qs, sq);
    vkl_op_shape4(k, ks, sk);
    vkl_op_shape4(v, vs, sv);
    if (ks[0] != qs[0] || ks[1] != qs[1] || ks[3] != qs[3] || vs[0] != qs[0] || vs[1] != qs[1] || vs[2] != ks[2] ||
        vs[3] != qs[3])
        return vkl_graph_set_error(g, "attention: shapes q %s, k %s, v %s do not match (q [B,H,Lq,D], k and v [B,H,Lk,D])",
                                   dq, dk, dv);
    int64_t B = qs[0], H = qs[1], Lq = qs[2], Lk = ks[2], D = qs[3];
    if (D > ATTN_MAX_D && causal)
        return vkl_graph_set_error(g, "attention: head dimension %lld of q %s exceeds the %d of causal attention",
                                   (long long)D, dq, ATTN_MAX_D);
    if (D > ATTN_MAX_D) { /* differentiable ops: their backward rules serve */
        int tr[4] = {0, 1, 3, 2};
        vkl_tensor *p = vkl_softmax(g, vkl_matmul(g, q, vkl_permute(g, k, tr)), scale);
        return vkl_matmul(g, p, v);
    }
    if (B * H * Lq * (D + 2) > UINT32_MAX || Lk > INT32_MAX || Lq > INT32_MAX)
        return vkl_graph_set_error(g, "attention: q %s, k %s is too large", dq, dk);
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t ck = keys_per_chunk(c, k, sk, D), cv = keys_per_chunk(c, v, sv, D);
    int64_t chunk = min64(ck, cv);
    if (chunk < 1)
        return vkl_graph_set_error(g, "attention: one key row of k %s or v %s exceeds the storage binding limit (%llu bytes)",
                                   dk, dv, (unsigned long long)vkl_ctx_caps(c)->max_storage_range);
    /* lavapipe ends loops after 65535 iterations per invocation; the shader's
     * only loops run about Lk / KB (+ Lk / KT) times, so keep a pass below that */
    uint32_t wg, tq, kb, kt;
    vkl_attention_pick(c, D, variant, &wg, &tq, &kb, &kt);
    int64_t budget = vkl_ctx_tuning(c)->loop_budget;
    if (budget && chunk > budget * (int64_t)kb) chunk = budget * (int64_t)kb;
    if (chunk > Lk) chunk = Lk;
    int64_t oshape[4] = {B, H, Lq, D}, sshape[4] = {B, H, Lq, D + 2};
    vkl_tensor *state = NULL, *y = NULL;
    for (int64_t k0 = 0; k0 < Lk; k0 += chunk) {
        int last = k0 + chunk >= Lk;
        attn_params p = {scale, causal != 0, (int)variant, state != NULL, !last, k0, min64(chunk, Lk - k0), Lk};
        vkl_tensor *dst = vkl_graph_tensor(g, VKL_F32, 4, last ? oshape : sshape);
        vkl_tensor *src[4] = {q, k, v, state};
        vkl_node *n = vkl_graph_add_node(g, "attention", dst, src, state ? 4 : 3, emit_attention, &p, sizeof p);
        if (!n) return NULL;
        if (last) {
            n->backward = backward_attention;
            y = dst;
        }
        state = dst;
    }
    return y;
}

vkl_tensor *vkl_attention(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, float scale, int causal)
{
    return vkl_attention_ex(g, q, k, v, scale, causal, VKL_ATTN_AUTO);
}
