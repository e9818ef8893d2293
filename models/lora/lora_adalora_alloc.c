/* AdaLoRA's config checks, budget schedule and rank allocator (PEFT's
 * RankAllocator), on the host: the scores need every module's values and
 * gradients once per step, which is small next to a step, and the masking is
 * a global sort over all modules. */
#include "lora/lora_adalora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void vkl_adalora_config_default(vkl_adalora_config *c)
{
    *c = (vkl_adalora_config){.init_r = 12, .target_r = 8, .tinit = 0, .tfinal = 0, .delta_t = 1, .total_step = 0,
                              .beta1 = 0.85f, .beta2 = 0.85f, .orth_reg_weight = 0.5f, .lora_alpha = 8};
}

int vkl_adalora_config_check(const vkl_adalora_config *c, vkl_err *e)
{
    if (c->init_r < 1 || c->init_r > 4096) return vkl_fail(e, "AdaLoRA init_r %d: expected 1 to 4096", c->init_r);
    if (c->target_r < 0 || c->target_r > c->init_r)
        return vkl_fail(e, "AdaLoRA target_r %d: expected 0 to init_r (%d)", c->target_r, c->init_r);
    if (c->tinit < 0 || c->tfinal < 0) return vkl_fail(e, "AdaLoRA tinit %d / tfinal %d: must not be negative", c->tinit, c->tfinal);
    if (c->delta_t < 1) return vkl_fail(e, "AdaLoRA deltaT %d: must be at least 1", c->delta_t);
    if (c->total_step < 1) return vkl_fail(e, "AdaLoRA total_step %d: must be at least 1", c->total_step);
    if (c->tinit >= c->total_step - c->tfinal)
        return vkl_fail(e, "AdaLoRA tinit %d and tfinal %d leave no budgeting phase in %d steps (need tinit < total_step "
                           "- tfinal)", c->tinit, c->tfinal, c->total_step);
    if (!(c->beta1 > 0 && c->beta1 < 1) || !(c->beta2 > 0 && c->beta2 < 1))
        return vkl_fail(e, "AdaLoRA beta1 %g / beta2 %g: each must lie in (0, 1)", c->beta1, c->beta2);
    if (!(c->orth_reg_weight > 0) || !isfinite(c->orth_reg_weight))
        return vkl_fail(e, "AdaLoRA orth_reg_weight %g: must be a positive number (PEFT refuses 0)", c->orth_reg_weight);
    if (!(c->lora_alpha >= 0) || !isfinite(c->lora_alpha))
        return vkl_fail(e, "AdaLoRA lora_alpha %g: must be a non-negative number", c->lora_alpha);
    return 0;
}

float vkl_adalora_scale(const vkl_adalora_config *c)
{
    float scaling = c->lora_alpha > 0 ? c->lora_alpha : (float)c->init_r;
    return scaling / ((float)c->init_r + 1e-5f);
}

int vkl_adalora_budget(const vkl_adalora_config *c, int init_bgt, int target_bgt, int step, int *mask)
{
    if (step <= c->tinit) {
        *mask = 0;
        return init_bgt;
    }
    if (step > c->total_step - c->tfinal) {
        *mask = 1;
        return target_bgt;
    }
    /* Python: 1 - (step - tinit) / (total_step - tfinal - tinit), then int() of a non-negative value */
    double mul = 1.0 - (double)(step - c->tinit) / (double)(c->total_step - c->tfinal - c->tinit);
    *mask = step % c->delta_t == 0;
    return (int)((double)(init_bgt - target_bgt) * (mul * mul * mul) + (double)target_bgt);
}

/* Smoothed importance (avg) and uncertainty (unc) per element of A, E, B. */
typedef struct mod_state {
    int in, out;
    float *avg[3], *unc[3];
    unsigned char *keep;
} mod_state;

struct vkl_adalora_alloc {
    vkl_adalora_config c;
    int n, init_bgt, target_bgt, have_pattern;
    mod_state *m;
    double *score; /* n x init_r triplet scores */
    double *sorted;
};

void vkl_adalora_alloc_free(vkl_adalora_alloc *a)
{
    if (!a) return;
    for (int i = 0; a->m && i < a->n; i++) {
        for (int k = 0; k < 3; k++) {
            free(a->m[i].avg[k]);
            free(a->m[i].unc[k]);
        }
        free(a->m[i].keep);
    }
    free(a->m);
    free(a->score);
    free(a->sorted);
    free(a);
}

