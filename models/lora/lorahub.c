#include "lora/lorahub.h"

#include "cmaes.h"
#include "shape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *label_of(const char *const *names, int i)
{
    return names && names[i] ? names[i] : "an adapter";
}

/* Module of l with the label of m (internal name, else kohya name), or NULL. */
static const vkl_lora_module *match(const vkl_lora *l, const vkl_lora_module *m)
{
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *x = &l->m[i];
        if (m->name && x->name ? !strcmp(m->name, x->name) : !strcmp(m->kname, x->kname)) return x;
    }
    return NULL;
}

static int check_module_kind(const vkl_lora_module *m, const char *name, vkl_err *e)
{
    if (m->kind != VKL_LORA_KIND_LORA)
        return vkl_fail(e, "%s: module %s is %s; LoRAHub composes plain LoRA adapters only", name,
                        vkl_lora_module_label(m), vkl_lora_kind_name(m->kind));
    if (m->t[VKL_LORA_MID].data)
        return vkl_fail(e, "%s: module %s has a Tucker core (lora_mid); LoRAHub composes plain LoRA factors only", name,
                        vkl_lora_module_label(m));
    if (!m->t[VKL_LORA_DOWN].data || !m->t[VKL_LORA_UP].data)
        return vkl_fail(e, "%s: module %s lacks its down or up factor", name, vkl_lora_module_label(m));
    return 0;
}

int vkl_lorahub_check(const vkl_lora *const *in, const char *const *names, int k, vkl_err *e)
{
    if (k < 2) return vkl_fail(e, "LoRAHub mixes at least 2 adapters, %d given", k);
    if (k > VKL_LORAHUB_MAX_INPUTS) return vkl_fail(e, "LoRAHub mixes at most %d adapters, %d given", VKL_LORAHUB_MAX_INPUTS, k);
    for (int i = 0; i < k; i++) {
        if (!in[i]->n) return vkl_fail(e, "%s: the adapter has no module", label_of(names, i));
        for (int j = 0; j < in[i]->n; j++)
            if (check_module_kind(&in[i]->m[j], label_of(names, i), e)) return -1;
    }
    const vkl_lora *a = in[0];
    for (int i = 1; i < k; i++) {
        const vkl_lora *b = in[i];
        for (int j = 0; j < a->n; j++) {
            const vkl_lora_module *ma = &a->m[j], *mb = match(b, ma);
            if (!mb)
                return vkl_fail(e, "%s has module %s but %s has not: the adapters must adapt the same modules "
                                   "(targets) of the same base",
                                label_of(names, 0), vkl_lora_module_label(ma), label_of(names, i));
            for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++)
                if (!vkl_shape_same(ma->t[r].ndim, ma->t[r].shape, mb->t[r].ndim, mb->t[r].shape)) {
                    char sa[80], sb[80];
                    vkl_shape_str(ma->t[r].ndim, ma->t[r].shape, sa, sizeof sa);
                    vkl_shape_str(mb->t[r].ndim, mb->t[r].shape, sb, sizeof sb);
                    return vkl_fail(e, "module %s: %s %s in %s but %s in %s: the adapters must have the same ranks "
                                       "and be made for the same base",
                                    vkl_lora_module_label(ma), r == VKL_LORA_DOWN ? "down (A)" : "up (B)", sa,
                                    label_of(names, 0), sb, label_of(names, i));
                }
            if (fabs(ma->scale - mb->scale) > 1e-6 * fabs(ma->scale))
                return vkl_fail(e, "module %s: scale (alpha / rank) %g in %s but %g in %s: the composed adapter "
                                   "has one alpha per module, so the inputs must agree",
                                vkl_lora_module_label(ma), ma->scale, label_of(names, 0), mb->scale, label_of(names, i));
        }
        if (b->n != a->n)
            return vkl_fail(e, "%s has %d modules, %s %d: the adapters must adapt the same modules (targets)",
                            label_of(names, 0), a->n, label_of(names, i), b->n);
    }
    return 0;
}

