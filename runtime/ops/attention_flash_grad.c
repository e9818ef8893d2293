/* Gradient of attention with memory linear in the sequence lengths (flash
 * attention backward). Shader: attention_grad.comp; CPU reference:
 * runtime/ref/ref_attention_grad.c. Three passes, each a node:
 *   stats [B,H,Lq,2]  per query row, L (log2-domain log-sum-exp of the scaled
 *                     scores) and D = dO . O (O: the forward's output)
 *   dq    [B,H,Lq,D]  per query row, looping over the keys
 *   dkv   [B,H,Lk,W]  per key row, looping over the queries: dK and/or dV
 *                     side by side in each row (W = D or 2 D), handed out
 *                     as strided views
 * Nothing holds Lq x Lk values. A pass whose loop range is too long for one
 * invocation (lavapipe's loop limit) or whose loop-side slice of one
 * (batch, head) exceeds a storage binding is split into nodes over loop
 * chunks, each resuming from the previous node's result; inside a node the
 * dispatches split by (batch, head) and by rows when the tensors do not fit
 * one binding. */
#include "op_util.h"
#include "shader_table.h"

#include <string.h>

enum { FA_STATS = 0, FA_DQ = 1, FA_DKV = 2 };

typedef struct {
    int kind, causal, outs, accum;
    float scale;
    int64_t c0, nc; /* loop range of this node: keys (stats, dq) or queries (dkv) */
    int64_t shift;  /* Lk - Lq: key j is visible to query i when j <= i + shift */
} fa_params;

typedef struct {
    uint32_t nrow, nloop;
    int32_t cshift;
    uint32_t causal, nh, nqr, nkr, accum, outs;
    uint32_t off[8];
    uint32_t sq[4], sk[4], sv[4];
    float scale;
} fa_pc;

static const vkl_kernel fa_kernel[3] = {VKL_KERNEL_ATTENTION_BWD_STATS, VKL_KERNEL_ATTENTION_BWD_DQ,
                                        VKL_KERNEL_ATTENTION_BWD_DKV};

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Launch shape. lavapipe: 8 lanes, TR rows per lane in registers (each
 * broadcast load feeds TR FMAs), loop-side blocks of BL rows (about 2 BL D
 * broadcast loads per block). lavapipe compiles a shader at its first
 * dispatch (then caches it on disk), in a time that grows fast with the
 * unrolled loads and the registers live across the loop: at D = 40 the three
 * kernels below compile in about 2.5 times the forward's time; 8 rows for
 * dQ and dK/dV (4 at D = 80) run 1.6 times faster but compile 3 times
 * longer. */
static void fa_pick(const vkl_ctx *c, int kind, int64_t d, uint32_t *wg, uint32_t *tr, uint32_t *bl)
{
    int cpu = vkl_ctx_tuning(c)->cpu;
    int64_t b = 160 / (d > 0 ? d : 1);
    *bl = b >= 16 ? 16 : b >= 8 ? 8 : b >= 4 ? 4 : b >= 2 ? 2 : 1;
    *wg = cpu ? 8 : 64;
    if (!cpu) *tr = 1;
    else if (kind == FA_STATS) *tr = d <= 40 ? 8 : d <= 80 ? 4 : d <= 128 ? 2 : 1;
    else *tr = d <= 40 ? 4 : d <= 80 ? 2 : 1;
}

/* Elements from the first to the last of n rows (row stride s2, width w,
 * column stride s3), over nb batches and nh heads when whole. */
static int64_t span_of(const int64_t s[4], int64_t nb, int64_t nh, int64_t n, int64_t w)
{
    return (nb - 1) * s[0] + (nh - 1) * s[1] + (n - 1) * s[2] + (w - 1) * s[3] + 1;
}

/* Rows of one (batch, head) that fit max elements. */
static int64_t rows_fit(int64_t max, const int64_t s[4], int64_t w)
{
    int64_t row = (w - 1) * s[3] + 1;
    if (row > max) return 0;
    return s[2] ? (max - row) / s[2] + 1 : INT64_MAX;
}

typedef struct {
    const vkl_tensor *t;
    int64_t s[4], w;
    int side; /* 0: rows are queries, 1: keys */
} fa_operand;

static void contiguous_strides(int64_t H, int64_t L, int64_t w, int64_t s[4])
{
    s[0] = H * L * w;
    s[1] = L * w;
    s[2] = w;
    s[3] = 1;
}

