/* Batched matrix product with optional bias, column scale and a second
 * product (LoRA). Shaders: matmul.comp (register tiles, CPU devices) and
 * matmul_tiled.comp (shared-memory tiles, GPUs), chosen by the context's
 * tuning (runtime/tuning.h: VKLORA_MATMUL_VARIANT =
 * reg | scalar | tiled forces one; tests run all of them on lavapipe; scalar
 * is the register-tile shader with vector loads off). CPU reference:
 * runtime/ref/ref_matmul.c.
 *
 * When A, B and C each fit in one storage binding the whole product is one
 * dispatch; otherwise it is split per batch and then by rows of A/C, each
 * piece bound as its own window. When B is shared by every batch and A's
 * batches follow each other like rows (a linear layer on [B, T, in]), the
 * batches are folded into M so that tiles never straddle a batch edge.
 *
 * B may be a block-quantised weight (runtime/quant.h), a permutation of a
 * whole 2-D tensor: it is bound whole (codes and scales) and dequantised in
 * the shader, so a linear layer's forward and its input gradient (the
 * transposed product, from the same backward rule) read the packed weight.
 * An NF4_DQ weight's scales are first made plain f32 by a pre-pass node
 * (nf4dq_scales.c) that the product reads at binding 7. A GGUF block-type
 * weight (Q8_0, Q4_K, ...) is read in its file's blocks, the block type a
 * specialisation constant (shaders/gguf_blocks.glsl). */
#include "matmul_internal.h"

#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vkl_matmul_tile(const vkl_ctx *c, uint32_t *wg, uint32_t *tm, uint32_t *tn)
{
    const vkl_tuning *t = vkl_ctx_tuning(c);
    if (t->matmul == VKL_MM_TILED) {
        *wg = 256;
        *tm = *tn = 4;
        return;
    }
    *wg = t->mm_wg;
    *tm = t->mm_tm;
    *tn = t->mm_tn;
}

typedef struct {
    int i_bias, i_scale, i_a2, i_b2;   /* index in the node's sources, -1 when absent */
    int i_bscale;                      /* NF4_DQ B: its f32 block scales (nf4dq_scales.c) */
    float alpha;
} matmul_params;

typedef struct {
    uint32_t M, N, K, nb1, a_off, b_off, c_off, bias_off, sam, sak, sbk, sbn, sa0, sa1, sb0, sb1;
    uint32_t scale_off, K2, a2_off, b2_off, sa2m, sb2k, sb2n, sa2z;
    float alpha;
    /* quantised B: vkl_quant_offsets' scale_off and qcode_off; NF4_DQ: bq_off
     * is the offset of its plain scales in binding 7 */
    uint32_t bq_off, bq2_off;
} matmul_pc;

enum { SPEC_WG, SPEC_TM, SPEC_TN, SPEC_ADT, SPEC_BDT, SPEC_BIAS, SPEC_BIASDT, SPEC_AVEC, SPEC_BVEC, SPEC_SCALE,
       SPEC_SEG2, SPEC_A2DT, SPEC_B2DT, SPEC_LANES_M, SPEC_BQT, SPEC_COUNT };

/* The product after batch folding: shapes and element strides as the shader sees them. */
typedef struct {
    int64_t nb0, nb1, M, N, K;
    int64_t ast[4], bst[4];
} mm_problem;

static void fold_batches(mm_problem *q)
{
    int64_t nb = q->nb0 * q->nb1;
    if (nb <= 1 || q->bst[0] || q->bst[1]) return;
    /* stride between rows of A, also when M == 1 (shape4 zeroes size-1 strides) */
    int64_t row = q->M > 1 ? q->ast[2] : q->nb1 > 1 ? q->ast[1] : q->ast[0];
    if (q->nb1 > 1 && q->ast[1] != q->M * row) return;
    if (q->nb0 > 1 && q->ast[0] != q->nb1 * q->M * row) return;
    q->M *= nb;
    q->ast[2] = row;
    q->nb0 = q->nb1 = 1;
    q->ast[0] = q->ast[1] = 0;
}