static char *dup(const char *s, vkl_err *e)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) vkl_fail(e, "out of host memory");
    return d;
}

int vkl_lorahub_prepare(const vkl_lora *const *in, int k, vkl_lora *out, vkl_err *e)
{
    (void)k;
    const vkl_lora *a = in[0];
    memset(out, 0, sizeof *out);
    out->format = a->format;
    out->rslora = a->rslora;
    out->has_config = a->has_config;
    for (int j = 0; j < a->n; j++) {
        const vkl_lora_module *s = &a->m[j];
        vkl_lora_module *d = vkl_lora_add_module(out, e);
        if (!d) goto fail;
        d->kind = s->kind;
        d->rank = s->rank;
        d->alpha = s->alpha;
        d->has_alpha = s->has_alpha;
        d->alpha_dtype = s->alpha_dtype;
        d->scale = s->scale;
        d->wndim = s->wndim;
        memcpy(d->wshape, s->wshape, sizeof d->wshape);
        d->stride = s->stride;
        d->padding = s->padding;
        if ((s->name && !(d->name = dup(s->name, e))) || !(d->kname = dup(s->kname, e)) ||
            (s->source && !(d->source = dup(s->source, e))))
            goto fail;
        for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++) {
            if (!vkl_lora_tensor_alloc(&d->t[r], s->t[r].ndim, s->t[r].shape, e)) goto fail;
            d->t[r].dtype = VKL_F32;
        }
    }
    return 0;
fail:
    vkl_lora_free(out);
    return -1;
}

void vkl_lorahub_compose(const vkl_lora *const *in, int k, const double *w, vkl_lora *out)
{
    for (int j = 0; j < out->n; j++) {
        vkl_lora_module *d = &out->m[j];
        const vkl_lora_module *src[VKL_LORAHUB_MAX_INPUTS];
        int kk = k < VKL_LORAHUB_MAX_INPUTS ? k : VKL_LORAHUB_MAX_INPUTS; /* vkl_lorahub_check refused more */
        for (int i = 0; i < kk; i++) src[i] = i ? match(in[i], d) : &in[0]->m[j];
        for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++) {
            uint64_t n = vkl_lora_tensor_nelem(&d->t[r]);
            for (uint64_t x = 0; x < n; x++) {
                double v = 0;
                for (int i = 0; i < kk; i++) v += w[i] * (double)src[i]->t[r].data[x];
                d->t[r].data[x] = (float)v;
            }
        }
    }
}

void vkl_lorahub_opts_default(vkl_lorahub_opts *o, int k)
{
    memset(o, 0, sizeof *o);
    o->k = k;
    o->budget = 40;
    o->l1 = 0.05;
    o->lo = -1.5;
    o->hi = 1.5;
    o->sigma0 = 0.2;
}

static double objective(const vkl_lorahub_opts *o, const double *w, double loss)
{
    double s = 0;
    for (int i = 0; i < o->k; i++) s += fabs(w[i]);
    return loss + o->l1 * s;
}

/* Evaluates the K inputs alone and the plain average; x0 = the best of them (the search's start). */
static int references(const vkl_lorahub_opts *o, vkl_lorahub_loss_fn loss, void *user, double *w, double *x0,
                      vkl_lorahub_result *r, vkl_err *e)
{
    double best = INFINITY;
    for (int which = 0; which <= o->k; which++) {
        for (int i = 0; i < o->k; i++) w[i] = which == o->k ? 1.0 / o->k : i == which;
        double l;
        if (loss(user, w, &l, e)) return -1;
        if (which < o->k && r->input_loss) r->input_loss[which] = l;
        if (which == o->k) r->average_loss = l;
        if (o->on_reference) o->on_reference(o->user, which, l);
        double f = objective(o, w, l);
        if (f < best) { /* non-finite losses never start the search */
            best = f;
            memcpy(x0, w, sizeof(double) * (size_t)o->k);
        }
    }
    return 0;
}

