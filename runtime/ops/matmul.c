/* Batched matrix product with optional bias. Shader: matmul.comp.
 * CPU reference: runtime/ref/ref_matmul.c. When A, B and C each fit in one
 * storage binding the whole product is one dispatch; otherwise it is split
 * per batch and then by rows of A/C, each piece bound as its own window. */
#include "op_util.h"

#include <string.h>

void vkl_matmul_tile(const vkl_ctx *c, uint32_t *wg, uint32_t *tm, uint32_t *tn)
{
    /* lavapipe runs 8 invocations per SIMD chunk; register tiles keep loads few.
     * GPUs get wider workgroups. */
    int cpu = vkl_ctx_caps(c)->type == VKL_DEV_CPU;
    *wg = cpu ? 8 : 64;
    *tm = cpu ? 4 : 4;
    *tn = cpu ? 16 : 4;
}

typedef struct { int has_bias; } matmul_params;

typedef struct {
    uint32_t M, N, K, nb1, a_off, b_off, c_off, bias_off, sam, sak, sbk, sbn, sa0, sa1, sb0, sb1;
} matmul_pc;

static int emit_matmul(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const matmul_params *mp = (const matmul_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *a = n->src[0], *b = n->src[1], *bias = mp->has_bias ? n->src[2] : NULL, *y = n->dst;
    int64_t as[4], ast[4], bs[4], bst[4], ys[4], yst[4];
    vkl_op_shape4(a, as, ast);
    vkl_op_shape4(b, bs, bst);
    vkl_op_shape4(y, ys, yst);
    int64_t M = ys[2], N = ys[3], K = as[3], nb0 = ys[0], nb1 = ys[1];
    /* broadcast batch dims have stride 0 from vkl_op_shape4 */
    uint32_t wg, tm, tn;
    vkl_matmul_tile(c, &wg, &tm, &tn);
    uint32_t spec[7] = {wg, tm, tn, (uint32_t)a->dtype, (uint32_t)b->dtype, bias ? 1u : 0u,
                        bias ? (uint32_t)bias->dtype : 0u};
    int64_t max_a = vkl_window_elems(c, a->dtype, 1), max_y = vkl_window_elems(c, VKL_F32, 1);
    int whole = vkl_tensor_span(a) <= max_a && vkl_tensor_span(b) <= vkl_window_elems(c, b->dtype, 1) &&
                vkl_tensor_nelem(y) <= max_y;
    int64_t batches = whole ? 1 : nb0 * nb1;
    for (int64_t z = 0; z < batches; z++) {
        int64_t z0 = z / nb1, z1 = z % nb1;
        int64_t a_first = whole ? 0 : z0 * ast[0] + z1 * ast[1];
        int64_t b_first = whole ? 0 : z0 * bst[0] + z1 * bst[1];
        int64_t y_first = whole ? 0 : z * M * N;
        /* rows of A/C per piece */
        int64_t rows = M;
        if (!whole) {
            int64_t a_row_span = (K - 1) * ast[3] + 1;
            int64_t by_a = ast[2] ? (max_a - a_row_span) / ast[2] + 1 : M;
            int64_t by_y = max_y / (N ? N : 1);
            rows = by_a < by_y ? by_a : by_y;
            if (rows > M) rows = M;
            if (rows < 1) {
                char d[96];
                vkl_tensor_describe(a, d, sizeof d);
                return vkl_fail(e, "matmul: operand %s cannot be split to fit the storage binding limit (%llu bytes)",
                                d, (unsigned long long)c->caps.max_storage_range);
            }
            rows -= rows % tm ? rows % tm : 0;
            if (rows < 1) rows = M < (int64_t)tm ? M : tm;
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
            vkl_bind bind[4];
            int64_t a_span = whole ? vkl_tensor_span(a) : (mr - 1) * ast[2] + (K - 1) * ast[3] + 1;
            int64_t b_span = whole ? vkl_tensor_span(b) : (K - 1) * bst[2] + (N - 1) * bst[3] + 1;
            if (vkl_bind_span(g, a, a_first + m0 * ast[2], a_span, &bind[0], &pc.a_off, e) ||
                vkl_bind_span(g, b, b_first, b_span, &bind[1], &pc.b_off, e) ||
                vkl_bind_span(g, y, y_first + m0 * N, whole ? vkl_tensor_nelem(y) : mr * N, &bind[2], &pc.c_off, e))
                return -1;
            if (bias) {
                if (vkl_bind_span(g, bias, 0, vkl_tensor_span(bias), &bind[3], &pc.bias_off, e)) return -1;
            } else {
                bind[3] = bind[0];
            }
            uint32_t gx = (uint32_t)(((N + tn - 1) / tn + wg - 1) / wg);
            uint32_t gy = (uint32_t)((mr + tm - 1) / tm);
            uint32_t gz = whole ? (uint32_t)(nb0 * nb1) : 1;
            if (vkl_emit_dispatch(g, "matmul", spec, 7, bind, 4, &pc, sizeof pc, gx, gy, gz, e)) return -1;
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

/* dA = dC B^T, dB = A^T dC, dbias = column sums of dC; batch dims an operand
 * was broadcast along are summed. A shared 2-D B (a linear layer) gets its
 * gradient from one product over all rows instead of one per batch. */
static int backward_matmul(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const matmul_params *mp = (const matmul_params *)n->params.bytes;
    vkl_tensor *a = n->src[0], *b = n->src[1];
    if (need[0]) dsrc[0] = vkl_sum_to(g, vkl_matmul(g, dy, transpose_last2(g, b)), a->ndim, a->shape);
    if (need[1]) {
        if (b->ndim == 2 && a->ndim > 2 && vkl_tensor_is_contiguous(a) && vkl_tensor_is_contiguous(dy)) {
            int64_t K = a->shape[a->ndim - 1], N = dy->shape[dy->ndim - 1];
            int64_t rows = vkl_tensor_nelem(a) / K;
            vkl_tensor *a2 = vkl_reshape(g, a, 2, (int64_t[]){rows, K});
            vkl_tensor *d2 = vkl_reshape(g, dy, 2, (int64_t[]){rows, N});
            dsrc[1] = vkl_matmul(g, transpose_last2(g, a2), d2);
        } else {
            dsrc[1] = vkl_sum_to(g, vkl_matmul(g, transpose_last2(g, a), dy), b->ndim, b->shape);
        }
    }
    if (mp->has_bias && need[2]) {
        vkl_tensor *bias = n->src[2];
        dsrc[2] = vkl_sum_to(g, dy, bias->ndim, bias->shape);
    }
    return vkl_graph_failed(g) ? -1 : 0;
}

vkl_tensor *vkl_matmul_bias(vkl_graph *g, vkl_tensor *a, vkl_tensor *b, vkl_tensor *bias)
{
    if (!a || !b || vkl_graph_failed(g)) return NULL;
    if (!vkl_op_float_type(a->dtype) || !vkl_op_float_type(b->dtype) || (bias && !vkl_op_float_type(bias->dtype)))
        return vkl_graph_set_error(g, "matmul: operands must be f32, f16 or bf16");
    char da[96], db[96];
    vkl_tensor_describe(a, da, sizeof da);
    vkl_tensor_describe(b, db, sizeof db);
    if (a->ndim < 2 || b->ndim < 2) return vkl_graph_set_error(g, "matmul: %s and %s need at least 2 dims", da, db);
    int64_t as[4], ast[4], bs[4], bst[4];
    vkl_op_shape4(a, as, ast);
    vkl_op_shape4(b, bs, bst);
    if (as[3] != bs[2]) return vkl_graph_set_error(g, "matmul: inner dimensions of %s and %s differ", da, db);
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t shape[4];
    for (int i = 0; i < 2; i++) {
        if (as[i] != bs[i] && as[i] != 1 && bs[i] != 1)
            return vkl_graph_set_error(g, "matmul: batch dimensions of %s and %s do not broadcast", da, db);
    }
    int64_t full[4] = {as[0] > bs[0] ? as[0] : bs[0], as[1] > bs[1] ? as[1] : bs[1], as[2], bs[3]};
    for (int i = 0; i < nd; i++) shape[i] = full[4 - nd + i];
    if (bias && (vkl_tensor_nelem(bias) != bs[3]))
        return vkl_graph_set_error(g, "matmul: bias has %lld elements, expected %lld", (long long)vkl_tensor_nelem(bias),
                                   (long long)bs[3]);
    if (full[2] * full[3] > UINT32_MAX || as[3] > UINT32_MAX)
        return vkl_graph_set_error(g, "matmul: %s x %s is too large", da, db);
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, nd, shape);
    matmul_params p = {bias != NULL};
    vkl_tensor *src[3] = {a, b, bias};
    vkl_node *n = vkl_graph_add_node(g, "matmul", y, src, bias ? 3 : 2, emit_matmul, &p, sizeof p);
    if (!n) return NULL;
    n->backward = backward_matmul;
    return y;
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