int vkl_adalora_alloc_new(const vkl_adalora_config *c, int n, const int *in, const int *out, vkl_adalora_alloc **pa,
                          vkl_err *e)
{
    *pa = NULL;
    if (vkl_adalora_config_check(c, e)) return -1;
    if (n < 1) return vkl_fail(e, "AdaLoRA: no module to allocate ranks to");
    vkl_adalora_alloc *a = calloc(1, sizeof *a);
    if (!a) return vkl_fail(e, "out of host memory");
    a->c = *c;
    a->n = n;
    a->init_bgt = c->init_r * n;
    a->target_bgt = c->target_r * n;
    a->m = calloc((size_t)n, sizeof *a->m);
    a->score = malloc(sizeof(double) * (size_t)a->init_bgt);
    a->sorted = malloc(sizeof(double) * (size_t)a->init_bgt);
    int ok = a->m && a->score && a->sorted;
    for (int i = 0; ok && i < n; i++) {
        mod_state *s = &a->m[i];
        s->in = in[i];
        s->out = out[i];
        size_t r = (size_t)c->init_r, sz[3] = {r * (size_t)in[i], r, (size_t)out[i] * r};
        for (int k = 0; ok && k < 3; k++) {
            s->avg[k] = calloc(sz[k], sizeof(float));
            s->unc[k] = calloc(sz[k], sizeof(float));
            ok = s->avg[k] && s->unc[k];
        }
        s->keep = ok ? malloc(r) : NULL;
        ok = ok && s->keep;
        if (ok) memset(s->keep, 1, r);
    }
    if (!ok) {
        vkl_adalora_alloc_free(a);
        return vkl_fail(e, "out of host memory for the AdaLoRA scores");
    }
    *pa = a;
    return 0;
}

/* ipt = |p * g|; avg = b1 avg + (1 - b1) ipt; unc = b2 unc + (1 - b2) |ipt - avg| (the new avg). */
static void update_ipt(const vkl_adalora_config *c, const float *p, const float *g, size_t n, float *avg, float *unc)
{
    for (size_t i = 0; i < n; i++) {
        float ipt = fabsf(p[i] * g[i]);
        avg[i] = c->beta1 * avg[i] + (1.0f - c->beta1) * ipt;
        unc[i] = c->beta2 * unc[i] + (1.0f - c->beta2) * fabsf(ipt - avg[i]);
    }
}

