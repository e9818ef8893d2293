#include "lora/lora_apply.h"

#include "ops.h"

#include <stdlib.h>
#include <string.h>

struct vkl_lora_set {
    vkl_ctx *ctx;
    vkl_lora_slot *v;
    int n;
    int nuses;
};

static int cmp_slot(const void *a, const void *b)
{
    return strcmp(((const vkl_lora_slot *)a)->module, ((const vkl_lora_slot *)b)->module);
}

const vkl_lora_slot *vkl_lora_set_find(const vkl_lora_set *s, const char *module)
{
    if (!s || !s->n) return NULL;
    vkl_lora_slot key = {.module = (char *)module};
    return bsearch(&key, s->v, (size_t)s->n, sizeof *s->v, cmp_slot);
}

int vkl_lora_set_count(const vkl_lora_set *s) { return s ? s->n : 0; }
const vkl_lora_slot *vkl_lora_set_at(const vkl_lora_set *s, int i) { return s && i >= 0 && i < s->n ? &s->v[i] : NULL; }

void vkl_lora_set_free(vkl_lora_set *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) {
        free(s->v[i].module);
        free(s->v[i].owner);
        vkl_tensor_free(s->v[i].a_cat);
        vkl_tensor_free(s->v[i].b_cat);
        vkl_tensor_free(s->v[i].rank_scale);
    }
    free(s->v);
    free(s);
}

static float mult_of(const vkl_lora_use *u, const char *module)
{
    return strncmp(module, "text_encoder", 12) == 0 ? u->te_mult : u->unet_mult;
}

static int upload_scales(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, vkl_err *e)
{
    float *sc = malloc(sizeof(float) * (size_t)slot->R);
    if (!sc) return vkl_fail(e, "out of host memory");
    for (int r = 0; r < slot->R; r++) {
        const vkl_lora_use *u = &uses[slot->owner[r]];
        const vkl_lora_module *m = vkl_lora_find(u->lora, slot->module);
        sc[r] = (float)(mult_of(u, slot->module) * (m ? m->scale : 0.0));
    }
    int rc = vkl_tensor_upload(s->ctx, slot->rank_scale, sc, VKL_F32, e);
    free(sc);
    return rc;
}

/* One module: concatenate the factors of every adapter that has it. */
static int build_slot(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, int n, vkl_err *e)
{
    const vkl_lora_module *first = NULL;
    int R = 0;
    for (int i = 0; i < n; i++) {
        const vkl_lora_module *m = vkl_lora_find(uses[i].lora, slot->module);
        if (!m) continue;
        if (m->kind != VKL_LORA_KIND_LORA || m->t[VKL_LORA_MID].data)
            return vkl_fail(e, "adapter module %s is %s%s: applying it at run time is not supported; bake it into the "
                               "model with 'vklora merge --model'", slot->module, vkl_lora_kind_name(m->kind),
                            m->t[VKL_LORA_MID].data ? " with a Tucker core" : "");
        if (first && (m->t[VKL_LORA_DOWN].ndim != first->t[VKL_LORA_DOWN].ndim ||
                      memcmp(m->wshape, first->wshape, sizeof m->wshape)))
            return vkl_fail(e, "adapters disagree on the shape of module %s", slot->module);
        if (!first) first = m;
        R += (int)m->t[VKL_LORA_DOWN].shape[0];
    }
    const vkl_lora_tensor *d0 = &first->t[VKL_LORA_DOWN], *u0 = &first->t[VKL_LORA_UP];
    slot->conv = d0->ndim == 4;
    slot->R = R;
    int64_t per_down = (int64_t)(vkl_lora_tensor_nelem(d0) / (uint64_t)d0->shape[0]);
    int64_t out = u0->shape[0];
    float *A = malloc(sizeof(float) * (size_t)(R * per_down)), *B = malloc(sizeof(float) * (size_t)(out * R));
    slot->owner = malloc(sizeof(int) * (size_t)R);
    if (!A || !B || !slot->owner) {
        free(A);
        free(B);
        return vkl_fail(e, "out of host memory");
    }
    int r0 = 0;
    for (int i = 0; i < n; i++) {
        const vkl_lora_module *m = vkl_lora_find(uses[i].lora, slot->module);
        if (!m) continue;
        const vkl_lora_tensor *d = &m->t[VKL_LORA_DOWN], *u = &m->t[VKL_LORA_UP];
        int r = (int)d->shape[0];
        memcpy(A + (size_t)r0 * per_down, d->data, sizeof(float) * (size_t)(r * per_down));
        for (int64_t o = 0; o < out; o++)
            for (int k = 0; k < r; k++) B[o * R + r0 + k] = u->data[o * r + k];
        for (int k = 0; k < r; k++) slot->owner[r0 + k] = i;
        r0 += r;
    }
    int64_t ashape[4] = {R, d0->shape[1], d0->ndim == 4 ? d0->shape[2] : 1, d0->ndim == 4 ? d0->shape[3] : 1};
    int64_t bshape[4] = {out, R, 1, 1};
    slot->a_cat = vkl_tensor_new(s->ctx, VKL_F32, d0->ndim, ashape, e);
    slot->b_cat = slot->a_cat ? vkl_tensor_new(s->ctx, VKL_F32, slot->conv ? 4 : 2, bshape, e) : NULL;
    slot->rank_scale = slot->b_cat ? vkl_tensor_new(s->ctx, VKL_F32, 1, (int64_t[]){R}, e) : NULL;
    int rc = !slot->rank_scale || vkl_tensor_upload(s->ctx, slot->a_cat, A, VKL_F32, e) ||
             vkl_tensor_upload(s->ctx, slot->b_cat, B, VKL_F32, e) || upload_scales(s, slot, uses, e);
    free(A);
    free(B);
    return rc ? -1 : 0;
}

