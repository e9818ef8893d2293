/* DyLoRA: metadata, cutting a file to a rank, and the per-step rank draw of
 * training (see lora_dylora.h). */
#include "lora/lora_dylora.h"
#include "rng.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vkl_dylora_mark(vkl_lora *l, int unit, int dim, float alpha, vkl_err *e)
{
    char args[64], d[32], a[32];
    snprintf(args, sizeof args, "{\"unit\": \"%d\"}", unit);
    snprintf(d, sizeof d, "%d", dim);
    snprintf(a, sizeof a, "%g", alpha);
    return vkl_lora_meta_set(l, "ss_network_module", VKL_DYLORA_MODULE, e) ||
                   vkl_lora_meta_set(l, "ss_network_args", args, e) || vkl_lora_meta_set(l, "ss_network_dim", d, e) ||
                   vkl_lora_meta_set(l, "ss_network_alpha", a, e)
               ? -1
               : 0;
}

int vkl_dylora_unit(const vkl_lora *l, int *unit, vkl_err *e)
{
    *unit = 1;
    const char *mod = vkl_lora_meta_get(l, "ss_network_module"), *args = vkl_lora_meta_get(l, "ss_network_args");
    if (!mod || strcmp(mod, VKL_DYLORA_MODULE) || !args) return 0;
    cJSON *j = cJSON_Parse(args);
    const cJSON *u = j ? cJSON_GetObjectItemCaseSensitive(j, "unit") : NULL;
    int rc = 0;
    if (u) {
        /* kohya writes every network argument as a string */
        char *end = NULL;
        long v = cJSON_IsString(u) ? strtol(u->valuestring, &end, 10) : cJSON_IsNumber(u) ? (long)u->valuedouble : -1;
        if ((end && *end) || v < 1 || v > 1 << 20 || (cJSON_IsNumber(u) && u->valuedouble != (double)v))
            rc = vkl_fail(e, "DyLoRA metadata: ss_network_args unit is not a positive whole number");
        else *unit = (int)v;
    }
    cJSON_Delete(j);
    return rc;
}

int vkl_dylora_max_rank(const vkl_lora *l)
{
    int r = 0;
    for (int i = 0; i < l->n; i++)
        if (l->m[i].rank > r) r = l->m[i].rank;
    return r;
}

