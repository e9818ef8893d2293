#include "optim.h"

#include "adamw8.h"
#include "ops/op_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void vkl_adamw_opts_default(vkl_adamw_opts *o)
{
    o->lr = 1e-4f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 1e-2f;
    o->max_grad_norm = 0;
    o->state_bits = 32;
}

struct vkl_adamw {
    vkl_ctx *ctx;
    vkl_adamw_opts o;
    int n;
    vkl_tensor **p, **m, **v;
    float *lr_mult;
    vkl_tensor *hyper; /* f32 [9]: lr, b1, b2, eps, wd, bc1, bc2, max_norm, 1/loss scale */
    float grad_scale;  /* the loss scale the gradients carry (1: none) */
    vkl_tensor *state; /* f32 [4]: norm, clip factor, skip */
    /* 8-bit state (state_bits 8): per parameter codes and absmax, or NULL
     * where that parameter keeps f32 moments; qmap f32 [512] */
    vkl_tensor **codes, **absmax, *qmap;
    /* rank gates (vkl_adamw_set_rank_gate): per parameter, or NULL */
    vkl_tensor **gate_count, **gate_mask;
    int *gate_axis;
};

/* 8-bit state of parameter i: codes start at the map's zero entry (index 127
 * of the signed map, 0 of the unsigned one), absmax at 0. */
static int new_state8(vkl_adamw *a, int i, vkl_err *e)
{
    int64_t nb = (vkl_tensor_nelem(a->p[i]) + VKL_ADAMW8_BLOCK - 1) / VKL_ADAMW8_BLOCK;
    a->codes[i] = vkl_tensor_new(a->ctx, VKL_U8, 3, (int64_t[]){nb, 2, VKL_ADAMW8_BLOCK}, e);
    a->absmax[i] = a->codes[i] ? vkl_tensor_new(a->ctx, VKL_F32, 2, (int64_t[]){nb, 2}, e) : NULL;
    if (!a->absmax[i]) return -1;
    uint8_t *c = malloc((size_t)nb * 2 * VKL_ADAMW8_BLOCK);
    float *z = calloc((size_t)nb * 2, sizeof(float));
    if (c)
        for (int64_t b = 0; b < nb; b++) {
            memset(c + b * 2 * VKL_ADAMW8_BLOCK, 127, VKL_ADAMW8_BLOCK);
            memset(c + (b * 2 + 1) * VKL_ADAMW8_BLOCK, 0, VKL_ADAMW8_BLOCK);
        }
    int rc = !c || !z ? vkl_fail(e, "out of host memory")
                      : vkl_tensor_upload(a->ctx, a->codes[i], c, VKL_U8, e) ||
                            vkl_tensor_upload(a->ctx, a->absmax[i], z, VKL_F32, e);
    free(c);
    free(z);
    return rc ? -1 : 0;
}

static int new_qmap(vkl_adamw *a, vkl_err *e)
{
    float map[512];
    vkl_adamw8_map(1, map);
    vkl_adamw8_map(0, map + 256);
    a->qmap = vkl_tensor_new(a->ctx, VKL_F32, 1, (int64_t[]){512}, e);
    return !a->qmap || vkl_tensor_upload(a->ctx, a->qmap, map, VKL_F32, e) ? -1 : 0;
}

