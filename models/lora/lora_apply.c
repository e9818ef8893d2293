#include "lora/lora_apply.h"

#include "lora/lora_delta.h"

#include <stdlib.h>
#include <string.h>

struct vkl_lora_set {
    vkl_ctx *ctx;
    const vkl_weights *base; /* for DoRA layers, may be NULL */
    vkl_lora_slot *v;
    int n;
    int nuses;
    int train; /* vkl_lora_set_build_train */
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
        vkl_lora_slot *sl = &s->v[i];
        free(sl->module);
        free(sl->owner);
        vkl_tensor_free(sl->a_cat);
        vkl_tensor_free(sl->b_cat);
        vkl_tensor_free(sl->rank_scale);
        for (int k = 0; k < sl->n_full; k++) {
            vkl_tensor_free(sl->full[k].delta);
            vkl_tensor_free(sl->full[k].mult);
            for (int r = 0; r < VKL_LORA_ROLES; r++) vkl_tensor_free(sl->full[k].tf[r]);
        }
        free(sl->full);
        vkl_tensor_free(sl->w_dora);
        for (int r = 0; r < VKL_LORA_ROLES; r++) vkl_tensor_free(sl->tf[r]);
    }
    free(s->v);
    free(s);
}

static float mult_of(const vkl_lora_use *u, const char *module)
{
    return strncmp(module, "text_encoder", 12) == 0 ? u->te_mult : u->unet_mult;
}

/* Modules that take the rank-concatenated path: LoRA / LoCon, Tucker or not. */
static int low_rank(const vkl_lora_module *m) { return m->kind == VKL_LORA_KIND_LORA; }

static int64_t module_rank(const vkl_lora_module *m) { return m->t[VKL_LORA_UP].shape[1]; }

static uint64_t slot_nelem(const vkl_lora_slot *sl)
{
    uint64_t n = 1;
    for (int i = 0; i < sl->wndim; i++) n *= (uint64_t)sl->wshape[i];
    return n;
}