int vkl_lorahub_search(const vkl_lorahub_opts *o, vkl_lorahub_loss_fn loss, void *user, vkl_lorahub_result *r,
                       vkl_err *e)
{
    int k = o->k;
    if (k < 2 || k > VKL_LORAHUB_MAX_INPUTS)
        return vkl_fail(e, "LoRAHub mixes 2 to %d adapters, not %d", VKL_LORAHUB_MAX_INPUTS, k);
    if (o->budget < 1) return vkl_fail(e, "LoRAHub: a budget of %d evaluations (at least 1)", o->budget);
    if (!(o->l1 >= 0) || !isfinite(o->l1)) return vkl_fail(e, "LoRAHub: L1 weight %g is not a number >= 0", o->l1);
    if (!(o->lo <= 0 && 1 <= o->hi))
        return vkl_fail(e, "LoRAHub: the box [%g, %g] does not hold the reference weights 0 and 1", o->lo, o->hi);
    if (!(o->sigma0 > 0) || !isfinite(o->sigma0)) return vkl_fail(e, "LoRAHub: step size %g is not positive", o->sigma0);
    double *x0 = malloc(sizeof(double) * (size_t)k * 2), *w = x0 + k;
    if (!x0) return vkl_fail(e, "out of host memory");
    vkl_cmaes *es = NULL;
    vkl_cmaes_opts co = {.dim = k, .x0 = x0, .sigma0 = o->sigma0, .lo = o->lo, .hi = o->hi, .seed = o->seed};
    double *xs = NULL, *fs = NULL, *ls = NULL;
    int rc = references(o, loss, user, w, x0, r, e);
    rc = rc || vkl_cmaes_new(&co, &es, e);
    int lambda = rc ? 0 : vkl_cmaes_lambda(es);
    if (!rc) {
        xs = malloc(sizeof(double) * (size_t)lambda * k);
        fs = malloc(sizeof(double) * (size_t)lambda);
        ls = malloc(sizeof(double) * (size_t)lambda);
        if (!xs || !fs || !ls) rc = vkl_fail(e, "out of host memory");
    }
    r->evals = r->generations = 0;
    r->objective = r->loss = INFINITY;
    int generations = (o->budget + lambda - 1) / (lambda ? lambda : 1);
    for (int g = 0; !rc && r->evals < o->budget; g++) {
        vkl_cmaes_ask(es, xs);
        int n = o->budget - r->evals < lambda ? o->budget - r->evals : lambda;
        double gen_best = INFINITY;
        for (int j = 0; j < lambda; j++) {
            if (j >= n) { /* beyond the budget: not evaluated, ranked last */
                fs[j] = INFINITY;
                continue;
            }
            if (loss(user, xs + (size_t)j * k, &ls[j], e)) {
                rc = -1;
                break;
            }
            r->evals++;
            fs[j] = objective(o, xs + (size_t)j * k, ls[j]);
            if (fs[j] < gen_best) gen_best = fs[j];
            if (fs[j] < r->objective) {
                r->objective = fs[j];
                r->loss = ls[j];
                memcpy(r->w, xs + (size_t)j * k, sizeof(double) * (size_t)k);
            }
        }
        if (rc) break;
        vkl_cmaes_tell(es, fs);
        r->generations = g + 1;
        if (o->on_generation) {
            vkl_lorahub_gen gi = {.gen = g + 1, .generations = generations, .evals = r->evals, .budget = o->budget,
                                  .gen_best = gen_best, .best = r->objective, .best_loss = r->loss, .best_w = r->w};
            o->on_generation(o->user, &gi);
        }
    }
    if (!rc && !isfinite(r->objective)) rc = vkl_fail(e, "LoRAHub: no candidate had a finite loss");
    vkl_cmaes_free(es);
    free(x0);
    free(xs);
    free(fs);
    free(ls);
    return rc;
}