vkl_adamw *vkl_adamw_new(vkl_ctx *c, vkl_tensor *const *params, int n, const float *lr_mult,
                         const vkl_adamw_opts *o, vkl_err *e)
{
    vkl_adamw *a = calloc(1, sizeof *a);
    if (!a) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    a->ctx = c;
    a->o = *o;
    a->n = n;
    a->p = calloc((size_t)n + 1, sizeof *a->p);
    a->m = calloc((size_t)n + 1, sizeof *a->m);
    a->v = calloc((size_t)n + 1, sizeof *a->v);
    a->lr_mult = calloc((size_t)n + 1, sizeof *a->lr_mult);
    a->codes = calloc((size_t)n + 1, sizeof *a->codes);
    a->absmax = calloc((size_t)n + 1, sizeof *a->absmax);
    a->gate_count = calloc((size_t)n + 1, sizeof *a->gate_count);
    a->gate_mask = calloc((size_t)n + 1, sizeof *a->gate_mask);
    a->gate_axis = calloc((size_t)n + 1, sizeof *a->gate_axis);
    if (!a->p || !a->m || !a->v || !a->lr_mult || !a->codes || !a->absmax || !a->gate_count || !a->gate_mask ||
        !a->gate_axis) {
        vkl_fail(e, "out of host memory");
        goto fail;
    }
    if (o->state_bits != 0 && o->state_bits != 32 && o->state_bits != 8) {
        vkl_fail(e, "AdamW: state_bits is %d (32 or 8)", o->state_bits);
        goto fail;
    }
    if (o->state_bits == 8 && new_qmap(a, e)) goto fail;
    for (int i = 0; i < n; i++) {
        if (params[i]->dtype != VKL_F32 || !vkl_tensor_is_contiguous(params[i]) || params[i]->graph) {
            vkl_fail(e, "AdamW: parameter %d must be a persistent contiguous f32 tensor", i);
            goto fail;
        }
        a->p[i] = params[i];
        a->lr_mult[i] = lr_mult ? lr_mult[i] : 1.0f;
        if (o->state_bits == 8 && vkl_tensor_nelem(params[i]) >= VKL_ADAMW8_MIN_SIZE) {
            if (new_state8(a, i, e)) goto fail;
            continue;
        }
        a->m[i] = vkl_tensor_new(c, VKL_F32, params[i]->ndim, params[i]->shape, e);
        a->v[i] = a->m[i] ? vkl_tensor_new(c, VKL_F32, params[i]->ndim, params[i]->shape, e) : NULL;
        if (!a->v[i]) goto fail;
        size_t cnt = (size_t)vkl_tensor_nelem(params[i]);
        float *zero = calloc(cnt ? cnt : 1, sizeof(float));
        int rc = !zero || vkl_tensor_upload(c, a->m[i], zero, VKL_F32, e) || vkl_tensor_upload(c, a->v[i], zero, VKL_F32, e);
        free(zero);
        if (rc) goto fail;
    }
    a->grad_scale = 1.0f;
    a->hyper = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){9}, e);
    a->state = a->hyper ? vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){4}, e) : NULL;
    if (!a->state) goto fail;
    float zeros[4] = {0, 1, 0, 0};
    if (vkl_tensor_upload(c, a->state, zeros, VKL_F32, e)) goto fail;
    return a;
fail:
    vkl_adamw_free(a);
    return NULL;
}

void vkl_adamw_free(vkl_adamw *a)
{
    if (!a) return;
    for (int i = 0; i < a->n; i++) {
        if (a->m) vkl_tensor_free(a->m[i]);
        if (a->v) vkl_tensor_free(a->v[i]);
        if (a->codes) vkl_tensor_free(a->codes[i]);
        if (a->absmax) vkl_tensor_free(a->absmax[i]);
    }
    vkl_tensor_free(a->qmap);
    free(a->codes);
    free(a->absmax);
    free(a->gate_count);
    free(a->gate_mask);
    free(a->gate_axis);
    vkl_tensor_free(a->hyper);
    vkl_tensor_free(a->state);
    free(a->p);
    free(a->m);
    free(a->v);
    free(a->lr_mult);
    free(a);
}

vkl_tensor *vkl_adamw_m(vkl_adamw *a, int i) { return i >= 0 && i < a->n ? a->m[i] : NULL; }
vkl_tensor *vkl_adamw_v(vkl_adamw *a, int i) { return i >= 0 && i < a->n ? a->v[i] : NULL; }

int vkl_adamw_state(vkl_adamw *a, int i, vkl_tensor *tensors[2], const char *names[2])
{
    if (i < 0 || i >= a->n) return 0;
    int q = a->codes[i] != NULL;
    tensors[0] = q ? a->codes[i] : a->m[i];
    tensors[1] = q ? a->absmax[i] : a->v[i];
    names[0] = q ? "codes" : "m";
    names[1] = q ? "absmax" : "v";
    return 2;
}

uint64_t vkl_adamw_state_bytes(const vkl_adamw *a)
{
    uint64_t sum = 0;
    for (int i = 0; i < a->n; i++) {
        const vkl_tensor *t[4] = {a->m[i], a->v[i], a->codes[i], a->absmax[i]};
        for (int k = 0; k < 4; k++)
            if (t[k]) sum += (uint64_t)vkl_tensor_nelem(t[k]) * vkl_dtype_size(t[k]->dtype);
    }
    return sum;
}

typedef struct { float lr_mult; } adamw_params;