int vkl_lora_set_build(vkl_ctx *c, const vkl_lora_use *uses, int n, vkl_lora_set **out, vkl_err *e)
{
    *out = NULL;
    vkl_lora_set *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->ctx = c;
    s->nuses = n;
    int cap = 0;
    for (int i = 0; i < n; i++) cap += uses[i].lora->n;
    s->v = calloc((size_t)(cap ? cap : 1), sizeof *s->v);
    if (!s->v) {
        free(s);
        return vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < n; i++)
        for (int k = 0; k < uses[i].lora->n; k++) {
            const vkl_lora_module *m = &uses[i].lora->m[k];
            if (!m->name) {
                vkl_lora_set_free(s);
                return vkl_fail(e, "adapter module %s was not resolved against the model", m->kname);
            }
            int seen = 0;
            for (int j = 0; j < s->n && !seen; j++) seen = !strcmp(s->v[j].module, m->name);
            if (!seen) s->v[s->n++].module = strdup(m->name);
        }
    qsort(s->v, (size_t)s->n, sizeof *s->v, cmp_slot);
    for (int j = 0; j < s->n; j++)
        if (build_slot(s, &s->v[j], uses, n, e)) {
            vkl_lora_set_free(s);
            return -1;
        }
    *out = s;
    return 0;
}

int vkl_lora_set_multipliers(vkl_lora_set *s, const vkl_lora_use *uses, int n, vkl_err *e)
{
    if (n != s->nuses) return vkl_fail(e, "the adapter set was built with %d adapters, not %d", s->nuses, n);
    for (int j = 0; j < s->n; j++)
        if (upload_scales(s, &s->v[j], uses, e)) return -1;
    return 0;
}

vkl_tensor *vkl_lora_linear(vkl_graph *g, const vkl_lora_set *s, const char *module, vkl_tensor *x, vkl_tensor *w,
                            vkl_tensor *bias)
{
    const vkl_lora_slot *slot = vkl_lora_set_find(s, module);
    if (!slot) return vkl_linear(g, x, w, bias);
    vkl_tensor *a = slot->a_cat, *b = slot->b_cat;
    /* 1x1 convolutions applied as linears on tokens: their factors are 4-D */
    if (a->ndim == 4) a = vkl_reshape(g, a, 2, (int64_t[]){a->shape[0], a->shape[1] * a->shape[2] * a->shape[3]});
    if (b->ndim == 4) b = vkl_reshape(g, b, 2, (int64_t[]){b->shape[0], b->shape[1]});
    return vkl_linear_lora(g, x, w, bias, a, b, slot->rank_scale);
}