static int upload_scales(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, vkl_err *e)
{
    if (!slot->R) return 0;
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

/* W' = W + mult * (DoRA delta) into the slot's replacement weight. */
static int upload_dora(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, vkl_err *e)
{
    const vkl_lora_use *u = &uses[slot->dora_owner];
    const vkl_lora_module *m = vkl_lora_find(u->lora, slot->module);
    float mult = mult_of(u, slot->module);
    char wname[600];
    snprintf(wname, sizeof wname, "%s.weight", slot->module);
    vkl_tensor *w = s->base ? vkl_weights_find(s->base, wname) : NULL;
    if (!w)
        return vkl_fail(e, "adapter module %s is DoRA, which needs the model's weight %s%s", slot->module, wname,
                        s->base ? ", and the model has none" : " (the adapter set was built without model weights)");
    uint64_t n = slot_nelem(slot);
    if ((uint64_t)vkl_tensor_nelem(w) != n)
        return vkl_fail(e, "DoRA module %s: the model's %s has %lld elements, the adapter expects %llu", slot->module,
                        wname, (long long)vkl_tensor_nelem(w), (unsigned long long)n);
    float *base = malloc(sizeof(float) * n);
    double *d = malloc(sizeof(double) * n);
    int rc = !base || !d ? vkl_fail(e, "out of host memory") : 0;
    if (!rc) rc = vkl_tensor_download(s->ctx, w, base, VKL_F32, e);
    if (!rc) rc = vkl_lora_delta(m, base, d, e);
    if (!rc) {
        for (uint64_t i = 0; i < n; i++) base[i] = (float)(base[i] + mult * d[i]);
        rc = vkl_tensor_upload(s->ctx, slot->w_dora, base, VKL_F32, e);
    }
    if (!rc) slot->dora_mult = mult;
    free(base);
    free(d);
    return rc;
}

static int upload_mults(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, vkl_err *e)
{
    if (upload_scales(s, slot, uses, e)) return -1;
    for (int k = 0; k < slot->n_full; k++) {
        float mu = mult_of(&uses[slot->full[k].owner], slot->module);
        if (vkl_tensor_upload(s->ctx, slot->full[k].mult, &mu, VKL_F32, e)) return -1;
    }
    if (slot->w_dora && slot->dora_mult != mult_of(&uses[slot->dora_owner], slot->module))
        return upload_dora(s, slot, uses, e);
    return 0;
}

/* The down factor of a LoRA module as rows of the slot's a_cat: Tucker LoCon
 * folds its core in (exact: the product is linear in each factor). */
static void down_rows(const vkl_lora_module *m, int64_t per_down, float *dst)
{
    const vkl_lora_tensor *d = &m->t[VKL_LORA_DOWN], *mid = &m->t[VKL_LORA_MID];
    if (!mid->data) {
        memcpy(dst, d->data, sizeof(float) * (size_t)(module_rank(m) * per_down));
        return;
    }
    int64_t R = mid->shape[0], S = mid->shape[1], KK = mid->shape[2] * mid->shape[3], I = per_down / KK;
    for (int64_t r = 0; r < R; r++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t q = 0; q < KK; q++) {
                double acc = 0;
                for (int64_t s = 0; s < S; s++) acc += (double)mid->data[(r * S + s) * KK + q] * d->data[s * I + i];
                dst[(r * I + i) * KK + q] = (float)acc;
            }
}

static int check_module(const vkl_lora_slot *slot, const vkl_lora_module *m, int64_t per_down, vkl_err *e)
{
    if (m->wndim != slot->wndim || memcmp(m->wshape, slot->wshape, sizeof m->wshape))
        return vkl_fail(e, "adapters disagree on the shape of module %s", slot->module);
    if (!low_rank(m)) return 0;
    const vkl_lora_tensor *d = &m->t[VKL_LORA_DOWN], *mid = &m->t[VKL_LORA_MID];
    uint64_t want = mid->data ? (uint64_t)mid->shape[1] * (uint64_t)(per_down / (mid->shape[2] * mid->shape[3]))
                              : (uint64_t)module_rank(m) * (uint64_t)per_down;
    if (vkl_lora_tensor_nelem(d) != want || (mid->data && mid->shape[0] != module_rank(m)))
        return vkl_fail(e, "adapter module %s: factor shapes do not fit the weight", slot->module);
    return 0;
}

/* The rank-concatenated factors of every LoRA module of the slot. */
static int build_low_rank(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, int n, int64_t per_down,
                          vkl_err *e)
{
    int R = slot->R;
    int64_t out = slot->wshape[0];
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
        if (!m || !low_rank(m)) continue;
        const vkl_lora_tensor *u = &m->t[VKL_LORA_UP];
        int r = (int)module_rank(m);
        down_rows(m, per_down, A + (size_t)r0 * per_down);
        for (int64_t o = 0; o < out; o++)
            for (int k = 0; k < r; k++) B[o * R + r0 + k] = u->data[o * r + k];
        for (int k = 0; k < r; k++) slot->owner[r0 + k] = i;
        r0 += r;
    }
    int conv = slot->wndim == 4;
    int64_t ashape[4] = {R, slot->wshape[1], conv ? slot->wshape[2] : 1, conv ? slot->wshape[3] : 1};
    int64_t bshape[4] = {out, R, 1, 1};
    slot->conv = conv;
    slot->a_cat = vkl_tensor_new(s->ctx, VKL_F32, conv ? 4 : 2, ashape, e);
    slot->b_cat = slot->a_cat ? vkl_tensor_new(s->ctx, VKL_F32, conv ? 4 : 2, bshape, e) : NULL;
    slot->rank_scale = slot->b_cat ? vkl_tensor_new(s->ctx, VKL_F32, 1, (int64_t[]){R}, e) : NULL;
    int rc = !slot->rank_scale || vkl_tensor_upload(s->ctx, slot->a_cat, A, VKL_F32, e) ||
             vkl_tensor_upload(s->ctx, slot->b_cat, B, VKL_F32, e);
    free(A);
    free(B);
    return rc ? -1 : 0;
}

