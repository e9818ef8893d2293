/* AdaLoRA modules of a LLaMA (llama_adalora.h). The rank allocator runs on
 * the host (lora_adalora_alloc.c) from values and gradients read back after
 * each step: its scores need a global sort over every module's ranks, and
 * the read-back is small next to the step itself. */
#include "llama/llama_adalora.h"
#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"

#include "ops.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>

void vkl_llama_adalora_free(vkl_llama_adalora *d)
{
    if (!d) return;
    for (int i = 0; d->v && i < d->n; i++) {
        free(d->v[i].module);
        vkl_tensor_free(d->v[i].a);
        vkl_tensor_free(d->v[i].e);
        vkl_tensor_free(d->v[i].b);
    }
    free(d->v);
    vkl_tensor_free(d->eye);
    free(d);
}

static vkl_tensor *upload(vkl_ctx *c, int ndim, const int64_t *shape, const float *data, vkl_err *e)
{
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, ndim, shape, e);
    if (t && vkl_tensor_upload(c, t, data, VKL_F32, e)) {
        vkl_tensor_free(t);
        return NULL;
    }
    return t;
}

/* N(0, 0.02) from its own stream, so a module's values do not depend on the other targets. */
static void normal(float *x, size_t n, uint64_t seed, uint64_t stream)
{
    for (size_t i = 0; i < n; i++) x[i] = 0.02f * vkl_rng_normal_at(seed, stream, (uint64_t)i);
}

