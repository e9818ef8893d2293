/* DoRA (PEFT use_dora) modules of a LLaMA: W' = m * (W + s B A) / ||W + s B A||_row,
 * applied as y = (m / n) * (x W^T + s (x A^T) B^T). PEFT computes n from the
 * current factors and detaches it, so n is recomputed on the device into a
 * persistent tensor that the forward reads as a constant. */
#include "llama/llama.h"
#include "quant.h"

#include "ops.h"

#include <stdlib.h>
#include <string.h>

void vkl_llama_dora_free(vkl_llama_dora *d)
{
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        vkl_llama_dora_mod *x = &d->v[i];
        free(x->module);
        vkl_tensor_free(x->a);
        vkl_tensor_free(x->b);
        vkl_tensor_free(x->scale);
        vkl_tensor_free(x->mag);
        vkl_tensor_free(x->norm);
    }
    free(d->v);
    free(d);
}

static vkl_tensor *upload(vkl_ctx *c, const vkl_lora_tensor *t, vkl_err *e)
{
    vkl_tensor *d = vkl_tensor_new(c, VKL_F32, t->ndim, t->shape, e);
    if (d && vkl_tensor_upload(c, d, t->data, VKL_F32, e)) {
        vkl_tensor_free(d);
        return NULL;
    }
    return d;
}

int vkl_llama_dora_build(const vkl_llama *m, const vkl_lora *l, float mult, vkl_llama_dora **out, vkl_err *e)
{
    *out = NULL;
    vkl_llama_dora *d = calloc(1, sizeof *d);
    if (d) d->v = calloc((size_t)(l->n ? l->n : 1), sizeof *d->v);
    if (!d || !d->v) {
        free(d);
        return vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *mo = &l->m[i];
        if (mo->kind != VKL_LORA_KIND_DORA || !mo->name || mo->t[VKL_LORA_DOWN].ndim != 2 ||
            mo->t[VKL_LORA_MAG].ndim != 1) {
            vkl_llama_dora_free(d);
            return vkl_fail(e, "adapter module %s is not a PEFT DoRA linear module", vkl_lora_module_label(mo));
        }
        char wname[160];
        snprintf(wname, sizeof wname, "%s.weight", mo->name);
        const vkl_tensor *w = vkl_weights_find(m->w, wname);
        if (!w || w->shape[0] != mo->t[VKL_LORA_UP].shape[0] || w->shape[1] != mo->t[VKL_LORA_DOWN].shape[1]) {
            vkl_llama_dora_free(d);
            return vkl_fail(e, "DoRA module %s does not match a weight of the model", mo->name);
        }
        if (vkl_dtype_is_quant(w->dtype)) {
            /* the norm ||W + s B A|| needs W itself, which a quantised base only has inside the matmul */
            vkl_llama_dora_free(d);
            return vkl_fail(e, "DoRA module %s: DoRA needs an f32 or f16 base, not %s", mo->name,
                            vkl_dtype_name(w->dtype));
        }
        vkl_llama_dora_mod *x = &d->v[d->n++];
        x->module = strdup(mo->name);
        x->s = (float)(mo->scale * mult);
        int64_t R = mo->t[VKL_LORA_DOWN].shape[0], out_dim = w->shape[0];
        float *sc = malloc(sizeof(float) * (size_t)R);
        for (int64_t r = 0; sc && r < R; r++) sc[r] = x->s;
        x->a = upload(m->ctx, &mo->t[VKL_LORA_DOWN], e);
        x->b = x->a ? upload(m->ctx, &mo->t[VKL_LORA_UP], e) : NULL;
        x->mag = x->b ? upload(m->ctx, &mo->t[VKL_LORA_MAG], e) : NULL;
        x->scale = x->mag ? vkl_tensor_new(m->ctx, VKL_F32, 1, &R, e) : NULL;
        x->norm = x->scale ? vkl_tensor_new(m->ctx, VKL_F32, 1, &out_dim, e) : NULL;
        int rc = !x->module || !sc || !x->norm || vkl_tensor_upload(m->ctx, x->scale, sc, VKL_F32, e);
        free(sc);
        if (rc) {
            if (!x->module || !sc) vkl_fail(e, "out of host memory");
            vkl_llama_dora_free(d);
            return -1;
        }
    }
    *out = d;
    return 0;
}

int vkl_llama_dora_norms(vkl_graph *g, const vkl_llama *m, const vkl_llama_dora *d)
{
    for (int i = 0; d && i < d->n; i++) {
        const vkl_llama_dora_mod *x = &d->v[i];
        vkl_tensor *w = vkl_weights_need(m->w, g, "%s.weight", x->module);
        vkl_tensor *wd = vkl_add(g, w, vkl_scale(g, vkl_matmul(g, x->b, x->a), x->s));
        vkl_tensor *n = vkl_unary(g, vkl_sum_rows(g, vkl_mul(g, wd, wd)), VKL_UNARY_SQRT, 1.0f, 0.0f);
        vkl_copy_into(g, n, x->norm);
    }
    return vkl_graph_failed(g) ? -1 : 0;
}

int vkl_llama_dora_merge(const vkl_llama *m, const vkl_llama_dora *d, vkl_err *e)
{
    vkl_graph *g = vkl_graph_new(m->ctx);
    int rc = vkl_llama_dora_norms(g, m, d);
    for (int i = 0; !rc && d && i < d->n; i++) {
        const vkl_llama_dora_mod *x = &d->v[i];
        vkl_tensor *w = vkl_weights_need(m->w, g, "%s.weight", x->module);
        if (!w || w->dtype != VKL_F32) {
            rc = vkl_fail(e, "DoRA merge: %s.weight must be an f32 weight", x->module);
            break;
        }
        int64_t out = w->shape[0];
        vkl_tensor *f = vkl_reshape(g, vkl_div(g, x->mag, x->norm), 2, (int64_t[]){out, 1});
        vkl_tensor *wd = vkl_add(g, w, vkl_scale(g, vkl_matmul(g, x->b, x->a), x->s));
        vkl_copy_into(g, vkl_mul(g, wd, f), w);
    }
    if (!rc && vkl_graph_failed(g)) rc = vkl_fail(e, "DoRA merge: %s", vkl_graph_error(g));
    rc = rc || vkl_graph_plan(g, e) || vkl_graph_run(g, e);
    vkl_graph_free(g);
    return rc;
}
