/* Embeddings: sinusoidal timestep embedding (diffusers) and table lookup
 * (token embeddings); the rotary position embedding is rope.c. Shaders:
 * timestep_embed.comp, embedding.comp. CPU reference:
 * runtime/ref/ref_embed.c. Backward: embedding_grad.comp (table); the
 * timestep embedding has none. The lookup's
 * table may be a block-quantised weight (NF4, NF4_DQ: runtime/quant.h), bound
 * whole and dequantised per element in the shader; it is frozen (no gradient). */
#include "op_util.h"

#include "quant.h"

#include <math.h>
#include <string.h>

/* Table windows one embedding dispatch can bind (embedding.comp). */
#define EMBED_MAX_WINDOWS 6

int64_t vkl_op_rows_per_window(vkl_ctx *c, int64_t rows, int64_t len, vkl_dtype dt, int with_input)
{
    int64_t per = vkl_window_elems(c, VKL_F32, 1) / len;
    if (with_input) {
        int64_t px = vkl_window_elems(c, dt, 1) / len;
        if (px < per) per = px;
    }
    int64_t m = (int64_t)(c->caps.storage_align / 4);
    if (per < rows && m > 1 && per >= m) per -= per % m;
    return per < rows ? per : rows;
}

/* ---- timestep embedding */

typedef struct { int dim, flip; float shift, max_period; } temb_params;

static int emit_temb(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const temb_params *tp = (const temb_params *)n->params.bytes;
    vkl_tensor *t = n->src[0], *y = n->dst;
    int64_t half = tp->dim / 2;
    struct {
        uint32_t n, dim, half_dim, flip, t_off, y_off, t_stride;
        float neg_log_period, denom;
    } pc;
    memset(&pc, 0, sizeof pc);
    pc.n = (uint32_t)vkl_tensor_nelem(y);
    pc.dim = (uint32_t)tp->dim;
    pc.half_dim = (uint32_t)half;
    pc.flip = (uint32_t)tp->flip;
    pc.t_stride = (uint32_t)t->stride[0];
    pc.neg_log_period = (float)-log((double)tp->max_period);
    pc.denom = (float)((double)half - (double)tp->shift);
    vkl_bind bind[2];
    if (vkl_bind_span(g, t, 0, vkl_tensor_span(t), &bind[0], &pc.t_off, e) ||
        vkl_bind_span(g, y, 0, vkl_tensor_nelem(y), &bind[1], &pc.y_off, e))
        return -1;
    uint32_t spec[1] = {(uint32_t)t->dtype}, gx, gy;
    vkl_op_grid(((uint64_t)pc.n + 63) / 64, &gx, &gy);
    return vkl_emit_dispatch(g, VKL_KERNEL_TIMESTEP_EMBED, spec, 1, bind, 2, &pc, sizeof pc, gx, gy, 1, e);
}

/* No backward rule: the input is the timestep, never trained; a loss that
 * asks for a gradient through it gets autograd's "no gradient rule" error. */
vkl_tensor *vkl_timestep_embedding(vkl_graph *g, vkl_tensor *t, int dim, int flip_sin_to_cos, float shift,
                                   float max_period)
{
    if (!t || vkl_graph_failed(g)) return NULL;
    char s[96];
    vkl_tensor_describe(t, s, sizeof s);
    if (t->ndim != 1 || !vkl_op_float_type(t->dtype))
        return vkl_graph_set_error(g, "timestep_embedding: timesteps %s must be a 1-D f32, f16 or bf16 tensor", s);
    if (dim < 2) return vkl_graph_set_error(g, "timestep_embedding: dim %d must be at least 2", dim);
    if (!(max_period > 0) || !isfinite(max_period) || !isfinite(shift) || (double)(dim / 2) - shift == 0)
        return vkl_graph_set_error(g, "timestep_embedding: max_period %g must be > 0 and shift %g must differ "
                                      "from dim/2 = %d", (double)max_period, (double)shift, dim / 2);
    int64_t shape[2] = {t->shape[0], dim};
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, 2, shape);
    temb_params p = {dim, flip_sin_to_cos != 0, shift, max_period};
    return y && vkl_graph_add_node(g, "timestep_embedding", y, &t, 1, emit_temb, &p, sizeof p) ? y : NULL;
}

/* ---- embedding lookup */