int vkl_llama_adalora_init(const vkl_llama *m, const vkl_adalora_config *cfg, const char *const *targets, int nt,
                           uint64_t seed, vkl_llama_adalora **out, vkl_err *e)
{
    *out = NULL;
    if (vkl_adalora_config_check(cfg, e)) return -1;
    /* the projections and their shapes, as a LoRA of the same targets would have them */
    vkl_lora l;
    vkl_llama_lora_opts lo = {.targets = targets, .nt = nt, .rank = cfg->init_r, .alpha = cfg->lora_alpha, .seed = seed};
    if (vkl_llama_lora_init(m, &lo, &l, e)) return -1;
    vkl_llama_adalora *d = calloc(1, sizeof *d);
    if (d) d->v = calloc((size_t)l.n, sizeof *d->v);
    if (!d || !d->v) {
        free(d);
        vkl_lora_free(&l);
        return vkl_fail(e, "out of host memory");
    }
    d->ctx = m->ctx;
    d->cfg = *cfg;
    d->scale = vkl_adalora_scale(cfg);
    int64_t r = cfg->init_r;
    size_t most = 0;
    for (int i = 0; i < l.n; i++) {
        size_t k = (size_t)(l.m[i].wshape[0] > l.m[i].wshape[1] ? l.m[i].wshape[0] : l.m[i].wshape[1]) * (size_t)r;
        if (k > most) most = k;
    }
    float *buf = malloc(sizeof(float) * (most > (size_t)(r * r) ? most : (size_t)(r * r)));
    int rc = buf ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; i < l.n && !rc; i++) {
        vkl_llama_adalora_mod *x = &d->v[d->n++];
        int64_t o = l.m[i].wshape[0], in = l.m[i].wshape[1];
        x->module = strdup(l.m[i].name);
        x->in = (int)in;
        x->out = (int)o;
        uint64_t stream = 0xada10000ull + 4ull * (uint64_t)i;
        normal(buf, (size_t)(r * in), seed, stream);
        x->a = upload(m->ctx, 2, (int64_t[]){r, in}, buf, e);
        normal(buf, (size_t)(o * r), seed, stream + 1);
        x->b = x->a ? upload(m->ctx, 2, (int64_t[]){o, r}, buf, e) : NULL;
        memset(buf, 0, sizeof(float) * (size_t)r);
        x->e = x->b ? upload(m->ctx, 1, &r, buf, e) : NULL;
        if (!x->module) rc = vkl_fail(e, "out of host memory");
        else if (!x->e) rc = -1;
    }
    if (!rc) {
        memset(buf, 0, sizeof(float) * (size_t)(r * r));
        for (int64_t k = 0; k < r; k++) buf[k * r + k] = 1.0f;
        d->eye = upload(m->ctx, 2, (int64_t[]){r, r}, buf, e);
        if (!d->eye) rc = -1;
    }
    free(buf);
    vkl_lora_free(&l);
    if (rc) {
        vkl_llama_adalora_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

const vkl_llama_adalora_mod *vkl_llama_adalora_find(const vkl_llama_adalora *d, const char *module)
{
    for (int i = 0; d && i < d->n; i++)
        if (!strcmp(d->v[i].module, module)) return &d->v[i];
    return NULL;
}

vkl_tensor *vkl_llama_adalora_linear(vkl_graph *g, const vkl_llama_adalora *d, const vkl_llama_adalora_mod *am,
                                     vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias)
{
    return vkl_linear_lora(g, x, w, bias, am->a, am->b, vkl_scale(g, am->e, d->scale));
}

/* ||P - I||_F of an [r, r] product. */
static vkl_tensor *off_identity(vkl_graph *g, vkl_tensor *p, vkl_tensor *eye, int64_t r)
{
    vkl_tensor *sq = vkl_unary(g, vkl_sub(g, p, eye), VKL_UNARY_SQUARE, 1.0f, 0.0f);
    vkl_tensor *sum = vkl_sum_rows(g, vkl_reshape(g, sq, 2, (int64_t[]){1, r * r}));
    return vkl_unary(g, sum, VKL_UNARY_SQRT, 1.0f, 0.0f);
}

vkl_tensor *vkl_llama_adalora_orth(vkl_graph *g, const vkl_llama_adalora *d)
{
    if (!d || d->n < 1) return vkl_graph_set_error(g, "AdaLoRA regulariser: no modules");
    const int tr[2] = {1, 0};
    int64_t r = d->cfg.init_r;
    vkl_tensor *total = NULL;
    for (int i = 0; i < d->n; i++) {
        const vkl_llama_adalora_mod *x = &d->v[i];
        vkl_tensor *fa = off_identity(g, vkl_matmul(g, x->a, vkl_permute(g, x->a, tr)), d->eye, r);
        vkl_tensor *fb = off_identity(g, vkl_matmul(g, vkl_permute(g, x->b, tr), x->b), d->eye, r);
        vkl_tensor *both = vkl_add(g, fa, fb);
        total = total ? vkl_add(g, total, both) : both;
    }
    return vkl_scale(g, total, 1.0f / (2.0f * (float)d->n));
}

int vkl_llama_adalora_alloc_new(const vkl_llama_adalora *d, vkl_adalora_alloc **a, vkl_err *e)
{
    int *in = malloc(sizeof(int) * (size_t)d->n), *out = malloc(sizeof(int) * (size_t)d->n);
    int rc = in && out ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; !rc && i < d->n; i++) {
        in[i] = d->v[i].in;
        out[i] = d->v[i].out;
    }
    rc = rc || vkl_adalora_alloc_new(&d->cfg, d->n, in, out, a, e);
    free(in);
    free(out);
    return rc;
}

/* Host copies of every module's A, E, B (and, with grads, their gradients). */
typedef struct host {
    float *block;
    vkl_adalora_view *v;
} host;

static int index_of(const vkl_llama_train *s, const vkl_tensor *t)
{
    for (int i = 0; i < vkl_llama_train_count(s); i++)
        if (vkl_llama_train_param(s, i) == t) return i;
    return -1;
}

/* s NULL: values only; e_only: E alone (the final phase re-applies a fixed
 * pattern); the gradients times grad_factor. */
