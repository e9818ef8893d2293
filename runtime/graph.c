/* Graphs: nodes appended in order (already a topological order), then planned
 * once: liveness of intermediates, memory reuse in one arena, one descriptor
 * set per dispatch, one command buffer recorded and replayed on every run. */
#include "vkl_internal.h"
#include "shader_table.h"
#include "ops.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct dispatch {
    vkl_pipeline *pipe;
    VkDescriptorSet set;
    vkl_bind binds[VKL_MAX_BIND];
    int nbind;
    uint8_t push[VKL_PUSH_BYTES];
    uint32_t groups[3];
} dispatch;

struct vkl_graph {
    vkl_ctx *ctx;
    vkl_node **nodes;
    int nnodes, cap_nodes;
    vkl_tensor **tensors;
    int ntensors, cap_tensors;
    char err[1024];
    int failed, planned;
    vkl_buffer **arena; /* pages of at most one allocation each (see assign_memory) */
    int narena;
    uint64_t arena_bytes, unplanned_bytes;
    dispatch *disp;
    int ndisp, cap_disp;
    VkDescriptorPool dpool;
    VkCommandBuffer cb;
    int profiling;
    VkQueryPool qpool;
    uint64_t *stamps;
    double last_ms;
    int cur_segment, nsegments;
};

vkl_graph *vkl_graph_new(vkl_ctx *c)
{
    vkl_graph *g = calloc(1, sizeof *g);
    if (g) g->ctx = c;
    return g;
}

vkl_ctx *vkl_graph_ctx(vkl_graph *g) { return g->ctx; }
int vkl_graph_failed(const vkl_graph *g) { return g->failed; }
const char *vkl_graph_error(const vkl_graph *g) { return g->err; }
int vkl_graph_node_count(const vkl_graph *g) { return g->nnodes; }
vkl_node *vkl_graph_node_at(vkl_graph *g, int i) { return i >= 0 && i < g->nnodes ? g->nodes[i] : NULL; }
int vkl_graph_tensor_count(const vkl_graph *g) { return g->ntensors; }
int vkl_graph_dispatch_count(const vkl_graph *g) { return g->ndisp; }
uint64_t vkl_graph_arena_bytes(const vkl_graph *g) { return g->arena_bytes; }
uint64_t vkl_graph_unplanned_bytes(const vkl_graph *g) { return g->unplanned_bytes; }
void vkl_graph_enable_profiling(vkl_graph *g) { g->profiling = 1; }
double vkl_graph_last_gpu_ms(const vkl_graph *g) { return g->last_ms; }

void *vkl_graph_set_error(vkl_graph *g, const char *fmt, ...)
{
    if (g->failed) return NULL;
    g->failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->err, sizeof g->err, fmt, ap);
    va_end(ap);
    return NULL;
}

void vkl_graph_free(vkl_graph *g)
{
    if (!g) return;
    vkl_ctx *c = g->ctx;
    if (g->cb) vk.vkFreeCommandBuffers(c->dev, c->cmd_pool, 1, &g->cb);
    if (g->dpool) vk.vkDestroyDescriptorPool(c->dev, g->dpool, NULL);
    if (g->qpool) vk.vkDestroyQueryPool(c->dev, g->qpool, NULL);
    for (int i = 0; i < g->ntensors; i++) {
        vkl_tensor *t = g->tensors[i];
        if (t->keep && !t->view_of && t->buf) vkl_buffer_destroy(t->buf);
        free(t);
    }
    for (int i = 0; i < g->nnodes; i++) free(g->nodes[i]);
    for (int i = 0; i < g->narena; i++) vkl_buffer_destroy(g->arena[i]);
    free(g->arena);
    free(g->nodes);
    free(g->tensors);
    free(g->disp);
    free(g->stamps);
    free(g);
}

static int grow(void **p, int *cap, int need, size_t elem)
{
    if (need <= *cap) return 0;
    int n = *cap ? *cap * 2 : 64;
    while (n < need) n *= 2;
    void *q = realloc(*p, (size_t)n * elem);
    if (!q) return -1;
    *p = q;
    *cap = n;
    return 0;
}