/* A LoHa / LoKr module on the device: its factors (composed per graph), or
 * for Tucker forms, which have no graph form, the full f32 delta. */
static int build_full(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_module *m, int owner, vkl_err *e)
{
    vkl_lora_full *x = &slot->full[slot->n_full++];
    x->owner = owner;
    x->kind = m->kind;
    x->scale = (float)m->scale;
    x->mult = vkl_tensor_new(s->ctx, VKL_F32, 1, (int64_t[]){1}, e);
    if (!x->mult) return -1;
    int lo = m->kind == VKL_LORA_KIND_LOHA ? VKL_LORA_HADA_W1A : VKL_LORA_LOKR_W1;
    int hi = m->kind == VKL_LORA_KIND_LOHA ? VKL_LORA_HADA_W2B : VKL_LORA_LOKR_W2B;
    /* Tucker cores and weight-decomposed (magnitude) forms keep the full delta */
    if (!m->t[VKL_LORA_HADA_T1].data && !m->t[VKL_LORA_LOKR_T2].data && !m->t[VKL_LORA_MAG].data) {
        for (int r = lo; r <= hi; r++) {
            const vkl_lora_tensor *t = &m->t[r];
            if (!t->data) continue;
            x->tf[r] = vkl_tensor_new(s->ctx, VKL_F32, t->ndim, t->shape, e);
            if (!x->tf[r] || vkl_tensor_upload(s->ctx, x->tf[r], t->data, VKL_F32, e)) return -1;
        }
        return 0;
    }
    uint64_t n = slot_nelem(slot);
    double *d = malloc(sizeof(double) * n);
    float *f = malloc(sizeof(float) * n);
    int rc = !d || !f ? vkl_fail(e, "out of host memory") : vkl_lora_delta(m, NULL, d, e);
    for (uint64_t i = 0; !rc && i < n; i++) f[i] = (float)d[i];
    if (!rc) {
        x->delta = vkl_tensor_new(s->ctx, VKL_F32, slot->wndim, slot->wshape, e);
        rc = !x->delta || vkl_tensor_upload(s->ctx, x->delta, f, VKL_F32, e) ? -1 : 0;
    }
    free(d);
    free(f);
    return rc;
}

/* 1x1 convolutions applied as linears on tokens: their 4-D tensors as matrices */
static vkl_tensor *as_matrix(vkl_graph *g, vkl_tensor *t)
{
    if (!t || t->ndim != 4) return t;
    return vkl_reshape(g, t, 2, (int64_t[]){t->shape[0], t->shape[1] * t->shape[2] * t->shape[3]});
}

/* The delta of full module k as [out, in * kernel]: composed from its factors. */
static vkl_tensor *full_delta(vkl_graph *g, const vkl_lora_slot *slot, int k)
{
    const vkl_lora_full *x = &slot->full[k];
    if (x->delta) return as_matrix(g, x->delta);
    return vkl_lora_factored_delta(g, x->tf, x->kind, x->scale, slot->module);
}

/* Training mode: a LoHa / LoKr / DoRA module's factors as persistent tensors. */
static int build_trainable(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_module *m, vkl_err *e)
{
    if (m->t[VKL_LORA_HADA_T1].data || m->t[VKL_LORA_LOKR_T2].data)
        return vkl_fail(e, "adapter module %s: Tucker factors cannot be trained", slot->module);
    slot->trained = 1;
    slot->tkind = m->kind;
    slot->tscale = (float)m->scale;
    for (int r = 0; r < VKL_LORA_ROLES; r++) {
        const vkl_lora_tensor *t = &m->t[r];
        if (!t->data) continue;
        slot->tf[r] = vkl_tensor_new(s->ctx, VKL_F32, t->ndim, t->shape, e);
        if (!slot->tf[r] || vkl_tensor_upload(s->ctx, slot->tf[r], t->data, VKL_F32, e)) return -1;
    }
    return 0;
}