static int emit_adamw(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const adamw_params *ap = (const adamw_params *)n->params.bytes;
    vkl_tensor *p = n->dst, *gr = n->src[0], *m = n->src[1], *v = n->src[2], *h = n->src[3], *s = n->src[4];
    int64_t total = vkl_tensor_nelem(p), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    for (int64_t first = 0; first < total; first += win) {
        int64_t cnt = total - first < win ? total - first : win;
        struct { uint32_t n, p_off, g_off, m_off, v_off; float lr_mult; } pc = {(uint32_t)cnt, 0, 0, 0, 0, ap->lr_mult};
        vkl_bind b[6];
        uint32_t dummy;
        if (vkl_bind_span(g, p, first, cnt, &b[0], &pc.p_off, e) || vkl_bind_span(g, gr, first, cnt, &b[1], &pc.g_off, e) ||
            vkl_bind_span(g, m, first, cnt, &b[2], &pc.m_off, e) || vkl_bind_span(g, v, first, cnt, &b[3], &pc.v_off, e) ||
            vkl_bind_span(g, h, 0, 8, &b[4], &dummy, e) || vkl_bind_span(g, s, 0, 4, &b[5], &dummy, e))
            return -1;
        if (dummy) return vkl_fail(e, "internal: optimiser state not aligned");
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)cnt + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_ADAMW, NULL, 0, b, 6, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* Elements after the rank axis of the gated parameter, and the rank. */
typedef struct { float lr_mult; uint32_t inner, rank; } adamw_gated_params;

static int emit_adamw_gated(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const adamw_gated_params *ap = (const adamw_gated_params *)n->params.bytes;
    vkl_tensor *p = n->dst, *gr = n->src[0], *m = n->src[1], *v = n->src[2], *h = n->src[3], *s = n->src[4],
               *cnt = n->src[5];
    int64_t total = vkl_tensor_nelem(p), win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
    for (int64_t first = 0; first < total; first += win) {
        int64_t count = total - first < win ? total - first : win;
        struct {
            uint32_t n, p_off, g_off, m_off, v_off;
            float lr_mult;
            uint32_t first, inner, rank, c_off;
        } pc = {(uint32_t)count, 0, 0, 0, 0, ap->lr_mult, (uint32_t)first, ap->inner, ap->rank, 0};
        vkl_bind b[7];
        uint32_t dummy;
        if (vkl_bind_span(g, p, first, count, &b[0], &pc.p_off, e) ||
            vkl_bind_span(g, gr, first, count, &b[1], &pc.g_off, e) ||
            vkl_bind_span(g, m, first, count, &b[2], &pc.m_off, e) || vkl_bind_span(g, v, first, count, &b[3], &pc.v_off, e) ||
            vkl_bind_span(g, h, 0, 8, &b[4], &dummy, e) || vkl_bind_span(g, s, 0, 4, &b[5], &dummy, e) ||
            vkl_bind_span(g, cnt, 0, ap->rank, &b[6], &pc.c_off, e))
            return -1;
        if (dummy) return vkl_fail(e, "internal: optimiser state not aligned");
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)count + 255) / 256, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_ADAMW_GATED, NULL, 0, b, 7, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

int vkl_adamw_set_rank_gate(vkl_adamw *a, int i, vkl_tensor *count, vkl_tensor *mask, int axis, vkl_err *e)
{
    if (i < 0 || i >= a->n) return vkl_fail(e, "AdamW: no parameter %d to gate", i);
    const vkl_tensor *p = a->p[i];
    if (axis < 0 || axis >= p->ndim) return vkl_fail(e, "AdamW: parameter %d has no axis %d", i, axis);
    int64_t R = p->shape[axis];
    if (a->codes[i]) return vkl_fail(e, "AdamW: a rank-gated parameter needs f32 optimiser state, not 8-bit");
    if (!count || !mask || count->graph || mask->graph || count->dtype != VKL_F32 || mask->dtype != VKL_F32 ||
        vkl_tensor_nelem(count) != R || vkl_tensor_nelem(mask) != R || !vkl_tensor_is_contiguous(count) ||
        !vkl_tensor_is_contiguous(mask))
        return vkl_fail(e, "AdamW: the rank gate of parameter %d needs persistent contiguous f32 count and mask of %lld "
                           "elements", i, (long long)R);
    a->gate_count[i] = count;
    a->gate_mask[i] = mask;
    a->gate_axis[i] = axis;
    return 0;
}

/* The gradient with the rows of the rank axis outside this step's block
 * zeroed (mask broadcast along the other axes): what the global norm sees. */
static vkl_tensor *gated_grad(vkl_adamw *a, vkl_graph *g, int i, vkl_tensor *grad)
{
    const vkl_tensor *p = a->p[i];
    int64_t shape[4] = {1, 1, 1, 1};
    shape[a->gate_axis[i]] = p->shape[a->gate_axis[i]];
    vkl_tensor *gp = vkl_reshape(g, grad, p->ndim, p->shape);
    return vkl_mul(g, gp, vkl_reshape(g, a->gate_mask[i], p->ndim, shape));
}

static int emit_clip(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    vkl_bind b[3];
    uint32_t off, d1, d2;
    if (vkl_bind_span(g, n->src[0], 0, 1, &b[0], &off, e) || vkl_bind_span(g, n->src[1], 0, 9, &b[1], &d1, e) ||
        vkl_bind_span(g, n->dst, 0, 4, &b[2], &d2, e))
        return -1;
    struct { uint32_t sq_off; } pc = {off};
    return vkl_emit_dispatch(g, VKL_KERNEL_CLIP_FACTOR, NULL, 0, b, 3, &pc, sizeof pc, 1, 1, 1, e);
}

/* The sum of a contiguous tensor's n elements when a row that long would not
 * fit one binding (a long 1-D parameter): windows of at most fit elements,
 * each summed, the sums added. */
static vkl_tensor *sum_in_windows(vkl_graph *g, vkl_tensor *t, int64_t n, int64_t fit)
{
    vkl_tensor *flat = vkl_reshape(g, t, 1, &n), *s = NULL;
    for (int64_t off = 0; off < n && flat; off += fit) {
        int64_t len = n - off < fit ? n - off : fit;
        vkl_tensor *part = vkl_sum_rows(g, vkl_view(g, flat, 2, (int64_t[]){1, len}, (int64_t[]){len, 1}, off));
        s = s ? vkl_add(g, s, part) : part;
    }
    return s;
}

static int append_grads(vkl_adamw *a, vkl_graph *g, vkl_tensor *const *grads, vkl_err *e);

int vkl_adamw_append(vkl_adamw *a, vkl_graph *g, vkl_tensor *const *grads, vkl_err *e)
{
    /* rank-gated parameters: the masked gradient feeds the norm and the update */
    vkl_tensor **gated = calloc((size_t)a->n + 1, sizeof *gated);
    if (!gated) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < a->n; i++)
        gated[i] = grads[i] && a->gate_count[i] ? gated_grad(a, g, i, grads[i]) : grads[i];
    int rc = append_grads(a, g, gated, e);
    free(gated);
    return rc;
}