static vkl_tensor *add_tensor(vkl_graph *g)
{
    if (g->planned) return vkl_graph_set_error(g, "the graph is already planned; build a new graph to add ops");
    if (grow((void **)&g->tensors, &g->cap_tensors, g->ntensors + 1, sizeof *g->tensors))
        return vkl_graph_set_error(g, "out of host memory");
    vkl_tensor *t = calloc(1, sizeof *t);
    if (!t) return vkl_graph_set_error(g, "out of host memory");
    t->graph = g;
    t->id = g->ntensors;
    g->tensors[g->ntensors++] = t;
    return t;
}

vkl_tensor *vkl_graph_tensor(vkl_graph *g, vkl_dtype dt, int ndim, const int64_t *shape)
{
    if (g->failed) return NULL;
    vkl_tensor *t = add_tensor(g);
    if (!t) return NULL;
    vkl_err e;
    if (vkl_tensor_init_shape(t, dt, ndim, shape, &e)) return vkl_graph_set_error(g, "%s", e.msg);
    return t;
}

static vkl_tensor *root_of(vkl_tensor *t) { return t->view_of ? t->view_of : t; }

/* Views are nodes without dispatches, so autograd sees them like any op. */
typedef struct {
    int kind; /* 0 reshape, 1 permute, 2 strided */
    int perm[VKL_MAX_DIMS];
    int64_t offset; /* strided: elements after the source's first */
} view_params;

static int emit_view(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    (void)g; (void)n; (void)e;
    return 0;
}

/* The gradient of a slice [start, start + len) along one dimension d of a
 * contiguous x (the view keeps x's strides; e.g. the mean and log-variance
 * halves of the VAE's moments): dy padded with zeros to x's shape along d, as
 * concatenations with zero blocks. NULL when the view is not such a slice. */