static int64_t after(const vkl_lora_tensor *t, int axis)
{
    int64_t n = 1;
    for (int d = axis + 1; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

/* Keeps the first r entries along axis 0 (down) or 1 (up), in place. */
static void keep_rows(vkl_lora_tensor *t, int axis, int r)
{
    int64_t inner = after(t, axis), old = t->shape[axis], outer = axis ? t->shape[0] : 1;
    for (int64_t o = 0; o < outer; o++)
        memmove(t->data + o * r * inner, t->data + o * old * inner, sizeof(float) * (size_t)(r * inner));
    t->shape[axis] = r;
}

int vkl_dylora_cut(vkl_lora *l, int r, vkl_err *e)
{
    int unit;
    if (vkl_dylora_unit(l, &unit, e)) return -1;
    if (r < 1) return vkl_fail(e, "rank %d: a rank is at least 1", r);
    if (r % unit)
        return vkl_fail(e, "rank %d is not a multiple of the adapter's DyLoRA unit %d (ranks %d, %d, ...)", r, unit,
                        unit, 2 * unit);
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *m = &l->m[i];
        if (m->kind != VKL_LORA_KIND_LORA || m->t[VKL_LORA_MID].data || !m->t[VKL_LORA_DOWN].data)
            return vkl_fail(e, "module %s is %s: only LoRA / LoCon modules have rank rows to cut",
                            vkl_lora_module_label(m),
                            m->t[VKL_LORA_MID].data ? "a Tucker LoCon (lora_mid)" : vkl_lora_kind_name(m->kind));
        if (r > m->rank)
            return vkl_fail(e, "rank %d is above the rank %d of module %s", r, m->rank, vkl_lora_module_label(m));
    }
    for (int i = 0; i < l->n; i++) {
        vkl_lora_module *m = &l->m[i];
        keep_rows(&m->t[VKL_LORA_DOWN], 0, r);
        keep_rows(&m->t[VKL_LORA_UP], 1, r);
        m->rank = r;
        /* alpha kept: the scale follows the rank as every loader computes it;
         * without an alpha (scale folded or alpha = rank) it stays 1 */
        if (!m->has_alpha) m->alpha = (float)r;
        m->scale = !m->has_alpha ? 1.0 : l->rslora ? m->alpha / sqrt((double)r) : (double)m->alpha / r;
    }
    char d[32];
    snprintf(d, sizeof d, "%d", r);
    return vkl_lora_meta_get(l, "ss_network_dim") ? vkl_lora_meta_set(l, "ss_network_dim", d, e) : 0;
}

/* ---- training ---- */

typedef struct dy_slot {
    const vkl_lora_slot *sl;
    int D, b;
    float alpha;       /* scale at rank b: alpha / b */
    int *steps;        /* per block: how many steps trained it */
    vkl_tensor *count, *mask;
    float *scale_h, *count_h, *mask_h;
} dy_slot;

struct vkl_dylora {
    vkl_ctx *c;
    int unit, n;
    uint64_t rng;
    dy_slot *s;
};

void vkl_dylora_free(vkl_dylora *d)
{
    if (!d) return;
    for (int i = 0; d->s && i < d->n; i++) {
        free(d->s[i].steps);
        free(d->s[i].scale_h);
        free(d->s[i].count_h);
        free(d->s[i].mask_h);
        vkl_tensor_free(d->s[i].count);
        vkl_tensor_free(d->s[i].mask);
    }
    free(d->s);
    free(d);
}

int vkl_dylora_new(vkl_ctx *c, const vkl_lora_set *set, const vkl_lora *l, int unit, uint64_t seed, vkl_dylora **out,
                   vkl_err *e)
{
    *out = NULL;
    if (unit < 1) return vkl_fail(e, "DyLoRA unit %d: at least 1", unit);
    vkl_dylora *d = calloc(1, sizeof *d);
    if (!d) return vkl_fail(e, "out of host memory");
    d->c = c;
    d->unit = unit;
    d->rng = seed ^ 0x64796c6f7261ull;
    d->n = vkl_lora_set_count(set);
    d->s = calloc((size_t)d->n + 1, sizeof *d->s);
    int rc = d->s ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; !rc && i < d->n; i++) {
        dy_slot *s = &d->s[i];
        s->sl = vkl_lora_set_at(set, i);
        const vkl_lora_module *m = vkl_lora_find(l, s->sl->module);
        if (!m || s->sl->R < 1 || m->kind != VKL_LORA_KIND_LORA || s->sl->R != m->rank || s->sl->n_full ||
            s->sl->trained) {
            rc = vkl_fail(e, "DyLoRA trains LoRA modules; %s is not one", s->sl->module);
            break;
        }
        s->D = m->rank;
        if (s->D != d->s[0].D) {
            rc = vkl_fail(e, "DyLoRA: module %s has rank %d, %s has %d; one rank is drawn for all", s->sl->module, s->D,
                          d->s[0].sl->module, d->s[0].D);
            break;
        }
        if (s->D % unit) {
            rc = vkl_fail(e, "DyLoRA: rank %d of %s is not a multiple of the unit %d", s->D, s->sl->module, unit);
            break;
        }
        s->alpha = (float)(m->scale * m->rank);
        s->steps = calloc((size_t)(s->D / unit), sizeof *s->steps);
        s->scale_h = malloc(sizeof(float) * (size_t)s->D);
        s->count_h = malloc(sizeof(float) * (size_t)s->D);
        s->mask_h = malloc(sizeof(float) * (size_t)s->D);
        if (!s->steps || !s->scale_h || !s->count_h || !s->mask_h) {
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        s->count = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){s->D}, e);
        s->mask = s->count ? vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){s->D}, e) : NULL;
        if (!s->mask) rc = -1;
    }
    if (rc) {
        vkl_dylora_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

int vkl_dylora_gate(const vkl_dylora *d, vkl_adamw *a, vkl_tensor *const *params, int n, vkl_err *e)
{
    for (int i = 0; i < n; i++) {
        int done = 0;
        for (int k = 0; k < d->n && !done; k++) {
            const dy_slot *s = &d->s[k];
            int axis = params[i] == s->sl->a_cat ? 0 : params[i] == s->sl->b_cat ? 1 : -1;
            if (axis < 0) continue;
            if (vkl_adamw_set_rank_gate(a, i, s->count, s->mask, axis, e)) return -1;
            done = 1;
        }
        if (!done) return vkl_fail(e, "DyLoRA: trainable tensor %d is not the down or up matrix of a LoRA module", i);
    }
    return 0;
}

/* The next draw: t, with every module's b and block step count advanced. */
static int next_draw(vkl_dylora *d)
{
    /* one draw for every module: the configuration a file cut to b runs */
    int t = (int)(vkl_splitmix64(&d->rng) % (uint64_t)d->s[0].D);
    t -= t % d->unit;
    for (int i = 0; i < d->n; i++) {
        d->s[i].b = t + d->unit;
        d->s[i].steps[t / d->unit]++;
    }
    return t;
}

void vkl_dylora_skip(vkl_dylora *d, int steps)
{
    for (int k = 0; d->n && k < steps; k++) next_draw(d);
}

int vkl_dylora_draw(vkl_dylora *d, vkl_err *e)
{
    if (!d->n) return 0;
    int t = next_draw(d);
    for (int i = 0; i < d->n; i++) {
        dy_slot *s = &d->s[i];
        int cnt = s->steps[t / d->unit];
        for (int r = 0; r < s->D; r++) {
            int on = r >= t && r < s->b;
            s->scale_h[r] = r < s->b ? s->alpha / (float)s->b : 0.0f;
            s->mask_h[r] = on ? 1.0f : 0.0f;
            s->count_h[r] = on ? (float)cnt : 0.0f;
        }
        if (vkl_tensor_upload(d->c, s->sl->rank_scale, s->scale_h, VKL_F32, e) ||
            vkl_tensor_upload(d->c, s->mask, s->mask_h, VKL_F32, e) ||
            vkl_tensor_upload(d->c, s->count, s->count_h, VKL_F32, e))
            return vkl_err_prefix(e, "DyLoRA %s: ", s->sl->module), -1;
    }
    return 0;
}

int vkl_dylora_full(vkl_dylora *d, vkl_err *e)
{
    for (int i = 0; i < d->n; i++) {
        dy_slot *s = &d->s[i];
        s->b = s->D;
        for (int r = 0; r < s->D; r++) s->scale_h[r] = s->alpha / (float)s->D;
        if (vkl_tensor_upload(d->c, s->sl->rank_scale, s->scale_h, VKL_F32, e))
            return vkl_err_prefix(e, "DyLoRA %s: ", s->sl->module), -1;
    }
    return 0;
}

int vkl_dylora_rank_of(const vkl_dylora *d, int i) { return i >= 0 && i < d->n ? d->s[i].b : 0; }
