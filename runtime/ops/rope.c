/* Rotary position embedding (LLaMA; Llama 3's frequency scaling with
 * vkl_rope_scaled). Shader: rope.comp, whose rotation by the negated angles
 * is also the backward (the rotation is orthogonal). CPU reference:
 * runtime/ref/ref_rope.c. */
#include "op_util.h"

#include <math.h>
#include <string.h>

/* inverse: rotation by the negative angle (the backward: the rotation is orthogonal) */
typedef struct { int pos0; float theta; int inverse; vkl_rope_scaling sc; } rope_params;

static int emit_rope(vkl_graph *g, vkl_node *n, vkl_err *e)
{
    const rope_params *rp = (const rope_params *)n->params.bytes;
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_tensor *x = n->src[0], *y = n->dst;
    int64_t s4[4], st4[4];
    vkl_op_shape4(x, s4, st4);
    int64_t D = s4[3], rows = s4[0] * s4[1] * s4[2];
    int contiguous = vkl_tensor_is_contiguous(x);
    int64_t per = vkl_op_rows_per_window(c, rows, D, x->dtype, contiguous);
    if (per < 1) return vkl_fail(e, "a row of %lld elements exceeds the storage binding limit", (long long)D);
    double ln_theta = log((double)rp->theta);
    uint32_t spec[2] = {(uint32_t)x->dtype, (uint32_t)rp->inverse};
    for (int64_t r0 = 0; r0 < rows; r0 += per) {
        int64_t nr = rows - r0 < per ? rows - r0 : per;
        struct {
            uint32_t nrows, row_first, D, L, rshape[4], sx[4], sd, x_off, y_off, x_contig;
            int32_t pos0;
            float ln_theta_hi, ln_theta_lo;
            float sc_factor, sc_low, sc_high, sc_old_ctx;
        } pc;
        memset(&pc, 0, sizeof pc);
        pc.nrows = (uint32_t)nr;
        pc.row_first = (uint32_t)r0;
        pc.D = (uint32_t)D;
        pc.L = (uint32_t)s4[2];
        pc.rshape[0] = 1;
        for (int i = 0; i < 3; i++) {
            pc.rshape[i + 1] = (uint32_t)s4[i];
            pc.sx[i + 1] = (uint32_t)st4[i];
        }
        pc.sd = (uint32_t)st4[3];
        pc.x_contig = (uint32_t)contiguous;
        pc.pos0 = rp->pos0;
        pc.ln_theta_hi = (float)ln_theta;
        pc.ln_theta_lo = (float)(ln_theta - (double)pc.ln_theta_hi);
        pc.sc_factor = rp->sc.factor;
        pc.sc_low = rp->sc.low_freq_factor;
        pc.sc_high = rp->sc.high_freq_factor;
        pc.sc_old_ctx = rp->sc.old_ctx;
        vkl_bind bind[2];
        if ((contiguous ? vkl_bind_span(g, x, r0 * D, nr * D, &bind[0], &pc.x_off, e)
                        : vkl_bind_span(g, x, 0, vkl_tensor_span(x), &bind[0], &pc.x_off, e)) ||
            vkl_bind_span(g, y, r0 * D, nr * D, &bind[1], &pc.y_off, e))
            return -1;
        uint32_t gx, gy;
        vkl_op_grid(((uint64_t)(nr * (D / 2)) + 63) / 64, &gx, &gy);
        if (vkl_emit_dispatch(g, VKL_KERNEL_ROPE, spec, 2, bind, 2, &pc, sizeof pc, gx, gy, 1, e)) return -1;
    }
    return 0;
}

/* dx = the rotation of dy by the negative angles (dy of any strides); the
 * inverse node's own backward is the forward rotation. */
static int backward_rope(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc)
{
    if (!need[0]) return 0;
    rope_params p = *(const rope_params *)n->params.bytes;
    p.inverse = !p.inverse;
    vkl_tensor *dx = vkl_graph_tensor(g, VKL_F32, dy->ndim, dy->shape);
    vkl_node *b = dx ? vkl_graph_add_node(g, p.inverse ? "rope_grad" : "rope", dx, &dy, 1, emit_rope, &p, sizeof p) : NULL;
    if (!b) return -1;
    b->backward = backward_rope;
    dsrc[0] = dx;
    return 0;
}

vkl_tensor *vkl_rope(vkl_graph *g, vkl_tensor *x, int pos0, float theta)
{
    return vkl_rope_scaled(g, x, pos0, theta, NULL);
}

vkl_tensor *vkl_rope_scaled(vkl_graph *g, vkl_tensor *x, int pos0, float theta, const vkl_rope_scaling *sc)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    char s[96];
    vkl_tensor_describe(x, s, sizeof s);
    if (x->ndim < 2 || !vkl_op_float_type(x->dtype))
        return vkl_graph_set_error(g, "rope: input %s must be an f32, f16 or bf16 tensor [..., L, D]", s);
    int64_t D = x->shape[x->ndim - 1], L = x->shape[x->ndim - 2];
    if (D % 2) return vkl_graph_set_error(g, "rope: the head dimension of %s must be even", s);
    if (!(theta > 1) || !isfinite(theta)) return vkl_graph_set_error(g, "rope: theta %g must be > 1", (double)theta);
    /* angles up to 2^17 radians keep an exact range reduction (precise_math.glsl) */
    if (pos0 < 0 || (int64_t)pos0 + L > (1 << 17))
        return vkl_graph_set_error(g, "rope: positions %d..%lld must lie in [0, 2^17]", pos0, (long long)(pos0 + L));
    rope_params p = {pos0, theta, 0, {0, 0, 0, 0}};
    if (sc && sc->factor != 0) {
        if (!(sc->factor > 0) || !(sc->low_freq_factor > 0) || !(sc->high_freq_factor > sc->low_freq_factor) ||
            !(sc->old_ctx > 0))
            return vkl_graph_set_error(g, "rope: llama3 scaling needs factor > 0, 0 < low_freq_factor < "
                                          "high_freq_factor and original_max_position_embeddings > 0");
        p.sc = *sc;
    }
    vkl_tensor *y = vkl_graph_tensor(g, VKL_F32, x->ndim, x->shape);
    vkl_node *n = y ? vkl_graph_add_node(g, "rope", y, &x, 1, emit_rope, &p, sizeof p) : NULL;
    if (!n) return NULL;
    n->backward = backward_rope;
    return y;
}