static int append_grads(vkl_adamw *a, vkl_graph *g, vkl_tensor *const *grads, vkl_err *e)
{
    /* global squared norm over every gradient */
    vkl_tensor *sq = NULL;
    for (int i = 0; i < a->n; i++) {
        if (!grads[i]) continue;
        /* rows along the first dimension, then their sums: no row is longer
         * than one slice of the tensor, so large tensors stay within a binding */
        int64_t cnt = vkl_tensor_nelem(grads[i]), rows = grads[i]->ndim > 1 ? grads[i]->shape[0] : 1;
        int64_t fit = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 256);
        vkl_tensor *squares = vkl_unary(g, grads[i], VKL_UNARY_SQUARE, 1, 0), *s;
        if (cnt / rows <= fit && rows <= fit) {
            vkl_tensor *r = vkl_sum_rows(g, vkl_reshape(g, squares, 2, (int64_t[]){rows, cnt / rows}));
            s = rows > 1 ? vkl_sum_rows(g, vkl_reshape(g, r, 2, (int64_t[]){1, rows})) : r;
        } else {
            s = sum_in_windows(g, squares, cnt, fit);
        }
        sq = sq ? vkl_add(g, sq, s) : s;
    }
    if (!sq) return vkl_fail(e, "AdamW: no parameter has a gradient");
    vkl_tensor *src_clip[2] = {sq, a->hyper};
    if (!vkl_graph_add_node(g, "clip_factor", a->state, src_clip, 2, emit_clip, NULL, 0))
        return vkl_fail(e, "%s", vkl_graph_error(g));
    for (int i = 0; i < a->n; i++) {
        if (!grads[i]) continue;
        if (vkl_tensor_nelem(grads[i]) != vkl_tensor_nelem(a->p[i]) || !vkl_tensor_is_contiguous(grads[i]))
            return vkl_fail(e, "AdamW: gradient %d does not match its parameter", i);
        if (a->codes[i]) {
            if (vkl_adamw8_add_node(g, a->p[i], grads[i], a->codes[i], a->absmax[i], a->hyper, a->state, a->qmap,
                                    a->lr_mult[i], e))
                return -1;
            continue;
        }
        if (a->gate_count[i]) {
            int ax = a->gate_axis[i];
            int64_t inner = 1;
            for (int d = ax + 1; d < a->p[i]->ndim; d++) inner *= a->p[i]->shape[d];
            adamw_gated_params gp = {a->lr_mult[i], (uint32_t)inner, (uint32_t)a->p[i]->shape[ax]};
            vkl_tensor *src[6] = {grads[i], a->m[i], a->v[i], a->hyper, a->state, a->gate_count[i]};
            if (!vkl_graph_add_node(g, "adamw_gated", a->p[i], src, 6, emit_adamw_gated, &gp, sizeof gp))
                return vkl_fail(e, "%s", vkl_graph_error(g));
            continue;
        }
        adamw_params ap = {a->lr_mult[i]};
        /* the update reads the state written by clip_factor (src) and writes p in place */
        vkl_tensor *src[5] = {grads[i], a->m[i], a->v[i], a->hyper, a->state};
        if (!vkl_graph_add_node(g, "adamw", a->p[i], src, 5, emit_adamw, &ap, sizeof ap))
            return vkl_fail(e, "%s", vkl_graph_error(g));
    }
    return vkl_graph_failed(g) ? vkl_fail(e, "%s", vkl_graph_error(g)) : 0;
}