/* One module: every adapter that has it, by kind. */
static int build_slot(vkl_lora_set *s, vkl_lora_slot *slot, const vkl_lora_use *uses, int n, vkl_err *e)
{
    const vkl_lora_module *first = NULL;
    int n_full = 0;
    slot->dora_owner = -1;
    for (int i = 0; i < n && !first; i++) first = vkl_lora_find(uses[i].lora, slot->module);
    slot->wndim = first->wndim;
    memcpy(slot->wshape, first->wshape, sizeof slot->wshape);
    int64_t per_down = (int64_t)(slot_nelem(slot) / (uint64_t)slot->wshape[0]);
    for (int i = 0; i < n; i++) {
        const vkl_lora_module *m = vkl_lora_find(uses[i].lora, slot->module);
        if (!m) continue;
        if (check_module(slot, m, per_down, e)) return -1;
        if (m->kind == VKL_LORA_KIND_IA3)
            return vkl_fail(e, "module %s: IA3 scales the layer instead of adding to it; the adapter set does not run "
                               "it (merge it into the weights, or for LLaMA use its IA3 vectors)", slot->module);
        if (s->train && !low_rank(m)) {
            if (build_trainable(s, slot, m, e)) return -1;
            continue;
        }
        if (s->train && m->t[VKL_LORA_MID].data)
            return vkl_fail(e, "adapter module %s: Tucker factors cannot be trained", slot->module);
        if (low_rank(m)) slot->R += (int)module_rank(m);
        else if (m->kind == VKL_LORA_KIND_DORA) {
            if (slot->dora_owner >= 0)
                return vkl_fail(e, "module %s has DoRA modules in two adapters; at most one DoRA adapter may change a "
                                   "layer", slot->module);
            slot->dora_owner = i;
        } else
            n_full++;
    }
    if (slot->R && build_low_rank(s, slot, uses, n, per_down, e)) return -1;
    if (n_full && !(slot->full = calloc((size_t)n_full, sizeof *slot->full))) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < n; i++) {
        const vkl_lora_module *m = vkl_lora_find(uses[i].lora, slot->module);
        if (m && !s->train && (m->kind == VKL_LORA_KIND_LOHA || m->kind == VKL_LORA_KIND_LOKR) &&
            build_full(s, slot, m, i, e))
            return -1;
    }
    if (slot->dora_owner >= 0) {
        slot->w_dora = vkl_tensor_new(s->ctx, VKL_F32, slot->wndim, slot->wshape, e);
        if (!slot->w_dora || upload_dora(s, slot, uses, e)) return -1;
    }
    return upload_mults(s, slot, uses, e);
}

