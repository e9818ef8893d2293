#include "grad_accum.h"

#include "ops.h"

#include <stdlib.h>

struct vkl_grad_accum {
    vkl_ctx *ctx;
    int n;
    vkl_tensor **buf;
};

vkl_grad_accum *vkl_grad_accum_new(vkl_ctx *c, vkl_tensor *const *params, int n, vkl_err *e)
{
    vkl_grad_accum *a = calloc(1, sizeof *a);
    if (!a || !(a->buf = calloc((size_t)n + 1, sizeof *a->buf))) {
        free(a);
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    a->ctx = c;
    a->n = n;
    for (int i = 0; i < n; i++) {
        a->buf[i] = vkl_tensor_new(c, VKL_F32, params[i]->ndim, params[i]->shape, e);
        if (!a->buf[i]) {
            vkl_err_prefix(e, "gradient accumulation buffer %d: ", i);
            vkl_grad_accum_free(a);
            return NULL;
        }
    }
    if (vkl_grad_accum_reset(a, e)) {
        vkl_grad_accum_free(a);
        return NULL;
    }
    return a;
}

void vkl_grad_accum_free(vkl_grad_accum *a)
{
    if (!a) return;
    for (int i = 0; i < a->n; i++) vkl_tensor_free(a->buf[i]);
    free(a->buf);
    free(a);
}

int vkl_grad_accum_count(const vkl_grad_accum *a) { return a->n; }
vkl_tensor *vkl_grad_accum_buffer(const vkl_grad_accum *a, int i) { return i >= 0 && i < a->n ? a->buf[i] : NULL; }
vkl_tensor *const *vkl_grad_accum_buffers(const vkl_grad_accum *a) { return a->buf; }

int vkl_grad_accum_append_add(vkl_grad_accum *a, vkl_graph *g, vkl_tensor *const *grads, float scale, vkl_err *e)
{
    for (int i = 0; i < a->n; i++)
        if (grads[i] && !vkl_accumulate_into(g, grads[i], a->buf[i], scale, 1.0f))
            return vkl_fail(e, "gradient accumulation: %s", vkl_graph_error(g));
    return 0;
}

int vkl_grad_accum_append_clear(vkl_grad_accum *a, vkl_graph *g, vkl_err *e)
{
    for (int i = 0; i < a->n; i++)
        if (!vkl_accumulate_into(g, NULL, a->buf[i], 0.0f, 0.0f))
            return vkl_fail(e, "gradient accumulation: %s", vkl_graph_error(g));
    return 0;
}

vkl_graph *vkl_grad_accum_update_graph(vkl_grad_accum *a, vkl_adamw *opt, vkl_err *e)
{
    vkl_graph *g = vkl_graph_new(a->ctx);
    if (!g) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    if (vkl_adamw_append(opt, g, a->buf, e) || vkl_grad_accum_append_clear(a, g, e) || vkl_graph_plan(g, e)) {
        vkl_err_prefix(e, "optimiser step on accumulated gradients: ");
        vkl_graph_free(g);
        return NULL;
    }
    return g;
}

int vkl_grad_accum_reset(vkl_grad_accum *a, vkl_err *e)
{
    for (int i = 0; i < a->n; i++) {
        size_t cnt = (size_t)vkl_tensor_nelem(a->buf[i]);
        float *zero = calloc(cnt ? cnt : 1, sizeof(float));
        int rc = !zero ? vkl_fail(e, "out of host memory") : vkl_tensor_upload(a->ctx, a->buf[i], zero, VKL_F32, e);
        free(zero);
        if (rc) return -1;
    }
    return 0;
}
