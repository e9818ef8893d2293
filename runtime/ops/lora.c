/* LoRA: the fused linear layer and in-place merge/unmerge of adapters.
 *
 * vkl_linear_lora is two matmul nodes (runtime/ops/matmul.c):
 *   h = (x . a_cat^T) * rank_scale       the down-projection, scaled per rank
 *                                        row in its epilogue: [..., R]
 *   y = x . w^T + bias + h . b_cat^T     the layer, with the up-projection as
 *                                        a second product in the same pass
 * so y is written once and W + delta W is never formed; rank_scale is read at
 * run time, so changing multipliers is an upload, not a re-plan.
 *
 * Merge/unmerge compute delta = scale * up . down into an f32 intermediate
 * with the same matmul both times, then add or subtract it in place
 * (shaders/lora_apply.comp says why that is exactly reversible).
 * CPU reference: runtime/ref/ref_lora.c. */
#include "matmul_internal.h"

#include <string.h>

vkl_tensor *vkl_linear_lora(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, vkl_tensor *a_cat,
                            vkl_tensor *b_cat, vkl_tensor *rank_scale)
{
    if (!x || !w || !a_cat || !b_cat || !rank_scale || vkl_graph_failed(g)) return NULL;
    char dw[96], da[96], db[96], ds[96];
    vkl_tensor_describe(w, dw, sizeof dw);
    vkl_tensor_describe(a_cat, da, sizeof da);
    vkl_tensor_describe(b_cat, db, sizeof db);
    vkl_tensor_describe(rank_scale, ds, sizeof ds);
    if (w->ndim != 2) return vkl_graph_set_error(g, "linear_lora: weight %s must be [out, in]", dw);
    int64_t out = w->shape[0], in = w->shape[1];
    if (a_cat->ndim != 2 || a_cat->shape[1] != in)
        return vkl_graph_set_error(g, "linear_lora: down weights %s must be [R, %lld] for weight %s", da, (long long)in, dw);
    int64_t R = a_cat->shape[0];
    if (b_cat->ndim != 2 || b_cat->shape[0] != out || b_cat->shape[1] != R)
        return vkl_graph_set_error(g, "linear_lora: up weights %s must be [%lld, %lld] for down weights %s", db,
                                   (long long)out, (long long)R, da);
    if (rank_scale->dtype != VKL_F32 || vkl_tensor_nelem(rank_scale) != R)
        return vkl_graph_set_error(g, "linear_lora: rank_scale %s must be f32 with %lld elements", ds, (long long)R);
    int perm[2] = {1, 0};
    vkl_matmul_extra down = {.col_scale = rank_scale, .alpha = 1.0f};
    vkl_tensor *h = vkl_matmul_general(g, "lora_down", x, vkl_permute(g, a_cat, perm), &down);
    vkl_matmul_extra up = {.bias = bias, .alpha = 1.0f, .a2 = h, .b2 = vkl_permute(g, b_cat, perm)};
    return vkl_matmul_general(g, "linear_lora", x, vkl_permute(g, w, perm), &up);
}

/* ---- merge / unmerge */

typedef struct { int unmerge; } apply_params;

typedef struct { uint32_t n, w_off, d_off; } apply_pc;

