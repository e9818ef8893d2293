#include "lora/lora_merge_weights.h"

#include "lora/lora_delta.h"

#include <stdlib.h>
#include <string.h>

static float mult_of(const vkl_lora_use *u, const char *module)
{
    return strncmp(module, "text_encoder", 12) == 0 ? u->te_mult : u->unet_mult;
}

static vkl_tensor *weight_of(vkl_weights *w, const vkl_lora_module *m, vkl_err *e)
{
    char name[600];
    if (!m->name) {
        vkl_fail(e, "adapter module %s was not resolved against the model", m->kname);
        return NULL;
    }
    snprintf(name, sizeof name, "%s.weight", m->name);
    vkl_tensor *t = vkl_weights_find(w, name);
    if (!t) vkl_fail(e, "adapter module %s: the model has no weight %s", m->name, name);
    else if ((uint64_t)vkl_tensor_nelem(t) != vkl_lora_wnelem(m)) {
        vkl_fail(e, "adapter module %s changes %llu elements, the model's %s has %lld", m->name,
                 (unsigned long long)vkl_lora_wnelem(m), name, (long long)vkl_tensor_nelem(t));
        return NULL;
    }
    return t;
}

/* Host delta (times mult) added on the device. */
static int merge_full(vkl_ctx *c, vkl_tensor *w, const vkl_lora_module *m, float mult, vkl_err *e)
{
    uint64_t n = vkl_lora_wnelem(m);
    float *f = malloc(sizeof(float) * n), *base = NULL;
    double *d = malloc(sizeof(double) * n);
    int rc = !f || !d ? vkl_fail(e, "out of host memory") : 0;
    if (!rc && m->kind == VKL_LORA_KIND_DORA) {
        base = f; /* the base weight as the model holds it, read back into f */
        rc = vkl_tensor_download(c, w, base, VKL_F32, e);
    }
    if (!rc) rc = vkl_lora_delta(m, base, d, e);
    for (uint64_t i = 0; !rc && i < n; i++) f[i] = (float)(mult * d[i]);
    vkl_tensor *t = rc ? NULL : vkl_tensor_new(c, VKL_F32, w->ndim, w->shape, e);
    if (!rc) rc = !t || vkl_tensor_upload(c, t, f, VKL_F32, e) || vkl_delta_merge(c, w, t, 1.0f, e) ? -1 : 0;
    vkl_tensor_free(t);
    free(f);
    free(d);
    return rc;
}

static int merge_low_rank(vkl_ctx *c, vkl_tensor *w, const vkl_lora_module *m, float mult, vkl_err *e)
{
    const vkl_lora_tensor *d = &m->t[VKL_LORA_DOWN], *u = &m->t[VKL_LORA_UP];
    /* the factors in the weight's rank (a linear target may come with 1x1 conv factors and back) */
    int64_t r = u->shape[1], ds[4] = {r, 1, 1, 1}, us[4] = {w->shape[0], r, 1, 1};
    for (int i = 1; i < w->ndim; i++) ds[i] = w->shape[i];
    vkl_tensor *td = vkl_tensor_new(c, VKL_F32, w->ndim, ds, e);
    vkl_tensor *tu = td ? vkl_tensor_new(c, VKL_F32, w->ndim, us, e) : NULL;
    int rc = !tu || vkl_tensor_upload(c, td, d->data, VKL_F32, e) || vkl_tensor_upload(c, tu, u->data, VKL_F32, e) ||
                     vkl_lora_merge(c, w, td, tu, (float)(mult * m->scale), e)
                 ? -1
                 : 0;
    vkl_tensor_free(td);
    vkl_tensor_free(tu);
    return rc;
}

/* IA3: W * (1 + m (l - 1)) on rows (output vector) or columns (input vector),
 * in f32 as PEFT merges; with m = 1 the factor is l exactly. */
static int merge_ia3(vkl_ctx *c, vkl_tensor *w, const vkl_lora_module *m, float mult, vkl_err *e)
{
    if (w->ndim != 2) return vkl_fail(e, "IA3 on a %dD weight; only linear weights are supported", w->ndim);
    int64_t O = w->shape[0], I = w->shape[1];
    float *f = malloc(sizeof(float) * (size_t)(O * I));
    int rc = !f ? vkl_fail(e, "out of host memory") : vkl_tensor_download(c, w, f, VKL_F32, e);
    const float *l = m->t[VKL_LORA_IA3].data;
    for (int64_t o = 0; !rc && o < O; o++)
        for (int64_t i = 0; i < I; i++) {
            float v = l[m->on_input ? i : o];
            f[o * I + i] *= mult == 1.0f ? v : (float)(1.0 + (double)mult * ((double)v - 1.0));
        }
    if (!rc) rc = vkl_tensor_upload(c, w, f, VKL_F32, e);
    free(f);
    return rc;
}

int vkl_lora_merge_weights(vkl_ctx *c, vkl_weights *w, const vkl_lora_use *uses, int n, vkl_err *e)
{
    /* refuse two DoRA modules on one layer before changing anything */
    for (int i = 0; i < n; i++)
        for (int k = 0; k < uses[i].lora->n; k++) {
            const vkl_lora_module *m = &uses[i].lora->m[k];
            if (m->kind != VKL_LORA_KIND_DORA) continue;
            for (int j = i + 1; j < n; j++) {
                const vkl_lora_module *o = m->name ? vkl_lora_find(uses[j].lora, m->name) : NULL;
                if (o && o->kind == VKL_LORA_KIND_DORA)
                    return vkl_fail(e, "module %s has DoRA modules in two adapters; at most one DoRA adapter may "
                                       "change a layer", m->name);
            }
        }
    /* DoRA, then additive kinds, then IA3 scaling the sum (as at run time) */
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < n; i++)
            for (int k = 0; k < uses[i].lora->n; k++) {
                const vkl_lora_module *m = &uses[i].lora->m[k];
                int p = m->kind == VKL_LORA_KIND_DORA ? 0 : m->kind == VKL_LORA_KIND_IA3 ? 2 : 1;
                if (p != pass) continue;
                vkl_tensor *t = weight_of(w, m, e);
                if (!t) return -1;
                float mult = mult_of(&uses[i], m->name);
                int plain = m->kind == VKL_LORA_KIND_LORA && !m->t[VKL_LORA_MID].data;
                int rc = pass == 2 ? merge_ia3(c, t, m, mult, e)
                         : plain   ? merge_low_rank(c, t, m, mult, e)
                                   : merge_full(c, t, m, mult, e);
                if (rc) {
                    vkl_err_prefix(e, "merging %s: ", m->name);
                    return -1;
                }
            }
    return 0;
}