static vkl_tensor *slice_grad(vkl_graph *g, vkl_tensor *x, const vkl_tensor *v, int64_t offset, vkl_tensor *dy)
{
    if (!vkl_tensor_is_contiguous(x) || v->ndim != x->ndim) return NULL;
    int d = -1;
    for (int i = 0; i < x->ndim; i++) {
        if (v->stride[i] != x->stride[i] && v->shape[i] > 1) return NULL;
        if (v->shape[i] != x->shape[i]) {
            if (d >= 0) return NULL;
            d = i;
        }
    }
    if (d < 0) return offset == 0 ? dy : NULL;
    if (offset % x->stride[d]) return NULL;
    int64_t start = offset / x->stride[d], len = v->shape[d], rest = x->shape[d] - start - len;
    if (start < 0 || rest < 0) return NULL;
    int64_t shape[VKL_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    vkl_tensor *out = dy;
    if (start > 0) {
        shape[d] = start;
        out = vkl_concat(g, vkl_fill(g, x->ndim, shape, 0.0f), out, d);
    }
    if (rest > 0) {
        shape[d] = rest;
        out = vkl_concat(g, out, vkl_fill(g, x->ndim, shape, 0.0f), d);
    }
    return out;
}

static int backward_view(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    const view_params *vp = (const view_params *)n->params.bytes;
    vkl_tensor *x = n->src[0];
    if (!need[0]) return 0;
    if (vp->kind == 0) {
        if (!vkl_tensor_is_contiguous(dy)) dy = vkl_scale(g, dy, 1.0f);
        dsrc[0] = vkl_reshape(g, dy, x->ndim, x->shape);
    } else if (vp->kind == 1) {
        int inv[VKL_MAX_DIMS];
        for (int i = 0; i < x->ndim; i++) inv[vp->perm[i]] = i;
        dsrc[0] = vkl_permute(g, dy, inv);
    } else {
        dsrc[0] = slice_grad(g, x, n->dst, vp->offset, dy);
        if (!dsrc[0]) {
            vkl_graph_set_error(g, "no gradient through this strided view (of %s): only a slice along one dimension "
                                "of a contiguous tensor has one", x->name[0] ? x->name : "a tensor");
            return -1;
        }
    }
    return dsrc[0] ? 0 : -1;
}

static void add_view_node(vkl_graph *g, vkl_tensor *v, vkl_tensor *src, int kind, const int *perm, int64_t offset)
{
    view_params p = {kind, {0, 1, 2, 3}, offset};
    if (perm)
        for (int i = 0; i < src->ndim; i++) p.perm[i] = perm[i];
    vkl_node *n = vkl_graph_add_node(g, kind == 0 ? "reshape" : kind == 1 ? "permute" : "view", v, &src, 1, emit_view,
                                     &p, sizeof p);
    if (n) n->backward = backward_view;
}

vkl_tensor *vkl_reshape(vkl_graph *g, vkl_tensor *t, int ndim, const int64_t *shape)
{
    if (!t || g->failed) return NULL;
    if (!vkl_tensor_is_contiguous(t)) return vkl_graph_set_error(g, "reshape needs a contiguous tensor");
    vkl_tensor *v = vkl_graph_tensor(g, t->dtype, ndim, shape);
    if (!v) return NULL;
    if (vkl_tensor_nelem(v) != vkl_tensor_nelem(t)) {
        char a[96], b[96];
        vkl_tensor_describe(t, a, sizeof a);
        vkl_tensor_describe(v, b, sizeof b);
        return vkl_graph_set_error(g, "cannot reshape %s to %s: element counts differ", a, b);
    }
    v->view_of = root_of(t);
    v->offset = t->view_of ? t->offset : 0; /* relative to the root until planned */
    v->producer = t->producer;
    add_view_node(g, v, t, 0, NULL, 0);
    return g->failed ? NULL : v;
}

vkl_tensor *vkl_permute(vkl_graph *g, vkl_tensor *t, const int *perm)
{
    if (!t || g->failed) return NULL;
    vkl_tensor *v = add_tensor(g);
    if (!v) return NULL;
    int seen = 0;
    *v = *t;
    v->graph = g;
    v->id = g->ntensors - 1;
    v->keep = 0;
    v->name[0] = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (perm[i] < 0 || perm[i] >= t->ndim || (seen & (1 << perm[i])))
            return vkl_graph_set_error(g, "permute: %d is not a valid permutation entry", perm[i]);
        seen |= 1 << perm[i];
        v->shape[i] = t->shape[perm[i]];
        v->stride[i] = t->stride[perm[i]];
    }
    v->view_of = root_of(t);
    v->offset = t->view_of ? t->offset : 0;
    v->buf = NULL;
    add_view_node(g, v, t, 1, perm, 0);
    return g->failed ? NULL : v;
}

void vkl_graph_segment_begin(vkl_graph *g)
{
    if (g->cur_segment) vkl_graph_set_error(g, "checkpoint segments do not nest");
    g->cur_segment = ++g->nsegments;
}

void vkl_graph_segment_end(vkl_graph *g) { g->cur_segment = 0; }

int vkl_graph_in_segment(const vkl_graph *g) { return g->cur_segment; }

/* Re-appends node n (of a checkpoint segment) with its inputs replaced by
 * src; returns the new output tensor. Views are re-made on the new input. */
vkl_tensor *vkl_graph_replay_node(vkl_graph *g, const vkl_node *n, vkl_tensor *const *src)
{
    if (g->failed) return NULL;
    if (n->emit == emit_view) {
        const view_params *vp = (const view_params *)n->params.bytes;
        const vkl_tensor *d = n->dst;
        if (vp->kind == 0) return vkl_reshape(g, src[0], d->ndim, d->shape);
        if (vp->kind == 1) return vkl_permute(g, src[0], vp->perm);
        /* strided view: same element offset relative to the source */
        uint64_t es = vkl_dtype_size(d->dtype);
        int64_t off = es ? (int64_t)((d->offset - (n->src[0]->view_of ? n->src[0]->offset : 0)) / es) : 0;
        return vkl_view(g, src[0], d->ndim, d->shape, d->stride, off);
    }
    if (!n->dst->graph) return vkl_graph_set_error(g, "op %s writes a persistent tensor and cannot be recomputed", n->op);
    vkl_tensor *y = vkl_graph_tensor(g, n->dst->dtype, n->dst->ndim, n->dst->shape);
    vkl_node *c = vkl_graph_add_node(g, n->op, y, src, n->nsrc, n->emit, n->params.bytes, sizeof n->params);
    if (!c) return NULL;
    c->backward = n->backward;
    return y;
}