/* Triplet score of each rank: E's element score + mean over A's row + mean over B's column. */
static void scores(const vkl_adalora_alloc *a)
{
    int r = a->c.init_r;
    for (int i = 0; i < a->n; i++) {
        const mod_state *s = &a->m[i];
        for (int k = 0; k < r; k++) {
            double sa = 0, sb = 0;
            for (int j = 0; j < s->in; j++) {
                size_t q = (size_t)k * s->in + j;
                sa += (double)s->avg[0][q] * s->unc[0][q];
            }
            for (int o = 0; o < s->out; o++) {
                size_t q = (size_t)o * r + k;
                sb += (double)s->avg[2][q] * s->unc[2][q];
            }
            a->score[(size_t)i * r + k] =
                (double)s->avg[1][k] * s->unc[1][k] + sa / (s->in ? s->in : 1) + sb / (s->out ? s->out : 1);
        }
    }
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* PEFT's mask_to_budget: the (init_bgt - budget)-th smallest score is the
 * threshold, and every rank scored at or below it is dropped. */
static void mask_to_budget(vkl_adalora_alloc *a, int budget)
{
    int r = a->c.init_r, k = a->init_bgt - budget;
    scores(a);
    double thr = -INFINITY;
    if (k > 0) {
        memcpy(a->sorted, a->score, sizeof(double) * (size_t)a->init_bgt);
        qsort(a->sorted, (size_t)a->init_bgt, sizeof(double), cmp_double);
        thr = a->sorted[(k > a->init_bgt ? a->init_bgt : k) - 1];
    }
    for (int i = 0; i < a->n; i++)
        for (int q = 0; q < r; q++) a->m[i].keep[q] = !(a->score[(size_t)i * r + q] <= thr);
    a->have_pattern = 1;
}

static int apply_pattern(vkl_adalora_alloc *a, vkl_adalora_view *v)
{
    int changed = 0;
    for (int i = 0; i < a->n; i++)
        for (int q = 0; q < a->c.init_r; q++)
            if (!a->m[i].keep[q] && v[i].e[q] != 0.0f) {
                v[i].e[q] = 0.0f;
                changed = 1;
            }
    return changed;
}

int vkl_adalora_alloc_step(vkl_adalora_alloc *a, int step, vkl_adalora_view *v, int *budget, int *changed, vkl_err *e)
{
    *changed = 0;
    int mask = 0, last = a->c.total_step - a->c.tfinal;
    *budget = vkl_adalora_budget(&a->c, a->init_bgt, a->target_bgt, step, &mask);
    if (step < 1) return vkl_fail(e, "AdaLoRA allocator: step %d (steps count from 1)", step);
    /* after total_step - tfinal only E is read (the fixed pattern is re-applied) */
    for (int i = 0; i < a->n; i++)
        if (!v[i].e || (step <= last && (!v[i].a || !v[i].b || !v[i].ga || !v[i].gb || !v[i].ge)))
            return vkl_fail(e, "AdaLoRA allocator: module %d lacks a value or a gradient", i);
    if (step < last) {
        for (int i = 0; i < a->n; i++) {
            mod_state *s = &a->m[i];
            size_t r = (size_t)a->c.init_r;
            update_ipt(&a->c, v[i].a, v[i].ga, r * (size_t)s->in, s->avg[0], s->unc[0]);
            update_ipt(&a->c, v[i].e, v[i].ge, r, s->avg[1], s->unc[1]);
            update_ipt(&a->c, v[i].b, v[i].gb, (size_t)s->out * r, s->avg[2], s->unc[2]);
        }
        if (mask) {
            mask_to_budget(a, *budget);
            *changed = apply_pattern(a, v);
        }
    } else if (step == last) {
        /* the final allocation from the scores so far; they are then dropped, as PEFT's reset_ipt */
        mask_to_budget(a, *budget);
        *changed = apply_pattern(a, v);
        for (int i = 0; i < a->n; i++)
            for (int k = 0; k < 3; k++) {
                size_t sz = k == 0 ? (size_t)a->c.init_r * a->m[i].in
                                   : k == 1 ? (size_t)a->c.init_r : (size_t)a->m[i].out * a->c.init_r;
                memset(a->m[i].avg[k], 0, sz * sizeof(float));
                memset(a->m[i].unc[k], 0, sz * sizeof(float));
            }
    } else if (a->have_pattern) {
        *changed = apply_pattern(a, v);
    }
    return 0;
}

const unsigned char *vkl_adalora_alloc_pattern(const vkl_adalora_alloc *a, int i)
{
    return a->have_pattern && i >= 0 && i < a->n ? a->m[i].keep : NULL;
}

int vkl_adalora_alloc_total_rank(const vkl_adalora_alloc *a)
{
    int t = 0;
    for (int i = 0; i < a->n; i++)
        for (int q = 0; q < a->c.init_r; q++) t += a->m[i].keep[q];
    return t;
}

/* Layout: per module avg and unc of A, E, B, then every module's keep flags, then have_pattern. */
static size_t module_floats(const vkl_adalora_alloc *a, int i)
{
    size_t r = (size_t)a->c.init_r;
    return 2 * (r * (size_t)a->m[i].in + r + (size_t)a->m[i].out * r);
}

size_t vkl_adalora_alloc_state_size(const vkl_adalora_alloc *a)
{
    size_t n = 1 + (size_t)a->init_bgt;
    for (int i = 0; i < a->n; i++) n += module_floats(a, i);
    return n;
}

static size_t part_size(const vkl_adalora_alloc *a, int i, int k)
{
    size_t r = (size_t)a->c.init_r;
    return k == 0 ? r * (size_t)a->m[i].in : k == 1 ? r : (size_t)a->m[i].out * r;
}

void vkl_adalora_alloc_state_get(const vkl_adalora_alloc *a, float *dst)
{
    for (int i = 0; i < a->n; i++)
        for (int k = 0; k < 3; k++) {
            size_t n = part_size(a, i, k);
            memcpy(dst, a->m[i].avg[k], sizeof(float) * n);
            memcpy(dst + n, a->m[i].unc[k], sizeof(float) * n);
            dst += 2 * n;
        }
    for (int i = 0; i < a->n; i++)
        for (int q = 0; q < a->c.init_r; q++) *dst++ = a->m[i].keep[q];
    *dst = (float)a->have_pattern;
}

int vkl_adalora_alloc_state_set(vkl_adalora_alloc *a, const float *src, vkl_err *e)
{
    const float *flags = src;
    for (int i = 0; i < a->n; i++) flags += module_floats(a, i);
    for (int q = 0; q <= a->init_bgt; q++)
        if (flags[q] != 0.0f && flags[q] != 1.0f)
            return vkl_fail(e, "AdaLoRA allocator state: flag %d is %g, not 0 or 1", q, flags[q]);
    for (int i = 0; i < a->n; i++)
        for (int k = 0; k < 3; k++) {
            size_t n = part_size(a, i, k);
            memcpy(a->m[i].avg[k], src, sizeof(float) * n);
            memcpy(a->m[i].unc[k], src + n, sizeof(float) * n);
            src += 2 * n;
        }
    for (int i = 0; i < a->n; i++)
        for (int q = 0; q < a->c.init_r; q++) a->m[i].keep[q] = *src++ != 0.0f;
    a->have_pattern = *src != 0.0f;
    return 0;
}