static int emit_embedding(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *table = n->src[0], *ids = n->src[1], *y = n->dst;
    int64_t V = table->shape[0], D = table->shape[1], rows = vkl_tensor_nelem(ids);
    /* table windows of whole rows (a strided table is bound whole) */
    int64_t tper = V, nwin = 1;
    if (vkl_tensor_is_contiguous(table) && !vkl_dtype_is_quant(table->dtype)) {
        tper = vkl_window_elems(c, table->dtype, 1) / D;
        if (tper < 1) return vkl_fail(e, "an embedding row of %lld elements exceeds the storage binding limit", (long long)D);
        if (tper > V) tper = V;
        nwin = (V + tper - 1) / tper;
    }
    if (nwin > EMBED_MAX_WINDOWS) {
        char s[96];
        vkl_tensor_describe(table, s, sizeof s);
        return vkl_fail(e, "embedding table %s needs %lld storage bindings of maxStorageBufferRange %llu bytes; "
                           "at most %d are supported", s, (long long)nwin,
                        (unsigned long long)c->caps.max_storage_range, EMBED_MAX_WINDOWS);
    }
    vkl_bind bind[8];
    uint32_t toff[EMBED_MAX_WINDOWS] = {0};
    vkl_quant_offsets qo = {0, 0, 0};
    int quant = vkl_dtype_is_quant(table->dtype);
    if (quant) {
        /* one window: the whole weight (the builder checked it is one) */
        tper = V;
        nwin = 1;
        if (vkl_bind_quant(g, table, &bind[0], &qo, e)) return -1;
        toff[0] = qo.code_off;
    }
    for (int64_t w = quant ? 1 : 0; w < EMBED_MAX_WINDOWS; w++) {
        if (w >= nwin) {
            bind[w] = bind[0];   /* never read: ids never select it */
            continue;
        }
        int64_t r0 = w * tper, nr = V - r0 < tper ? V - r0 : tper;
        int rc = nwin == 1 ? vkl_bind_span(g, table, 0, vkl_tensor_span(table), &bind[w], &toff[w], e)
                           : vkl_bind_span(g, table, r0 * D, nr * D, &bind[w], &toff[w], e);
        if (rc) return -1;
    }
    int64_t per = vkl_op_rows_per_window(c, rows, D, VKL_F32, 0);
    if (per < 1) return vkl_fail(e, "an embedding row of %lld elements exceeds the storage binding limit", (long long)D);
    uint32_t spec[1] = {(uint32_t)table->dtype};
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        struct {
            uint32_t n, D, V, rows_per_win, ids_off, y_off, st_row, st_col, toff[4], toff_hi[4];
            uint32_t tq_scale, tq_qcode; /* a quantised table: vkl_quant_offsets' scale_off, qcode_off */
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.n = (uint32_t)(nr * D);
        pc.D = (uint32_t)D;
        pc.V = (uint32_t)V;
        pc.rows_per_win = (uint32_t)tper;
        pc.st_row = (uint32_t)table->stride[0];
        pc.st_col = (uint32_t)table->stride[1];
        for (int w = 0; w < 4; w++) pc.toff[w] = toff[w];
        pc.toff_hi[0] = toff[4];
        pc.toff_hi[1] = toff[5];
        pc.tq_scale = qo.scale_off;
        pc.tq_qcode = qo.qcode_off;
        if (vkl_bind_span(g, ids, r0, nr, &bind[6], &pc.ids_off, e) ||
            vkl_bind_span(g, y, r0 * D, nr * D, &bind[7], &pc.y_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)pc.n + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_EMBEDDING, spec, 1, bind, 8, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* ---- embedding backward: chains of equal ids (embedding_grad.comp) */

static int emit_embedding_index(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_tensor *ids = n->src[0], *idx = n->dst;
    int64_t nid = vkl_tensor_nelem(ids), V = vkl_tensor_nelem(idx) - nid;
    struct { uint32_t V, n, ids_off, idx_off; } pc = {(uint32_t)V, (uint32_t)nid, 0, 0};
    vkl_bind b[2];
    if (vkl_bind_span(g, ids, 0, nid, &b[0], &pc.ids_off, e) ||
        vkl_bind_span(g, idx, 0, V + nid, &b[1], &pc.idx_off, e))
        return -1;
    uint32_t gx, gy;
    vkl_op_grid(((uint64_t)(V + nid) + 63) / 64, &gx, &gy);
    return vkl_emit_dispatch(g, VKL_KERNEL_EMBEDDING_GRAD_INDEX, NULL, 0, b, 2, &pc, sizeof pc, gx, gy, 1, e);
}

static int emit_embedding_grad(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *idx = n->src[0], *dy = n->src[1], *dt = n->dst;
    int64_t V = dt->shape[0], D = dt->shape[1];
    int64_t per = vkl_op_rows_per_window(c, V, D, VKL_F32, 0);
    if (per < 1) return vkl_fail(e, "an embedding row of %lld elements exceeds the storage binding limit", (long long)D);
    vkl_bind b[3];
    uint32_t idx_off, dy_off;
    if (vkl_bind_span(g, idx, 0, vkl_tensor_nelem(idx), &b[0], &idx_off, e) ||
        vkl_bind_span(g, dy, 0, vkl_tensor_nelem(dy), &b[1], &dy_off, e))
        return -1;
    for (int64_t r0 = 0; r0 < V; r0 += per) {
        int64_t nr = V - r0 < per ? V - r0 : per;
        struct { uint32_t V, D, nrows, row_first, idx_off, dy_off, dt_off; } pc = {
            (uint32_t)V, (uint32_t)D, (uint32_t)nr, (uint32_t)r0, idx_off, dy_off, 0};
        if (vkl_bind_span(g, dt, r0 * D, nr * D, &b[2], &pc.dt_off, e)) return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)(nr * D) + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_EMBEDDING_GRAD, NULL, 0, b, 3, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* d table: a scatter-add of dy's rows, as chains of equal ids summed in order
 * (deterministic, no float atomics); built only for a trainable table. Ids
 * get no gradient. */
static int backward_embedding(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (!need[0]) return 0;
    vkl_tensor *table = n->src[0], *ids = n->src[1];
    if (vkl_dtype_is_quant(table->dtype)) {
        vkl_graph_set_error(g, "embedding: a quantised (%s) table is frozen and has no gradient",
                            vkl_dtype_name(table->dtype));
        return -1;
    }
    if (dy->dtype != VKL_F32 || !vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
    int64_t nid = vkl_tensor_nelem(ids), ishape[1] = {table->shape[0] + nid};
    if (ishape[0] > INT32_MAX) {
        vkl_graph_set_error(g, "embedding backward: %lld ids exceed i32 indexing", (long long)nid);
        return -1;
    }
    vkl_tensor *idx = vkl_graph_tensor(g, VKL_I32, 1, ishape);
    if (!dy || !idx || !vkl_graph_add_node(g, "embedding_grad_index", idx, &ids, 1, emit_embedding_index, NULL, 0))
        return -1;
    vkl_tensor *dt = vkl_graph_tensor(g, VKL_F32, 2, table->shape), *src[2] = {idx, dy};
    if (!dt || !vkl_graph_add_node(g, "embedding_grad", dt, src, 2, emit_embedding_grad, NULL, 0)) return -1;
    dsrc[0] = dt;
    return 0;
}

vkl_tensor *vkl_embedding(vkl_graph *g, vkl_tensor *table, vkl_tensor *ids)
{
    if (!table || !ids || vkl_graph_failed(g)) return NULL;
    char st[96], si[96];
    vkl_tensor_describe(table, st, sizeof st);
    vkl_tensor_describe(ids, si, sizeof si);
    int quant = vkl_dtype_is_quant(table->dtype);
    if (vkl_dtype_is_gguf(table->dtype)) /* GGUF embeddings are loaded dequantised (models/llama/llama_gguf.c) */
        return vkl_graph_set_error(g, "embedding: table %s is in a GGUF block type, which the gather does not read", st);
    if (table->ndim != 2 || !(quant || vkl_op_float_type(table->dtype)))
        return vkl_graph_set_error(g, "embedding: table %s must be a 2-D f32, f16, bf16 or quantised tensor", st);
    if (quant) {
        /* the shader finds element i's code and scale from i alone: the whole weight, unpermuted */
        const vkl_tensor *root = table->view_of ? table->view_of : table;
        const vkl_caps *caps = vkl_ctx_caps(vkl_graph_ctx(g));
        if (!vkl_tensor_is_contiguous(table) || table->offset != root->offset ||
            vkl_tensor_nelem(table) != vkl_tensor_nelem(root))
            return vkl_graph_set_error(g, "embedding: a quantised table (%s) must be a whole 2-D weight", st);
        if (vkl_dtype_bytes(table->dtype, (uint64_t)vkl_tensor_nelem(table)) + caps->storage_align >
                caps->max_storage_range ||
            vkl_tensor_nelem(table) > UINT32_MAX / 2)
            return vkl_graph_set_error(g, "embedding: quantised table %s exceeds the device's storage binding limit "
                                          "(%llu bytes)", st, (unsigned long long)caps->max_storage_range);
    }
    if (ids->dtype != VKL_I32 || !vkl_tensor_is_contiguous(ids) || ids->ndim >= VKL_MAX_DIMS)
        return vkl_graph_set_error(g, "embedding: ids %s must be a contiguous i32 tensor of at most %d dims", si,
                                   VKL_MAX_DIMS - 1);
    if (table->shape[0] > INT32_MAX)
        return vkl_graph_set_error(g, "embedding: table %s has more rows than i32 ids can address", st);
    int64_t shape[VKL_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = table->shape[1];
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, ids->ndim + 1, shape);
    vkl_tensor *src[2] = {table, ids};
    vkl_node *n = y ? vkl_graph_add_node(g, "embedding", y, src, 2, emit_embedding, NULL, 0) : NULL;
    if (!n) return NULL;
    n->backward = backward_embedding;
    return y;
}