vkl_tensor *vkl_view(vkl_graph *g, vkl_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                     int64_t offset)
{
    if (!t || g->failed) return NULL;
    if (ndim < 1 || ndim > VKL_MAX_DIMS) return vkl_graph_set_error(g, "view: %d dimensions", ndim);
    int64_t last = offset;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || stride[i] < 0) return vkl_graph_set_error(g, "view: negative shape or stride");
        if (shape[i] > 0) last += (shape[i] - 1) * stride[i];
    }
    if (offset < 0 || last >= vkl_tensor_span(t)) return vkl_graph_set_error(g, "view: reaches outside its tensor");
    vkl_tensor *v = add_tensor(g);
    if (!v) return NULL;
    v->dtype = t->dtype;
    v->ndim = ndim;
    for (int i = 0; i < VKL_MAX_DIMS; i++) {
        v->shape[i] = i < ndim ? shape[i] : 1;
        v->stride[i] = i < ndim ? stride[i] : 0;
    }
    v->view_of = root_of(t);
    v->offset = (t->view_of ? t->offset : 0) + (uint64_t)offset * vkl_dtype_size(t->dtype);
    v->producer = t->producer;
    add_view_node(g, v, t, 2, NULL, offset);
    return g->failed ? NULL : v;
}

void vkl_graph_keep(vkl_graph *g, vkl_tensor *t)
{
    if (!t) return;
    /* keeping a view keeps the memory it looks into; views of persistent
     * tensors already have memory of their own */
    vkl_tensor *r = root_of(t);
    if (!r->graph) return;
    if (r->graph != g) {
        vkl_graph_set_error(g, "a tensor of another graph cannot be kept as an output");
        return;
    }
    r->keep = 1;
}

vkl_node *vkl_graph_add_node(vkl_graph *g, const char *op, vkl_tensor *dst, vkl_tensor *const *src, int nsrc,
                             vkl_emit_fn emit, const void *params, size_t params_size)
{
    if (g->failed || !dst) return NULL;
    for (int i = 0; i < nsrc; i++) {
        if (!src[i]) return vkl_graph_set_error(g, "%s: input %d is missing", op, i);
        if (src[i]->graph && src[i]->graph != g)
            return vkl_graph_set_error(g, "%s: input %d belongs to another graph", op, i);
        if (src[i]->graph && !root_of(src[i])->producer && !root_of(src[i])->buf)
            return vkl_graph_set_error(g, "%s: input %d is used before anything computes it", op, i);
    }
    if (nsrc > VKL_NODE_MAX_SRC || params_size > VKL_PARAMS_BYTES)
        return vkl_graph_set_error(g, "%s: too many inputs or parameters", op);
    if (grow((void **)&g->nodes, &g->cap_nodes, g->nnodes + 1, sizeof *g->nodes))
        return vkl_graph_set_error(g, "out of host memory");
    vkl_node *n = calloc(1, sizeof *n);
    if (!n) return vkl_graph_set_error(g, "out of host memory");
    snprintf(n->op, sizeof n->op, "%s", op);
    if (nsrc) memcpy(n->src, src, sizeof *src * (size_t)nsrc); /* src may be NULL for a source-less node */
    n->nsrc = nsrc;
    n->dst = dst;
    n->emit = emit;
    if (params_size) memcpy(n->params.bytes, params, params_size);
    n->index = g->nnodes;
    n->segment = g->cur_segment;
    g->nodes[g->nnodes++] = n;
    if (dst->graph == g && !dst->producer && !dst->view_of) dst->producer = n;
    return n;
}