int vkl_adamw_prepare(vkl_adamw *a, int t, float lr, vkl_err *e)
{
    if (t < 1) return vkl_fail(e, "AdamW: steps count from 1");
    float h[9] = {lr,
                  a->o.beta1,
                  a->o.beta2,
                  a->o.eps,
                  a->o.weight_decay,
                  (float)(1.0 - pow(a->o.beta1, t)),
                  (float)(1.0 - pow(a->o.beta2, t)),
                  a->o.max_grad_norm,
                  1.0f / a->grad_scale};
    return vkl_tensor_upload(a->ctx, a->hyper, h, VKL_F32, e);
}

int vkl_adamw_set_grad_scale(vkl_adamw *a, float scale, vkl_err *e)
{
    if (!(scale > 0) || isinf(scale)) return vkl_fail(e, "AdamW: gradient scale %g is not a positive number", scale);
    a->grad_scale = scale;
    return 0;
}

int vkl_adamw_result(vkl_adamw *a, float *norm, int *skipped, vkl_err *e)
{
    float s[4];
    if (vkl_tensor_download(a->ctx, a->state, s, VKL_F32, e)) return -1;
    if (norm) *norm = s[0];
    if (skipped) *skipped = s[2] != 0;
    return 0;
}

/* The formulas of transformers' get_scheduler (what diffusers and kohya's
 * scripts use): warm-up is step / warmup, so the first step has rate 0. */
float vkl_lr_at(const vkl_lr_schedule *s, int step)
{
    if (step < s->warmup) return s->base_lr * (float)step / (float)s->warmup;
    if (s->kind == VKL_LR_CONSTANT) return s->base_lr;
    double span = s->total - s->warmup > 1 ? s->total - s->warmup : 1;
    double prog = (step - s->warmup) / span;
    switch (s->kind) {
    case VKL_LR_LINEAR: return (float)(s->base_lr * (prog >= 1 ? 0.0 : 1.0 - prog));
    case VKL_LR_COSINE: return (float)(s->base_lr * (prog >= 1 ? 0.0 : 0.5 * (1.0 + cos(M_PI * prog))));
    default: {
        if (prog >= 1.0) return 0.0f;
        int cycles = s->cycles > 0 ? s->cycles : 1;
        return (float)(s->base_lr * 0.5 * (1.0 + cos(M_PI * fmod(cycles * prog, 1.0))));
    }
    }
}

int vkl_lr_kind_parse(const char *name, vkl_lr_kind *k)
{
    static const char *names[] = {"constant", "linear", "cosine", "cosine_with_restarts"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, names[i])) {
            *k = (vkl_lr_kind)i;
            return 0;
        }
    return -1;
}