static int emit_fa(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const fa_params *fp = (const fa_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t qs[4], ks[4], vs[4];
    fa_operand op[8];
    memset(op, 0, sizeof op);
    vkl_op_shape4(n->src[0], qs, op[0].s);
    vkl_op_shape4(n->src[1], ks, op[1].s);
    vkl_op_shape4(n->src[2], vs, op[2].s);
    int64_t B = qs[0], H = qs[1], Lq = qs[2], Lk = ks[2], D = qs[3];
    int kind = fp->kind, keyrows = kind == FA_DKV;
    int64_t xw = kind == FA_STATS ? 2 : kind == FA_DQ ? D : D * ((fp->outs & 1) + (fp->outs >> 1 & 1));
    /* bindings: q, k, v, dO, O, stats, result, previous result */
    const vkl_tensor *t[8] = {n->src[0], n->src[1], n->src[2], n->src[3],
                              kind == FA_STATS ? n->src[4] : NULL, kind == FA_STATS ? NULL : n->src[4], n->dst,
                              fp->accum ? n->src[5] : NULL};
    int side[8] = {0, 1, 1, 0, 0, 0, keyrows, keyrows};
    int64_t w[8] = {D, D, D, D, D, 2, xw, xw};
    for (int i = 0; i < 8; i++) {
        op[i].t = t[i];
        op[i].side = side[i];
        op[i].w = w[i];
        if (i >= 3) contiguous_strides(H, side[i] ? Lk : Lq, w[i], op[i].s);
    }
    uint32_t wg, tr, bl;
    fa_pick(c, kind, D, &wg, &tr, &bl);
    int64_t nrows = keyrows ? Lk : Lq, blk = (int64_t)wg * tr;
    int64_t side_len[2] = {Lq, Lk};

    /* whole: one dispatch over every (batch, head) */
    int whole = B * H <= (int64_t)c->caps.max_wg_count[2] && (nrows + blk - 1) / blk <= (int64_t)c->caps.max_wg_count[0];
    for (int i = 0; i < 8 && whole; i++) {
        if (!op[i].t) continue;
        int rowside = op[i].side == keyrows;
        int64_t cnt = rowside ? side_len[op[i].side] : fp->nc;
        whole = span_of(op[i].s, B, H, cnt, op[i].w) <= vkl_window_elems(c, op[i].t->dtype, 1);
    }
    int64_t rows = nrows;
    if (!whole) {
        for (int i = 0; i < 8; i++) {
            if (!op[i].t) continue;
            int64_t max = vkl_window_elems(c, op[i].t->dtype, 1);
            if (op[i].side == keyrows) {
                rows = min64(rows, rows_fit(max, op[i].s, op[i].w));
            } else if (span_of(op[i].s, 1, 1, fp->nc, op[i].w) > max) {
                return vkl_fail(e, "internal: attention gradient loop chunk of %lld rows exceeds the storage binding limit",
                                (long long)fp->nc);
            }
        }
        if (rows < 1)
            return vkl_fail(e, "attention gradient: one row of width %lld does not fit the storage binding limit (%llu bytes)",
                            (long long)D, (unsigned long long)c->caps.max_storage_range);
        rows = min64(rows, (int64_t)c->caps.max_wg_count[0] * blk);
        if (rows < nrows && rows > blk) rows -= rows % blk;
    }
    int64_t nbh = whole ? 1 : B * H;
    for (int64_t bh = 0; bh < nbh; bh++) {
        int64_t b = bh / H, h = bh % H;
        for (int64_t r0 = 0; r0 < nrows; r0 += rows) {
            int64_t nr = min64(rows, nrows - r0);
            int64_t start[2], cnt[2];
            start[keyrows] = r0;
            cnt[keyrows] = nr;
            start[!keyrows] = fp->c0;
            cnt[!keyrows] = fp->nc;
            fa_pc pc;
            memset(&pc, 0, sizeof pc);
            pc.nrow = (uint32_t)nr;
            pc.nloop = (uint32_t)fp->nc;
            pc.cshift = (int32_t)(start[0] - start[1] + fp->shift);
            pc.causal = fp->causal ? 1u : 0u;
            pc.nh = whole ? (uint32_t)H : 1u;
            pc.nqr = whole ? (uint32_t)Lq : 0u;
            pc.nkr = whole ? (uint32_t)Lk : 0u;
            pc.accum = fp->accum ? 1u : 0u;
            pc.outs = (uint32_t)fp->outs;
            pc.scale = fp->scale;
            for (int i = 0; i < 4; i++) {
                int keep = whole || i >= 2;
                pc.sq[i] = keep ? (uint32_t)op[0].s[i] : 0u;
                pc.sk[i] = keep ? (uint32_t)op[1].s[i] : 0u;
                pc.sv[i] = keep ? (uint32_t)op[2].s[i] : 0u;
            }
            vkl_bind bind[8];
            int first_bound = -1;
            for (int i = 0; i < 8; i++) {
                if (!op[i].t) continue;
                const int64_t *s = op[i].s;
                int sd = op[i].side;
                int64_t first = (whole ? 0 : b * s[0] + h * s[1]) + start[sd] * s[2];
                int64_t span = span_of(s, whole ? B : 1, whole ? H : 1, cnt[sd], op[i].w);
                if (vkl_bind_span(g, op[i].t, first, span, &bind[i], &pc.off[i], e)) return -1;
                if (first_bound < 0) first_bound = i;
            }
            for (int i = 0; i < 8; i++)
                if (!op[i].t) bind[i] = bind[first_bound];
            uint32_t spec[7] = {wg, (uint32_t)D, tr, bl, (uint32_t)op[0].t->dtype, (uint32_t)op[1].t->dtype,
                                (uint32_t)op[2].t->dtype};
            uint32_t gx = (uint32_t)((nr + blk - 1) / blk), gz = whole ? (uint32_t)(B * H) : 1u;
            if (vkl_emit_dispatch(g, fa_kernel[kind], spec, 7, bind, 8, &pc, sizeof pc, gx, 1, gz, e)) return -1;
        }
    }
    return 0;
}

/* Loop rows per node: the loop-side slice of one (batch, head) fits a
 * binding, and on lavapipe the block loop stays below its iteration limit. */
static int64_t loop_chunk(vkl_ctx *c, int kind, const vkl_tensor *const *lt, const int64_t (*ls)[4], const int64_t *lw,
                          int nl, int64_t len, int64_t D)
{
    int64_t chunk = len;
    for (int i = 0; i < nl; i++) chunk = min64(chunk, rows_fit(vkl_window_elems(c, lt[i]->dtype, 1), ls[i], lw[i]));
    uint32_t wg, tr, bl;
    fa_pick(c, kind, D, &wg, &tr, &bl);
    if (vkl_ctx_tuning(c)->loop_budget) chunk = min64(chunk, vkl_ctx_tuning(c)->loop_budget * (int64_t)bl);
    return chunk;
}

/* A chain of nodes of one pass over loop chunks; returns the last result. */
static vkl_tensor *fa_pass(vkl_graph *g, int kind, vkl_tensor *const src5[5], const fa_params *base, int64_t len,
                           int64_t chunk, const int64_t shape[4])
{
    vkl_tensor *prev = NULL;
    for (int64_t c0 = 0; c0 < len; c0 += chunk) {
        fa_params p = *base;
        p.kind = kind;
        p.c0 = c0;
        p.nc = min64(chunk, len - c0);
        p.accum = prev != NULL;
        vkl_tensor *dst = vkl_graph_tensor(g, VKL_F32, 4, shape);
        vkl_tensor *src[6] = {src5[0], src5[1], src5[2], src5[3], src5[4], prev};
        if (!vkl_graph_add_node(g, vkl_shader_table[fa_kernel[kind]].name, dst, src, prev ? 6 : 5, emit_fa, &p, sizeof p)) return NULL;
        prev = dst;
    }
    return prev;
}

int vkl_attention_flash_grad_fits(vkl_graph *g, const vkl_tensor *q, const vkl_tensor *k, const vkl_tensor *v)
{
    int64_t D = q->shape[3], B = q->shape[0], H = q->shape[1], Lq = q->shape[2], Lk = k->shape[2];
    if (D < 1 || D > VKL_ATTN_MAX_FUSED_D || Lq < 1 || Lk < 1 || Lq > INT32_MAX / 2 || Lk > INT32_MAX / 2) return 0;
    if (B * H * Lq * D > UINT32_MAX || B * H * Lk * 2 * D > UINT32_MAX) return 0;
    if (vkl_tensor_span(q) > UINT32_MAX || vkl_tensor_span(k) > UINT32_MAX || vkl_tensor_span(v) > UINT32_MAX) return 0;
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t s[4], sh[4], row[4] = {0, 0, 2 * D, 1};
    const vkl_tensor *t[3] = {q, k, v};
    for (int i = 0; i < 3; i++) {
        vkl_op_shape4(t[i], sh, s);
        if (rows_fit(vkl_window_elems(c, t[i]->dtype, 1), s, D) < 1) return 0;
    }
    return rows_fit(vkl_window_elems(c, VKL_F32, 1), row, 2 * D) >= 1;
}

int vkl_attention_flash_grad(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, vkl_tensor *o, float scale,
                             int causal, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (vkl_graph_failed(g)) return -1;
    if (!vkl_attention_flash_grad_fits(g, q, k, v)) {
        char d[96];
        vkl_tensor_describe(q, d, sizeof d);
        vkl_graph_set_error(g, "attention gradient: q %s is beyond the flash kernels (head dimension up to %d, "
                               "rows within the storage binding limit)", d, VKL_ATTN_MAX_FUSED_D);
        return -1;
    }
    vkl_ctx *c = vkl_graph_ctx(g);
    int64_t B = q->shape[0], H = q->shape[1], Lq = q->shape[2], Lk = k->shape[2], D = q->shape[3];
    if (!o) o = vkl_attention(g, q, k, v, scale, causal);
    if (dy && dy->dtype != VKL_F32) dy = vkl_scale(g, dy, 1.0f);
    if (dy && !vkl_tensor_is_contiguous(dy)) dy = vkl_contiguous(g, dy);
    /* the kernels read f32 contiguous O; the scale writes exactly that, so only an f32 view needs a copy */
    if (o && o->dtype != VKL_F32) o = vkl_scale(g, o, 1.0f);
    else if (o && !vkl_tensor_is_contiguous(o)) o = vkl_contiguous(g, o);
    if (!o || !dy || vkl_graph_failed(g)) return -1;
    int64_t s[3][4], sh[4];
    vkl_op_shape4(q, sh, s[0]);
    vkl_op_shape4(k, sh, s[1]);
    vkl_op_shape4(v, sh, s[2]);
    int outs = (need[1] ? 1 : 0) | (need[2] ? 2 : 0);
    fa_params base = {0, causal != 0, outs, 0, scale, 0, 0, Lk - Lq};

    /* stats and dq loop over keys: k (and v) slices of one (batch, head) */
    const vkl_tensor *kt[2] = {k, v};
    int64_t kw[2] = {D, D};
    int64_t key_chunk = loop_chunk(c, FA_DQ, kt, (const int64_t(*)[4])s[1], kw, 2, Lk, D);
    int64_t stats_chunk = loop_chunk(c, FA_STATS, kt, (const int64_t(*)[4])s[1], kw, 1, Lk, D);
    int64_t shape_st[4] = {B, H, Lq, 2}, shape_q[4] = {B, H, Lq, D};
    vkl_tensor *src[5] = {q, k, v, dy, o};
    vkl_tensor *stats = fa_pass(g, FA_STATS, src, &base, Lk, stats_chunk, shape_st);
    src[4] = stats;
    if (need[0]) dsrc[0] = fa_pass(g, FA_DQ, src, &base, Lk, key_chunk, shape_q);
    if (outs) {
        /* dkv loops over queries: q, dO and stats slices */
        int64_t sg[4], ss[4];
        contiguous_strides(H, Lq, D, sg);
        contiguous_strides(H, Lq, 2, ss);
        const vkl_tensor *qt[3] = {q, dy, stats};
        int64_t qst[3][4], qw[3] = {D, D, 2};
        memcpy(qst[0], s[0], sizeof qst[0]);
        memcpy(qst[1], sg, sizeof qst[1]);
        memcpy(qst[2], ss, sizeof qst[2]);
        int64_t q_chunk = stats ? loop_chunk(c, FA_DKV, qt, (const int64_t(*)[4])qst, qw, 3, Lq, D) : 1;
        int64_t W = D * ((outs & 1) + (outs >> 1)), shape_kv[4] = {B, H, Lk, W};
        vkl_tensor *kv = fa_pass(g, FA_DKV, src, &base, Lq, q_chunk, shape_kv);
        if (kv && W == D) {
            dsrc[outs & 1 ? 1 : 2] = kv;
        } else if (kv) {
            int64_t vshape[4] = {B, H, Lk, D}, vstride[4] = {H * Lk * W, Lk * W, W, 1};
            dsrc[1] = vkl_view(g, kv, 4, vshape, vstride, 0);
            dsrc[2] = vkl_view(g, kv, 4, vshape, vstride, D);
        }
    }
    return vkl_graph_failed(g) ? -1 : 0;
}