/* ---- planning */

typedef struct live { uint64_t off, size; int last; } live;

static int assign_memory(vkl_graph *g, vkl_err *e)
{
    vkl_ctx *c = g->ctx;
    int nt = g->ntensors;
    int *last = malloc(sizeof(int) * (size_t)(nt ? nt : 1));
    live *lv = malloc(sizeof(live) * (size_t)(nt ? nt : 1));
    uint64_t *off = calloc((size_t)(nt ? nt : 1), sizeof *off);
    if (!last || !lv || !off) {
        free(last); free(lv); free(off);
        return vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < nt; i++) last[i] = -1;
    for (int ni = 0; ni < g->nnodes; ni++) {
        vkl_node *n = g->nodes[ni];
        for (int s = 0; s < n->nsrc; s++) {
            vkl_tensor *r = root_of(n->src[s]);
            if (r->graph == g) last[r->id] = ni;
        }
        vkl_tensor *r = root_of(n->dst);
        if (r->graph == g && last[r->id] < ni) last[r->id] = ni;
    }
    int nlive = 0;
    uint64_t peak = 0;
    /* The arena is one address range cut into pages of at most one allocation
     * (max_alloc: 2 GiB on lavapipe); no tensor straddles a page boundary, so
     * a graph whose intermediates exceed one allocation still plans. */
    uint64_t page = c->caps.max_alloc & ~255ull;
    if (!page) page = 256;
    g->unplanned_bytes = 0;
    for (int ni = 0; ni < g->nnodes; ni++) {
        vkl_tensor *t = g->nodes[ni]->dst;
        if (t->graph == g && !t->view_of && t->producer == g->nodes[ni] && !t->buf) {
            uint64_t size = (vkl_tensor_nbytes(t) + 255) & ~255ull;
            if (!size) size = 256;
            g->unplanned_bytes += size;
            if (t->keep) {
                if (vkl_buffer_create(c, vkl_tensor_nbytes(t), VKL_MEM_DEVICE, &t->buf, e)) goto fail;
                t->offset = 0;
            } else {
                if (size > page) {
                    vkl_fail(e, "a %.1f MiB intermediate is larger than one allocation may be (%.1f MiB) on '%s'",
                             size / 1048576.0, page / 1048576.0, c->caps.name);
                    goto fail;
                }
                /* the smallest gap between live ranges (kept sorted by
                 * offset) that fits, else the end: best fit keeps large
                 * holes for large tensors (mixed f32/f16 sizes fragment a
                 * first-fit arena). A start that would straddle a page
                 * boundary moves to the next page. */
                uint64_t cand = 0, end = 0, best_gap = UINT64_MAX;
                int at = nlive;
                for (int k = 0; k <= nlive; k++) {
                    uint64_t start = end;
                    if (start / page != (start + size - 1) / page) start = (start / page + 1) * page;
                    if (k == nlive) {
                        if (best_gap == UINT64_MAX) cand = start;
                        break;
                    }
                    if (lv[k].off >= start + size && lv[k].off - end < best_gap) {
                        best_gap = lv[k].off - end;
                        cand = start;
                        at = k;
                    }
                    if (lv[k].off + lv[k].size > end) end = lv[k].off + lv[k].size;
                }
                memmove(&lv[at + 1], &lv[at], sizeof *lv * (size_t)(nlive - at));
                lv[at] = (live){cand, size, t->id};
                nlive++;
                off[t->id] = cand;
                if (cand + size > peak) peak = cand + size;
            }
        }
        /* free what this node was the last user of */
        for (int k = 0; k < nlive;) {
            if (last[lv[k].last] <= ni) {
                memmove(&lv[k], &lv[k + 1], sizeof *lv * (size_t)(nlive - k - 1));
                nlive--;
            } else {
                k++;
            }
        }
    }
    g->arena_bytes = peak;
    if (peak) {
        int pages = (int)((peak + page - 1) / page);
        g->arena = calloc((size_t)pages, sizeof *g->arena);
        if (!g->arena) {
            vkl_fail(e, "out of host memory");
            goto fail;
        }
        for (; g->narena < pages; g->narena++) {
            uint64_t first = (uint64_t)g->narena * page, bytes = peak - first < page ? peak - first : page;
            if (vkl_buffer_create(c, bytes, VKL_MEM_DEVICE, &g->arena[g->narena], e)) goto fail;
        }
    }
    for (int i = 0; i < nt; i++) {
        vkl_tensor *t = g->tensors[i];
        if (!t->view_of && !t->keep && t->producer && !t->buf) {
            t->buf = g->arena[off[i] / page];
            t->offset = off[i] % page;
        }
    }
    for (int i = 0; i < nt; i++) {
        vkl_tensor *t = g->tensors[i];
        if (t->view_of) {
            t->buf = t->view_of->buf;
            t->offset += t->view_of->offset;
        }
    }
    free(last); free(lv); free(off);
    return 0;
fail:
    free(last); free(lv); free(off);
    return -1;
}