static int emit_matmul(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const matmul_params *mp = (const matmul_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *a = n->src[0], *b = n->src[1], *y = n->dst;
    vkl_tensor *bias = mp->i_bias >= 0 ? n->src[mp->i_bias] : NULL;
    vkl_tensor *scale = mp->i_scale >= 0 ? n->src[mp->i_scale] : NULL;
    vkl_tensor *a2 = mp->i_a2 >= 0 ? n->src[mp->i_a2] : NULL, *b2 = a2 ? n->src[mp->i_b2] : NULL;
    vkl_tensor *bscale = mp->i_bscale >= 0 ? n->src[mp->i_bscale] : NULL;
    int64_t as[4], bs[4], ys[4], yst[4];
    mm_problem q;
    vkl_op_shape4(a, as, q.ast);
    vkl_op_shape4(b, bs, q.bst);
    vkl_op_shape4(y, ys, yst);
    q.M = ys[2];
    q.N = ys[3];
    q.K = as[3];
    q.nb0 = ys[0];
    q.nb1 = ys[1];
    fold_batches(&q);
    int64_t M = q.M, N = q.N, K = q.K, nb0 = q.nb0, nb1 = q.nb1;
    const int64_t *ast = q.ast, *bst = q.bst;
    int64_t K2 = 0, b2st[4] = {0};
    if (a2) {
        int64_t b2s[4];
        vkl_op_shape4(b2, b2s, b2st);
        K2 = b2s[2];
    }

    vkl_mm_variant var = vkl_ctx_tuning(c)->matmul;
    uint32_t wg, tm, tn;
    vkl_matmul_tile(c, &wg, &tm, &tn);
    uint32_t spec[SPEC_COUNT] = {0};
    spec[SPEC_WG] = wg;
    spec[SPEC_TM] = tm;
    spec[SPEC_TN] = tn;
    spec[SPEC_ADT] = (uint32_t)a->dtype;
    spec[SPEC_BDT] = (uint32_t)b->dtype;
    spec[SPEC_BIAS] = bias != NULL;
    spec[SPEC_BIASDT] = bias ? (uint32_t)bias->dtype : 0u;
    spec[SPEC_SCALE] = scale != NULL;
    spec[SPEC_SEG2] = a2 != NULL;
    spec[SPEC_A2DT] = a2 ? (uint32_t)a2->dtype : 0u;
    spec[SPEC_B2DT] = b2 ? (uint32_t)b2->dtype : 0u;
    int bgguf = vkl_dtype_is_gguf(b->dtype);
    spec[SPEC_BQT] = bgguf ? (uint32_t)vkl_dtype_gguf_type(b->dtype) : 0u;
    vkl_kernel kernel = var == VKL_MM_TILED ? VKL_KERNEL_MATMUL_TILED : VKL_KERNEL_MATMUL;
    uint32_t rows_per_group = var == VKL_MM_TILED ? 64 : tm;

    int bq = vkl_dtype_is_quant(b->dtype);
    int64_t max_a = vkl_window_elems(c, a->dtype, 1), max_y = vkl_window_elems(c, VKL_F32, 1);
    /* rows one dispatch can cover (conservative when LANES_M packs wg row tiles per workgroup) */
    int64_t max_rows_grid = (int64_t)rows_per_group * c->caps.max_wg_count[1];
    int fits = vkl_tensor_span(a) <= max_a && (bq || vkl_tensor_span(b) <= vkl_window_elems(c, b->dtype, 1)) &&
               vkl_tensor_nelem(y) <= max_y && (!a2 || vkl_tensor_span(a2) <= vkl_window_elems(c, a2->dtype, 1));
    int whole = fits && M <= max_rows_grid;
    int64_t batches = whole ? 1 : nb0 * nb1;
    for (int64_t z = 0; z < batches; z++) {
        int64_t z0 = z / nb1, z1 = z % nb1;
        int64_t a_first = whole ? 0 : z0 * ast[0] + z1 * ast[1];
        int64_t b_first = whole ? 0 : z0 * bst[0] + z1 * bst[1];
        int64_t y_first = whole ? 0 : z * M * N;
        int64_t a2_first = whole ? 0 : z * M * K2;
        /* rows of A/C per piece */
        int64_t rows = M;
        if (!whole) {
            int64_t a_row_span = (K - 1) * ast[3] + 1;
            int64_t by_a = ast[2] ? (max_a - a_row_span) / ast[2] + 1 : M;
            int64_t by_y = max_y / (N ? N : 1);
            rows = by_a < by_y ? by_a : by_y;
            if (a2) {
                int64_t by_a2 = vkl_window_elems(c, a2->dtype, 1) / (K2 ? K2 : 1);
                if (by_a2 < rows) rows = by_a2;
            }
            if (rows > max_rows_grid) rows = max_rows_grid;
            if (rows > M) rows = M;
            if (rows < 1) {
                char d[96];
                vkl_tensor_describe(a, d, sizeof d);
                return vkl_fail(e, "matmul: operand %s cannot be split to fit the storage binding limit (%llu bytes)",
                                d, (unsigned long long)c->caps.max_storage_range);
            }
            if (rows < M && rows > (int64_t)rows_per_group) rows -= rows % rows_per_group;
        }
        for (int64_t m0 = 0; m0 < M; m0 += rows) {
            int64_t mr = M - m0 < rows ? M - m0 : rows;
            matmul_pc pc;
            memset(&pc, 0, sizeof pc);
            pc.M = (uint32_t)mr;
            pc.N = (uint32_t)N;
            pc.K = (uint32_t)K;
            pc.nb1 = whole ? (uint32_t)nb1 : 1;
            pc.sam = (uint32_t)ast[2];
            pc.sak = (uint32_t)ast[3];
            pc.sbk = (uint32_t)bst[2];
            pc.sbn = (uint32_t)bst[3];
            pc.sa0 = whole ? (uint32_t)ast[0] : 0;
            pc.sa1 = whole ? (uint32_t)ast[1] : 0;
            pc.sb0 = whole ? (uint32_t)bst[0] : 0;
            pc.sb1 = whole ? (uint32_t)bst[1] : 0;
            pc.alpha = mp->alpha;
            vkl_bind bind[8];
            int64_t a_span = whole ? vkl_tensor_span(a) : (mr - 1) * ast[2] + (K - 1) * ast[3] + 1;
            int64_t b_span = whole ? vkl_tensor_span(b) : (K - 1) * bst[2] + (N - 1) * bst[3] + 1;
            vkl_quant_offsets qo = {0, 0, 0};
            if (vkl_bind_span(g, a, a_first + m0 * ast[2], a_span, &bind[0], &pc.a_off, e) ||
                (bq ? vkl_bind_quant(g, b, &bind[1], &qo, e)
                    : vkl_bind_span(g, b, b_first, b_span, &bind[1], &pc.b_off, e)) ||
                vkl_bind_span(g, y, y_first + m0 * N, whole ? vkl_tensor_nelem(y) : mr * N, &bind[2], &pc.c_off, e))
                return -1;
            if (bgguf) {
                pc.b_off = 0; /* element i is the weight's i-th: its block from i alone */
                pc.bq_off = qo.code_off / 2;
            } else if (bq) {
                pc.b_off = qo.code_off;
                pc.bq_off = qo.scale_off;
                pc.bq2_off = qo.qcode_off;
            }
            bind[3] = bind[4] = bind[5] = bind[6] = bind[7] = bind[0];
            if (bscale && vkl_bind_span(g, bscale, 0, vkl_tensor_nelem(bscale), &bind[7], &pc.bq_off, e)) return -1;
            if (bias && vkl_bind_span(g, bias, 0, vkl_tensor_span(bias), &bind[3], &pc.bias_off, e)) return -1;
            if (scale && vkl_bind_span(g, scale, 0, N, &bind[4], &pc.scale_off, e)) return -1;
            if (a2) {
                pc.K2 = (uint32_t)K2;
                pc.sa2m = (uint32_t)K2;
                pc.sa2z = whole ? (uint32_t)(M * K2) : 0;
                pc.sb2k = (uint32_t)b2st[2];
                pc.sb2n = (uint32_t)b2st[3];
                if (vkl_bind_span(g, a2, a2_first + m0 * K2, whole ? vkl_tensor_nelem(a2) : mr * K2, &bind[5],
                                  &pc.a2_off, e) ||
                    vkl_bind_span(g, b2, 0, vkl_tensor_span(b2), &bind[6], &pc.b2_off, e))
                    return -1;
            }
            int64_t nbatch = whole ? nb0 * nb1 : 1;
            if (var == VKL_MM_TILED) {
                /* only the order of loads into shared memory depends on these */
                spec[SPEC_AVEC] = ast[3] == 1;
                spec[SPEC_BVEC] = bst[2] == 1 && bst[3] != 1;
            } else if (var == VKL_MM_REG) {
                /* vec4 loads need every start of four elements on a multiple of 4 */
                int a_rows4 = ast[2] % 4 == 0 || mr == 1, a_batch4 = pc.sa0 % 4 == 0 && pc.sa1 % 4 == 0;
                int b_batch4 = pc.sb0 % 4 == 0 && pc.sb1 % 4 == 0;
                spec[SPEC_AVEC] = K >= 4 && ast[3] == 1 && a_rows4 && a_batch4 && pc.a_off % 4 == 0;
                if (K >= 4 && bst[2] == 1 && (bst[3] % 4 == 0 || N == 1) && b_batch4 && pc.b_off % 4 == 0)
                    spec[SPEC_BVEC] = 1;
                else if (K >= 4 && bst[3] == 1 && N % 4 == 0 && bst[2] % 4 == 0 && b_batch4 && pc.b_off % 4 == 0)
                    spec[SPEC_BVEC] = 2;
                else
                    spec[SPEC_BVEC] = 0;
            } else {
                spec[SPEC_AVEC] = spec[SPEC_BVEC] = 0;
            }
            uint32_t gx, gy;
            if (var == VKL_MM_TILED) {
                gx = (uint32_t)((N + 63) / 64);
                gy = (uint32_t)((mr + 63) / 64);
            } else {
                /* lanes along N unless that leaves some of them without columns */
                int64_t tiles_n = (N + tn - 1) / tn, tiles_m = (mr + tm - 1) / tm;
                spec[SPEC_LANES_M] = tiles_n < (int64_t)wg && tiles_m > tiles_n;
                gx = (uint32_t)(spec[SPEC_LANES_M] ? tiles_n : (tiles_n + wg - 1) / wg);
                gy = (uint32_t)(spec[SPEC_LANES_M] ? (tiles_m + wg - 1) / wg : tiles_m);
            }
            if (vkl_emit_dispatch(g, kernel, spec, SPEC_COUNT, bind, 8, &pc, sizeof pc, gx, gy, (uint32_t)nbatch, e))
                return -1;
        }
    }
    return 0;
}

static vkl_tensor *transpose_last2(vkl_graph *g, vkl_tensor *t)
{
    int perm[VKL_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[t->ndim - 1] = t->ndim - 2;
    perm[t->ndim - 2] = t->ndim - 1;
    return vkl_permute(g, t, perm);
}

/* d(a . b) for a 2-D right operand shared by every batch row: one product over
 * all rows (a linear layer's weight gradient) instead of one per batch. */
static vkl_tensor *grad_rhs(vkl_graph *g, vkl_tensor *a, vkl_tensor *dy, vkl_tensor *b)
{
    if (b->ndim == 2 && a->ndim > 2 && vkl_tensor_is_contiguous(a) && vkl_tensor_is_contiguous(dy)) {
        int64_t K = a->shape[a->ndim - 1], N = dy->shape[dy->ndim - 1], rows = vkl_tensor_nelem(a) / K;
        vkl_tensor *a2 = vkl_reshape(g, a, 2, (int64_t[]){rows, K});
        vkl_tensor *d2 = vkl_reshape(g, dy, 2, (int64_t[]){rows, N});
        return vkl_matmul(g, transpose_last2(g, a2), d2);
    }
    return vkl_sum_to(g, vkl_matmul(g, transpose_last2(g, a), dy), b->ndim, b->shape);
}

/* y = alpha * (a . b) * s + bias + a2 . b2:
 *   da = alpha (dy*s) b^T, db = alpha a^T (dy*s), ds = alpha colsum(dy * (a . b)),
 *   dbias = colsum(dy), da2 = dy b2^T, db2 = a2^T dy;
 * batch dims an operand was broadcast along are summed. */
static int backward_matmul(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const matmul_params *mp = (const matmul_params *)n->params.bytes;
    vkl_tensor *a = n->src[0], *b = n->src[1];
    vkl_tensor *dys = dy;
    if (mp->i_scale >= 0) dys = vkl_mul(g, dy, n->src[mp->i_scale]);
    if (mp->alpha != 1.0f) dys = vkl_scale(g, dys, mp->alpha);
    if (need[0]) dsrc[0] = vkl_sum_to(g, vkl_matmul(g, dys, transpose_last2(g, b)), a->ndim, a->shape);
    if (need[1] && vkl_dtype_is_quant(b->dtype)) {
        vkl_graph_set_error(g, "matmul: a quantised (%s) weight is frozen and has no gradient", vkl_dtype_name(b->dtype));
        return -1;
    }
    if (need[1]) dsrc[1] = grad_rhs(g, a, dys, b);
    if (mp->i_bias >= 0 && need[mp->i_bias]) {
        vkl_tensor *bias = n->src[mp->i_bias];
        dsrc[mp->i_bias] = vkl_sum_to(g, dy, bias->ndim, bias->shape);
    }
    if (mp->i_scale >= 0 && need[mp->i_scale]) {
        vkl_tensor *s = n->src[mp->i_scale];
        vkl_tensor *d = vkl_mul(g, dy, vkl_matmul(g, a, b));
        if (mp->alpha != 1.0f) d = vkl_scale(g, d, mp->alpha);
        dsrc[mp->i_scale] = vkl_sum_to(g, d, s->ndim, s->shape);
    }
    if (mp->i_a2 >= 0) {
        vkl_tensor *a2 = n->src[mp->i_a2], *b2 = n->src[mp->i_b2];
        if (need[mp->i_a2]) dsrc[mp->i_a2] = vkl_sum_to(g, vkl_matmul(g, dy, transpose_last2(g, b2)), a2->ndim, a2->shape);
        if (need[mp->i_b2]) dsrc[mp->i_b2] = grad_rhs(g, a2, dy, b2);
    }
    return vkl_graph_failed(g) ? -1 : 0;
}

vkl_tensor *vkl_matmul_general(vkl_graph *g, const char *op, vkl_tensor *a, vkl_tensor *b, const vkl_matmul_extra *x)
{
    if (!a || !b || vkl_graph_failed(g)) return NULL;
    vkl_tensor *bias = x ? x->bias : NULL, *scale = x ? x->col_scale : NULL;
    vkl_tensor *a2 = x ? x->a2 : NULL, *b2 = x ? x->b2 : NULL;
    int bq = vkl_dtype_is_quant(b->dtype);
    if (!vkl_op_float_type(a->dtype) || !(bq || vkl_op_float_type(b->dtype)) ||
        (bias && !vkl_op_float_type(bias->dtype)) || (a2 && !vkl_op_float_type(a2->dtype)) ||
        (b2 && !vkl_op_float_type(b2->dtype)))
        return vkl_graph_set_error(g, "%s: operands must be f32, f16 or bf16 (the right one may be quantised)", op);
    char da[96], db[96];
    vkl_tensor_describe(a, da, sizeof da);
    vkl_tensor_describe(b, db, sizeof db);
    if (bq) {
        /* the shader reads element i's code and scale from i alone: the whole weight, from its start */
        const vkl_tensor *root = b->view_of ? b->view_of : b;
        if (b->ndim != 2 || vkl_tensor_span(b) != vkl_tensor_nelem(b) || b->offset != root->offset ||
            vkl_tensor_nelem(b) != vkl_tensor_nelem(root))
            return vkl_graph_set_error(g, "%s: a quantised operand (%s) must be a whole 2-D weight or its transpose", op,
                                       db);
        const vkl_caps *caps = vkl_ctx_caps(vkl_graph_ctx(g));
        if (vkl_dtype_bytes(b->dtype, (uint64_t)vkl_tensor_nelem(b)) + caps->storage_align > caps->max_storage_range)
            return vkl_graph_set_error(g, "%s: quantised weight %s exceeds the device's storage binding limit (%llu bytes)",
                                       op, db, (unsigned long long)caps->max_storage_range);
        vkl_quant_layout l;
        vkl_quant_layout_of(b->dtype, (uint64_t)vkl_tensor_nelem(b), &l);
        if (vkl_dtype_is_gguf(b->dtype) && (root->ndim != 2 || root->shape[1] % l.block))
            return vkl_graph_set_error(g, "%s: rows of the %s weight %s are not whole blocks of %d", op,
                                       vkl_dtype_name(b->dtype), db, l.block);
    }
    if (a->ndim < 2 || b->ndim < 2) return vkl_graph_set_error(g, "%s: %s and %s need at least 2 dims", op, da, db);
    int64_t as[4], ast[4], bs[4], bst[4];
    vkl_op_shape4(a, as, ast);
    vkl_op_shape4(b, bs, bst);
    if (as[3] != bs[2]) return vkl_graph_set_error(g, "%s: inner dimensions of %s and %s differ", op, da, db);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[4];
    for (int i = 0; i < 2; i++) {
        if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1)
            return vkl_graph_set_error(g, "%s: batch dimensions of %s and %s do not broadcast", op, da, db);
    }
    int64_t full[4] = {as[0] > bs[0] ? as[0] : bs[0], as[1] > bs[1] ? as[1] : bs[1], as[2], bs[3]};
    for (int i = 0; i < nd; i++) shape[i] = full[4 - nd + i];
    if (bias && (vkl_tensor_nelem(bias) != bs[3]))
        return vkl_graph_set_error(g, "%s: bias has %lld elements, expected %lld", op, (long long)vkl_tensor_nelem(bias),
                                   (long long)bs[3]);
    if (scale && (scale->dtype != VKL_F32 || vkl_tensor_nelem(scale) != bs[3] || !vkl_tensor_is_contiguous(scale)))
        return vkl_graph_set_error(g, "%s: column scale must be contiguous f32 with %lld elements", op, (long long)bs[3]);
    if (a2) {
        char d2[96], e2[96];
        vkl_tensor_describe(a2, d2, sizeof d2);
        vkl_tensor_describe(b2, e2, sizeof e2);
        int64_t s2[4], t2[4], u2[4], w2[4];
        vkl_op_shape4(a2, s2, t2);
        vkl_op_shape4(b2, u2, w2);
        int64_t nb = full[0] * full[1];
        if (!vkl_tensor_is_contiguous(a2) || b2->ndim != 2 || s2[3] != u2[2] || u2[3] != bs[3] || s2[2] != as[2] ||
            s2[0] * s2[1] != nb)
            return vkl_graph_set_error(g, "%s: second product %s x %s does not match the result [.., %lld, %lld]", op, d2,
                                       e2, (long long)as[2], (long long)bs[3]);
    }
    if (full[0] * full[1] * full[2] * full[3] > UINT32_MAX || as[3] > UINT32_MAX ||
        vkl_tensor_span(a) > UINT32_MAX || vkl_tensor_span(b) > UINT32_MAX)
        return vkl_graph_set_error(g, "%s: %s x %s is too large", op, da, db);
    vkl_tensor *bscale = b->dtype == VKL_NF4_DQ ? vkl_nf4dq_scales(g, b) : NULL;
    if (b->dtype == VKL_NF4_DQ && !bscale) return NULL;
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, nd, shape);
    matmul_params p = {-1, -1, -1, -1, -1, x ? x->alpha : 1.0f};
    vkl_tensor *src[7] = {a, b};
    int ns = 2;
    if (bias) p.i_bias = ns, src[ns++] = bias;
    if (scale) p.i_scale = ns, src[ns++] = scale;
    if (a2) {
        p.i_a2 = ns, src[ns++] = a2;
        p.i_b2 = ns, src[ns++] = b2;
    }
    if (bscale) p.i_bscale = ns, src[ns++] = bscale;
    vkl_node *n = vkl_graph_add_node(g, op, y, src, ns, emit_matmul, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_matmul;
    return y;
}

vkl_tensor *vkl_matmul_bias(vkl_graph *g, vkl_tensor *a, vkl_tensor *b, vkl_tensor *bias)
{
    vkl_matmul_extra x = {.bias = bias, .alpha = 1.0f};
    return vkl_matmul_general(g, "matmul", a, b, &x);
}

vkl_tensor *vkl_matmul(vkl_graph *g, vkl_tensor *a, vkl_tensor *b) { return vkl_matmul_bias(g, a, b, NULL); }

vkl_tensor *vkl_linear(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias)
{
    if (!x || !w || vkl_graph_failed(g)) return NULL;
    if (w->ndim != 2) return vkl_graph_set_error(g, "linear: weight must be [out, in]");
    int perm[2] = {1, 0};
    vkl_tensor *wt = vkl_permute(g, w, perm);
    return vkl_matmul_bias(g, x, wt, bias);
}