static int read_back(const vkl_llama_adalora *d, const vkl_llama_train *s, int e_only, float grad_factor, host *h,
                     vkl_err *e)
{
    vkl_ctx *c = d->ctx;
    size_t total = 0, r = (size_t)d->cfg.init_r;
    for (int i = 0; i < d->n; i++) total += r * ((size_t)d->v[i].in + 1 + (size_t)d->v[i].out);
    h->block = malloc(sizeof(float) * total * (s ? 2 : 1));
    h->v = calloc((size_t)d->n, sizeof *h->v);
    if (!h->block || !h->v) return vkl_fail(e, "out of host memory for the AdaLoRA read-back");
    float *p = h->block;
    for (int i = 0; i < d->n; i++) {
        const vkl_llama_adalora_mod *x = &d->v[i];
        vkl_tensor *t[3] = {x->a, x->e, x->b};
        float *dst[3];
        for (int k = 0; k < 3; k++) {
            dst[k] = p;
            p += vkl_tensor_nelem(t[k]);
            if ((!e_only || k == 1) && vkl_tensor_download(c, t[k], dst[k], VKL_F32, e))
                return vkl_err_prefix(e, "%s: ", x->module), -1;
        }
        h->v[i].a = e_only ? NULL : dst[0];
        h->v[i].e = dst[1];
        h->v[i].b = e_only ? NULL : dst[2];
        if (!s || e_only) continue;
        float *gd[3];
        for (int k = 0; k < 3; k++) {
            int at = index_of(s, t[k]);
            if (at < 0) return vkl_fail(e, "AdaLoRA module %s is not trained by this trainer", x->module);
            gd[k] = p;
            p += vkl_tensor_nelem(t[k]);
            if (vkl_tensor_download(c, vkl_llama_train_step_grad(s, at), gd[k], VKL_F32, e))
                return vkl_err_prefix(e, "%s gradient: ", x->module), -1;
            for (int64_t q = 0; grad_factor != 1.0f && q < vkl_tensor_nelem(t[k]); q++) gd[k][q] *= grad_factor;
        }
        h->v[i].ga = gd[0];
        h->v[i].ge = gd[1];
        h->v[i].gb = gd[2];
    }
    return 0;
}

static void host_free(host *h)
{
    free(h->block);
    free(h->v);
}

float vkl_llama_adalora_clip_factor(float max_grad_norm, float norm)
{
    if (!(max_grad_norm > 0)) return 1.0f;
    float f = max_grad_norm / (norm + 1e-6f);
    return f < 1.0f ? f : 1.0f;
}

int vkl_llama_adalora_allocate(const vkl_llama_adalora *d, vkl_adalora_alloc *a, const vkl_llama_train *s, int step,
                               float grad_factor, int *budget, vkl_err *e)
{
    host h = {0};
    int changed = 0, e_only = step > d->cfg.total_step - d->cfg.tfinal;
    int rc = read_back(d, s, e_only, grad_factor, &h, e) || vkl_adalora_alloc_step(a, step, h.v, budget, &changed, e);
    for (int i = 0; !rc && changed && i < d->n; i++)
        rc = vkl_tensor_upload(d->ctx, d->v[i].e, h.v[i].e, VKL_F32, e);
    host_free(&h);
    return rc;
}

int vkl_llama_adalora_save(const vkl_llama_adalora *d, const vkl_adalora_alloc *a, const char *const *targets, int nt,
                           const char *base, const char *st_path, const char *config_path, vkl_err *e)
{
    host h = {0};
    vkl_adalora_module *m = calloc((size_t)d->n, sizeof *m);
    int rc = m ? read_back(d, NULL, 0, 1.0f, &h, e) : vkl_fail(e, "out of host memory");
    int have = a && vkl_adalora_alloc_pattern(a, 0) != NULL;
    for (int i = 0; !rc && i < d->n; i++)
        m[i] = (vkl_adalora_module){.name = d->v[i].module, .r = d->cfg.init_r, .in = d->v[i].in, .out = d->v[i].out,
                                    .a = h.v[i].a, .e = h.v[i].e, .b = h.v[i].b,
                                    .keep = have ? vkl_adalora_alloc_pattern(a, i) : NULL};
    rc = rc || vkl_adalora_save_peft(m, d->n, &d->cfg, have, targets, nt, base, st_path, config_path, e);
    free(m);
    host_free(&h);
    return rc;
}