int64_t vkl_window_elems(const vkl_ctx *c, vkl_dtype dt, int64_t multiple)
{
    uint64_t es = vkl_dtype_size(dt), slack = c->caps.storage_align + 4;
    /* a binding no larger than its alignment slack holds nothing (and the
     * unsigned difference must not wrap: SwiftShader aligns to 256 bytes) */
    if (!es) return 0; /* a block-quantised type is bound whole by the ops that read it */
    if (c->caps.max_storage_range <= slack) return 0;
    int64_t n = (int64_t)((c->caps.max_storage_range - slack) / es);
    if (multiple > 1) n -= n % multiple;
    return n;
}

int vkl_bind_span(vkl_graph *g, const vkl_tensor *t, int64_t first, int64_t count, vkl_bind *b, uint32_t *elem_off,
                  vkl_err *e)
{
    vkl_ctx *c = g->ctx;
    if (!t->buf) return vkl_fail(e, "internal: tensor bound before it has memory");
    uint64_t es = vkl_dtype_size(t->dtype);
    if (!es) {
        char d[128];
        vkl_tensor_describe(t, d, sizeof d);
        return vkl_fail(e, "tensor %s: a quantised tensor is read only by the matmul ops and the embedding lookup", d);
    }
    uint64_t begin = vkl_buffer_vk_offset(t->buf) + t->offset + (uint64_t)first * es;
    uint64_t end = begin + (uint64_t)(count > 0 ? count : 1) * es;
    end = (end + 3) & ~3ull;
    uint64_t align = c->caps.storage_align < 4 ? 4 : c->caps.storage_align;
    uint64_t abegin = begin / align * align;
    if (end - abegin > c->caps.max_storage_range) {
        char d[128];
        vkl_tensor_describe(t, d, sizeof d);
        return vkl_fail(e, "tensor %s: a window of %llu bytes exceeds the device's storage binding limit "
                           "(maxStorageBufferRange %llu bytes)", d, (unsigned long long)(end - abegin),
                        (unsigned long long)c->caps.max_storage_range);
    }
    b->buf = t->buf;
    b->offset = abegin - vkl_buffer_vk_offset(t->buf);
    b->range = end - abegin;
    *elem_off = (uint32_t)((begin - abegin) / es);
    return 0;
}