static int emit_apply(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const apply_params *ap = (const apply_params *)n->params.bytes;
    vkl_tensor *w = n->dst, *d = n->src[0];
    int64_t total = vkl_tensor_nelem(w);
    /* windows of w and d cover the same elements; an even count keeps f16 pairs whole */
    int64_t win = vkl_window_elems(vkl_graph_ctx(g), VKL_F32, 2);
    uint32_t spec[2] = {(uint32_t)w->dtype, (uint32_t)ap->unmerge};
    for (int64_t first = 0; first < total; first += win) {
        int64_t cnt = total - first < win ? total - first : win;
        vkl_bind b[2];
        apply_pc pc = {(uint32_t)cnt, 0, 0};
        if (vkl_bind_span(g, w, first, cnt, &b[0], &pc.w_off, e) || vkl_bind_span(g, d, first, cnt, &b[1], &pc.d_off, e))
            return -1;
        uint64_t items = w->dtype == VKL_F16 ? (uint64_t)(cnt + 1) / 2 : (uint64_t)cnt;
        uint32_t gx, gy;
        vkl_op_grid((items + 63) / 64, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_LORA_APPLY, spec, 2, b, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

static int lora_apply(vkl_ctx *c, vkl_tensor *w, vkl_tensor *down, vkl_tensor *up, float scale, int unmerge,
                      vkl_err *e)
{
    const char *what = unmerge ? "lora unmerge" : "lora merge";
    if (!w || !down || !up) return vkl_fail(e, "%s: missing tensor", what);
    char dw[96], dd[96], du[96];
    vkl_tensor_describe(w, dw, sizeof dw);
    vkl_tensor_describe(down, dd, sizeof dd);
    vkl_tensor_describe(up, du, sizeof du);
    if (w->graph || !w->buf || !vkl_tensor_is_contiguous(w) || (w->dtype != VKL_F32 && w->dtype != VKL_F16))
        return vkl_fail(e, "%s: weight %s must be a persistent contiguous f32 or f16 tensor", what, dw);
    if (w->ndim != 2 && w->ndim != 4) return vkl_fail(e, "%s: weight %s must be [out, in] or [out, in, kh, kw]", what, dw);
    if (down->graph || up->graph || !vkl_tensor_is_contiguous(down) || !vkl_tensor_is_contiguous(up) ||
        !vkl_op_float_type(down->dtype) || !vkl_op_float_type(up->dtype))
        return vkl_fail(e, "%s: adapter weights %s and %s must be persistent contiguous f32/f16/bf16 tensors", what, dd, du);
    int64_t out = w->shape[0], r = down->shape[0], fan = vkl_tensor_nelem(w) / (out ? out : 1);
    int ok = down->ndim == w->ndim;
    for (int i = 1; ok && i < w->ndim; i++) ok = down->shape[i] == w->shape[i];
    int up_ok = (up->ndim == 2 || (up->ndim == 4 && up->shape[2] == 1 && up->shape[3] == 1)) && up->shape[0] == out &&
                up->shape[1] == r;
    if (!ok || !up_ok)
        return vkl_fail(e, "%s: adapter %s (down) and %s (up) do not fit weight %s", what, dd, du, dw);
    vkl_graph *g = vkl_graph_new(c);
    if (!g) return vkl_fail(e, "out of host memory");
    int64_t ds[2] = {r, fan}, us[2] = {out, r};
    vkl_matmul_extra x = {.alpha = scale};
    vkl_tensor *delta = vkl_matmul_general(g, "lora_delta", vkl_reshape(g, up, 2, us), vkl_reshape(g, down, 2, ds), &x);
    apply_params p = {unmerge};
    vkl_tensor *src[1] = {delta};
    int rc = -1;
    if (delta && vkl_graph_add_node(g, unmerge ? "lora_unmerge" : "lora_merge", w, src, 1, emit_apply, &p, sizeof p)) {
        rc = vkl_graph_plan(g, e) || vkl_graph_run(g, e) ? -1 : 0;
        if (rc) vkl_err_prefix(e, "%s of %s: ", what, dw);
    } else {
        vkl_fail(e, "%s: %s", what, vkl_graph_error(g));
    }
    vkl_graph_free(g);
    return rc;
}

/* A full delta (LoHa, LoKr, DoRA computed elsewhere) through the same in-place node. */
static int delta_apply(vkl_ctx *c, vkl_tensor *w, vkl_tensor *delta, float scale, int unmerge, vkl_err *e)
{
    const char *what = unmerge ? "delta unmerge" : "delta merge";
    if (!w || !delta) return vkl_fail(e, "%s: missing tensor", what);
    char dw[96], dd[96];
    vkl_tensor_describe(w, dw, sizeof dw);
    vkl_tensor_describe(delta, dd, sizeof dd);
    if (w->graph || !w->buf || !vkl_tensor_is_contiguous(w) || (w->dtype != VKL_F32 && w->dtype != VKL_F16))
        return vkl_fail(e, "%s: weight %s must be a persistent contiguous f32 or f16 tensor", what, dw);
    if (delta->graph || !delta->buf || !vkl_tensor_is_contiguous(delta) || delta->dtype != VKL_F32)
        return vkl_fail(e, "%s: delta %s must be a persistent contiguous f32 tensor", what, dd);
    if (vkl_tensor_nelem(delta) != vkl_tensor_nelem(w))
        return vkl_fail(e, "%s: delta %s does not fit weight %s (element counts differ)", what, dd, dw);
    vkl_graph *g = vkl_graph_new(c);
    if (!g) return vkl_fail(e, "out of host memory");
    /* scale 1 (the usual case: the caller folded the multiplier in) reads delta as is */
    vkl_tensor *d = scale == 1.0f ? delta : vkl_scale(g, delta, scale);
    apply_params p = {unmerge};
    vkl_tensor *src[1] = {d};
    int rc = -1;
    if (d && vkl_graph_add_node(g, unmerge ? "delta_unmerge" : "delta_merge", w, src, 1, emit_apply, &p, sizeof p)) {
        rc = vkl_graph_plan(g, e) || vkl_graph_run(g, e) ? -1 : 0;
        if (rc) vkl_err_prefix(e, "%s of %s: ", what, dw);
    } else {
        vkl_fail(e, "%s: %s", what, vkl_graph_error(g));
    }
    vkl_graph_free(g);
    return rc;
}

int vkl_delta_merge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *delta, float scale, vkl_err *e)
{
    return delta_apply(c, w, delta, scale, 0, e);
}

int vkl_delta_unmerge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *delta, float scale, vkl_err *e)
{
    return delta_apply(c, w, delta, scale, 1, e);
}

int vkl_lora_merge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *down, vkl_tensor *up, float scale, vkl_err *e)
{
    return lora_apply(c, w, down, up, scale, 0, e);
}

int vkl_lora_unmerge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *down, vkl_tensor *up, float scale, vkl_err *e)
{
    return lora_apply(c, w, down, up, scale, 1, e);
}