static int build_set(vkl_ctx *c, const vkl_lora_use *uses, int n, const vkl_weights *base, int train,
                     vkl_lora_set **out, vkl_err *e)
{
    *out = NULL;
    vkl_lora_set *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->ctx = c;
    s->train = train;
    s->base = base;
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

int vkl_lora_set_build_ex(vkl_ctx *c, const vkl_lora_use *uses, int n, const vkl_weights *base, vkl_lora_set **out,
                          vkl_err *e)
{
    return build_set(c, uses, n, base, 0, out, e);
}

int vkl_lora_set_build(vkl_ctx *c, const vkl_lora_use *uses, int n, vkl_lora_set **out, vkl_err *e)
{
    return build_set(c, uses, n, NULL, 0, out, e);
}

int vkl_lora_set_build_train(vkl_ctx *c, const vkl_lora *l, vkl_lora_set **out, vkl_err *e)
{
    vkl_lora_use use = {l, 1.0f, 1.0f};
    return build_set(c, &use, 1, NULL, 1, out, e);
}

int vkl_lora_slot_params(const vkl_lora_slot *sl, vkl_tensor **t, vkl_lora_role *roles)
{
    int n = 0;
    if (sl->R) {
        t[n] = sl->a_cat;
        roles[n++] = VKL_LORA_DOWN;
        t[n] = sl->b_cat;
        roles[n++] = VKL_LORA_UP;
    }
    for (int r = 0; sl->trained && r < VKL_LORA_ROLES; r++)
        if (sl->tf[r]) {
            t[n] = sl->tf[r];
            roles[n++] = (vkl_lora_role)r;
        }
    return n;
}

static int slot_transfer(vkl_ctx *c, const vkl_lora_slot *sl, vkl_lora_module *m, int down, vkl_err *e)
{
    vkl_tensor *t[VKL_LORA_ROLES];
    vkl_lora_role roles[VKL_LORA_ROLES];
    int n = vkl_lora_slot_params(sl, t, roles);
    for (int i = 0; i < n; i++) {
        vkl_lora_tensor *h = &m->t[roles[i]];
        if (!h->data || vkl_lora_tensor_nelem(h) != (uint64_t)vkl_tensor_nelem(t[i]))
            return vkl_fail(e, "adapter module %s: %s %s", sl->module, vkl_lora_role_name(roles[i]),
                            h->data ? "has another size than the trained tensor" : "is missing");
        if (down ? vkl_tensor_download(c, t[i], h->data, VKL_F32, e) : vkl_tensor_upload(c, t[i], h->data, VKL_F32, e))
            return -1;
    }
    return 0;
}

int vkl_lora_slot_download(vkl_ctx *c, const vkl_lora_slot *sl, vkl_lora_module *m, vkl_err *e)
{
    return slot_transfer(c, sl, m, 1, e);
}

int vkl_lora_slot_upload(vkl_ctx *c, const vkl_lora_slot *sl, const vkl_lora_module *m, vkl_err *e)
{
    return slot_transfer(c, sl, (vkl_lora_module *)m, 0, e);
}

int vkl_lora_set_multipliers(vkl_lora_set *s, const vkl_lora_use *uses, int n, vkl_err *e)
{
    if (n != s->nuses) return vkl_fail(e, "the adapter set was built with %d adapters, not %d", s->nuses, n);
    for (int j = 0; j < s->n; j++)
        if (upload_mults(s, &s->v[j], uses, e)) return -1;
    return 0;
}

vkl_tensor *vkl_lora_linear(vkl_graph *g, const vkl_lora_set *s, const char *module, vkl_tensor *x, vkl_tensor *w,
                            vkl_tensor *bias)
{
    const vkl_lora_slot *slot = vkl_lora_set_find(s, module);
    if (!slot) return vkl_linear(g, x, w, bias);
    if (slot->trained) return vkl_lora_trained_linear(g, slot, x, w, bias);
    if (slot->w_dora) w = as_matrix(g, slot->w_dora);
    vkl_tensor *y = slot->R ? vkl_linear_lora(g, x, w, bias, as_matrix(g, slot->a_cat), as_matrix(g, slot->b_cat),
                                              slot->rank_scale)
                            : vkl_linear(g, x, w, bias);
    for (int k = 0; k < slot->n_full; k++) {
        vkl_tensor *d = vkl_linear(g, x, full_delta(g, slot, k), NULL);
        y = vkl_add(g, y, vkl_mul(g, d, slot->full[k].mult));
    }
    return y;
}

vkl_tensor *vkl_lora_conv2d(vkl_graph *g, const vkl_lora_set *s, const char *module, vkl_tensor *x, vkl_tensor *w,
                            vkl_tensor *bias, const vkl_conv2d_params *p)
{
    const vkl_lora_slot *slot = vkl_lora_set_find(s, module);
    if (!slot) return vkl_conv2d_ex(g, x, w, bias, p);
    if (slot->trained) return vkl_lora_trained_conv2d(g, slot, x, w, bias, p);
    if (slot->w_dora) w = slot->w_dora;
    vkl_tensor *y = slot->R ? vkl_conv2d_lora(g, x, w, bias, p, slot->a_cat, slot->b_cat, slot->rank_scale)
                            : vkl_conv2d_ex(g, x, w, bias, p);
    for (int k = 0; k < slot->n_full; k++) {
        vkl_tensor *d = vkl_conv2d_ex(g, x, vkl_reshape(g, full_delta(g, slot, k), slot->wndim, slot->wshape), NULL, p);
        y = vkl_add(g, y, vkl_mul(g, d, slot->full[k].mult));
    }
    return y;
}