int vkl_emit_dispatch(vkl_graph *g, vkl_kernel k, const uint32_t *spec, int nspec, const vkl_bind *binds,
                      int nbind, const void *push, size_t push_size, uint32_t gx, uint32_t gy, uint32_t gz, vkl_err *e)
{
    vkl_ctx *c = g->ctx;
    if ((unsigned)k >= VKL_KERNEL_COUNT) return vkl_fail(e, "kernel %d is not built into this program", (int)k);
    const char *kernel = vkl_shader_table[k].name;
    if (gx == 0 || gy == 0 || gz == 0) return 0;
    if (gx > c->caps.max_wg_count[0] || gy > c->caps.max_wg_count[1] || gz > c->caps.max_wg_count[2])
        return vkl_fail(e, "%s: %u x %u x %u workgroups exceed the device's limit %u x %u x %u", kernel, gx, gy, gz,
                        c->caps.max_wg_count[0], c->caps.max_wg_count[1], c->caps.max_wg_count[2]);
    if (push_size > VKL_PUSH_BYTES || nbind > VKL_MAX_BIND) return vkl_fail(e, "%s: too many push constants or bindings", kernel);
    if (grow((void **)&g->disp, &g->cap_disp, g->ndisp + 1, sizeof *g->disp)) return vkl_fail(e, "out of host memory");
    dispatch *d = &g->disp[g->ndisp];
    memset(d, 0, sizeof *d);
    if (vkl_pipeline_get(c, k, nbind, spec, nspec, &d->pipe, e)) return -1;
    memcpy(d->binds, binds, sizeof *binds * (size_t)nbind);
    d->nbind = nbind;
    if (push_size) memcpy(d->push, push, push_size);
    d->groups[0] = gx;
    d->groups[1] = gy;
    d->groups[2] = gz;
    g->ndisp++;
    return 0;
}

static void compute_barrier(VkCommandBuffer cb)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    vk.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb,
                            0, NULL, 0, NULL);
}

static int record(vkl_graph *g, vkl_err *e)
{
    vkl_ctx *c = g->ctx;
    int nb = 0;
    for (int i = 0; i < g->ndisp; i++) nb += g->disp[i].nbind;
    if (g->ndisp) {
        VkDescriptorPoolSize ps = {.type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .descriptorCount = (uint32_t)(nb ? nb : 1)};
        VkDescriptorPoolCreateInfo pi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
                                         .maxSets = (uint32_t)g->ndisp, .poolSizeCount = 1, .pPoolSizes = &ps};
        VKL_CHECK_VK(vk.vkCreateDescriptorPool(c->dev, &pi, NULL, &g->dpool), e, "vkCreateDescriptorPool");
    }
    for (int i = 0; i < g->ndisp; i++) {
        dispatch *d = &g->disp[i];
        VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
                                          .descriptorPool = g->dpool, .descriptorSetCount = 1,
                                          .pSetLayouts = &d->pipe->dsl};
        VKL_CHECK_VK(vk.vkAllocateDescriptorSets(c->dev, &ai, &d->set), e, "vkAllocateDescriptorSets");
        VkDescriptorBufferInfo bi[VKL_MAX_BIND];
        VkWriteDescriptorSet w[VKL_MAX_BIND];
        for (int k = 0; k < d->nbind; k++) {
            bi[k] = (VkDescriptorBufferInfo){.buffer = vkl_buffer_vk(d->binds[k].buf),
                                             .offset = vkl_buffer_vk_offset(d->binds[k].buf) + d->binds[k].offset,
                                             .range = d->binds[k].range};
            w[k] = (VkWriteDescriptorSet){.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = d->set,
                                          .dstBinding = (uint32_t)k, .descriptorCount = 1,
                                          .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = &bi[k]};
        }
        vk.vkUpdateDescriptorSets(c->dev, (uint32_t)d->nbind, w, 0, NULL);
    }
    if (g->profiling && c->caps.timestamps) {
        VkQueryPoolCreateInfo qi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                    .queryCount = (uint32_t)g->nnodes + 1};
        VKL_CHECK_VK(vk.vkCreateQueryPool(c->dev, &qi, NULL, &g->qpool), e, "vkCreateQueryPool");
        g->stamps = calloc((size_t)g->nnodes + 1, sizeof *g->stamps);
        if (!g->stamps) return vkl_fail(e, "out of host memory");
    }
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = c->cmd_pool,
                                      .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
    VKL_CHECK_VK(vk.vkAllocateCommandBuffers(c->dev, &ai, &g->cb), e, "vkAllocateCommandBuffers");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    VKL_CHECK_VK(vk.vkBeginCommandBuffer(g->cb, &bi), e, "vkBeginCommandBuffer");
    vkl_cmd_full_barrier(g->cb);
    if (g->qpool) {
        vk.vkCmdResetQueryPool(g->cb, g->qpool, 0, (uint32_t)g->nnodes + 1);
        vk.vkCmdWriteTimestamp(g->cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, g->qpool, 0);
    }
    VkPipeline bound = VK_NULL_HANDLE;
    for (int ni = 0; ni < g->nnodes; ni++) {
        vkl_node *n = g->nodes[ni];
        for (int i = n->first_dispatch; i < n->first_dispatch + n->ndispatch; i++) {
            dispatch *d = &g->disp[i];
            if (d->pipe->pipe != bound) {
                vk.vkCmdBindPipeline(g->cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->pipe->pipe);
                bound = d->pipe->pipe;
            }
            vk.vkCmdBindDescriptorSets(g->cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->pipe->layout, 0, 1, &d->set, 0, NULL);
            vk.vkCmdPushConstants(g->cb, d->pipe->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, VKL_PUSH_BYTES, d->push);
            vk.vkCmdDispatch(g->cb, d->groups[0], d->groups[1], d->groups[2]);
        }
        /* dispatches of one node write disjoint windows; nodes depend on earlier nodes */
        if (n->ndispatch) compute_barrier(g->cb);
        if (g->qpool) vk.vkCmdWriteTimestamp(g->cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, g->qpool, (uint32_t)ni + 1);
    }
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_HOST_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_MEMORY_READ_BIT};
    vk.vkCmdPipelineBarrier(g->cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                            VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    VKL_CHECK_VK(vk.vkEndCommandBuffer(g->cb), e, "vkEndCommandBuffer");
    return 0;
}

int vkl_graph_plan(vkl_graph *g, vkl_err *e)
{
    if (g->failed) return vkl_fail(e, "building the graph failed: %s", g->err);
    if (g->planned) return vkl_fail(e, "the graph is already planned");
    if (assign_memory(g, e)) return -1;
    for (int ni = 0; ni < g->nnodes; ni++) {
        vkl_node *n = g->nodes[ni];
        n->first_dispatch = g->ndisp;
        if (n->emit(g, n, e)) {
            vkl_err_prefix(e, "op %s (node %d): ", n->op, ni);
            return -1;
        }
        n->ndispatch = g->ndisp - n->first_dispatch;
    }
    if (record(g, e)) return -1;
    g->planned = 1;
    return 0;
}

int vkl_graph_run(vkl_graph *g, vkl_err *e)
{
    if (!g->planned) return vkl_fail(e, "plan the graph before running it");
    if (vkl_submit_wait(g->ctx, g->cb, e)) return -1;
    if (g->qpool) {
        VkResult r = vk.vkGetQueryPoolResults(g->ctx->dev, g->qpool, 0, (uint32_t)g->nnodes + 1,
                                              sizeof(uint64_t) * ((size_t)g->nnodes + 1), g->stamps, sizeof(uint64_t),
                                              VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT);
        if (r == VK_SUCCESS)
            g->last_ms = (double)(g->stamps[g->nnodes] - g->stamps[0]) * g->ctx->caps.timestamp_period_ns * 1e-6;
    }
    return 0;
}

void vkl_graph_print_profile(const vkl_graph *g, FILE *f)
{
    if (!g->qpool) {
        fprintf(f, "no profile: enable profiling before planning (and the device must have timestamps)\n");
        return;
    }
    double per = g->ctx->caps.timestamp_period_ns * 1e-6;
    for (int i = 0; i < g->nnodes; i++) {
        char d[128];
        vkl_tensor_describe(g->nodes[i]->dst, d, sizeof d);
        fprintf(f, "%4d %-16s %-40s %9.3f ms\n", i, g->nodes[i]->op, d,
                (double)(g->stamps[i + 1] - g->stamps[i]) * per);
    }
    fprintf(f, "total %.3f ms\n", g->last_ms);
}
