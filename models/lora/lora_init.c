#include "lora/lora_init.h"

#include "rng.h"

#include <stdio.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vkl_lora_select_unet_attention(void *user, const char *module, int ndim, const int64_t *shape)
{
    (void)user;
    (void)shape;
    return ndim == 2 && !strncmp(module, "unet.", 5) && strstr(module, ".transformer_blocks.") &&
           (strstr(module, ".attn1.to_") || strstr(module, ".attn2.to_"));
}

/* U(-b, b) from a standard normal z: erf(z / sqrt 2) is uniform in (-1, 1). */
static float uniform(uint64_t seed, uint64_t stream, uint64_t k, float b)
{
    return b * (float)erf(vkl_rng_normal_at(seed, stream, k) / sqrt(2.0));
}

int vkl_lora_factorization(int64_t dim, int factor, int64_t *m, int64_t *n)
{
    if (factor > 0 && dim % factor == 0) {
        *m = factor < dim / factor ? factor : dim / factor;
        *n = dim / *m;
        return 0;
    }
    int64_t limit = factor > 0 ? factor : dim, a = 1, b = dim;
    /* LyCORIS's walk: up the divisors until the pair crosses (or factor stops it) */
    while (a < b) {
        int64_t na = a + 1;
        while (dim % na) na++;
        int64_t nb = dim / na;
        if (na > limit) break;
        a = na;
        b = nb;
    }
    *m = a < b ? a : b;
    *n = a < b ? b : a;
    return 0;
}

typedef struct init_ctx {
    const vkl_lora_init_opts *o;
    uint64_t stream;
} init_ctx;

static float *alloc_role(vkl_lora_module *m, vkl_lora_role r, int ndim, const int64_t *shape, vkl_err *e)
{
    float *p = vkl_lora_tensor_alloc(&m->t[r], ndim, shape, e);
    if (p) m->t[r].dtype = VKL_F32;
    return p;
}

static void fill_uniform(float *p, int64_t n, const init_ctx *x, int k, float bound)
{
    for (int64_t i = 0; i < n; i++) p[i] = uniform(x->o->seed, x->stream + (uint64_t)k, (uint64_t)i, bound);
}

static void fill_normal(float *p, int64_t n, const init_ctx *x, int k, float std)
{
    for (int64_t i = 0; i < n; i++) p[i] = std * vkl_rng_normal_at(x->o->seed, x->stream + (uint64_t)k, (uint64_t)i);
}

/* kohya LoRAModule / LyCORIS LoConModule: down kaiming-uniform, up 0
 * (random with random_up); DoRA adds a magnitude [1, in(,1,1)] filled later
 * from the base weight (vkl_lora_init_dora_magnitude). */
static int init_lora(vkl_lora_module *m, const vkl_lora_target *t, const init_ctx *x, vkl_err *e)
{
    int64_t in = t->shape[1], out = t->shape[0], r = x->o->rank;
    int64_t kh = t->ndim == 4 ? t->shape[2] : 1, kw = t->ndim == 4 ? t->shape[3] : 1;
    int64_t ds[4] = {r, in, kh, kw}, us[4] = {out, r, 1, 1}, ms[4] = {1, in, 1, 1};
    float *down = alloc_role(m, VKL_LORA_DOWN, t->ndim, ds, e);
    float *up = down ? alloc_role(m, VKL_LORA_UP, t->ndim, us, e) : NULL;
    if (!up) return -1;
    fill_uniform(down, r * in * kh * kw, x, 0, 1.0f / sqrtf((float)(in * kh * kw)));
    if (x->o->random_up) fill_uniform(up, out * r, x, 1, 1.0f / sqrtf((float)r));
    if (x->o->kind == VKL_LORA_KIND_DORA && !alloc_role(m, VKL_LORA_MAG, t->ndim, ms, e)) return -1;
    return 0;
}

/* LyCORIS LohaModule (plain form; conv factors flat [r, in*kh*kw]):
 * w1_a ~ N(0, 0.1), w1_b ~ N(0, 1), w2_a = 0, w2_b ~ N(0, 1). */
static int init_loha(vkl_lora_module *m, const vkl_lora_target *t, const init_ctx *x, vkl_err *e)
{
    int64_t out = t->shape[0], rest = t->shape[1] * (t->ndim == 4 ? t->shape[2] * t->shape[3] : 1), r = x->o->rank;
    float *w1a = alloc_role(m, VKL_LORA_HADA_W1A, 2, (int64_t[]){out, r}, e);
    float *w1b = w1a ? alloc_role(m, VKL_LORA_HADA_W1B, 2, (int64_t[]){r, rest}, e) : NULL;
    float *w2a = w1b ? alloc_role(m, VKL_LORA_HADA_W2A, 2, (int64_t[]){out, r}, e) : NULL;
    float *w2b = w2a ? alloc_role(m, VKL_LORA_HADA_W2B, 2, (int64_t[]){r, rest}, e) : NULL;
    if (!w2b) return -1;
    fill_normal(w1a, out * r, x, 0, 0.1f);
    fill_normal(w1b, r * rest, x, 1, 1.0f);
    fill_normal(w2b, r * rest, x, 3, 1.0f);
    return 0;
}

/* LyCORIS LokrModule without decompose_both or Tucker: out = a*b, in = c*d by
 * factorization(dim, factor); w1 [a, c] kaiming-uniform; w2 factored as
 * w2_a [b, r] (kaiming-uniform) @ w2_b [r, d*kh*kw] (0) when r < max(b, d)/2,
 * else full w2 [b, d(, kh, kw)] = 0 (then alpha = rank: scale 1). */
static int init_lokr(vkl_lora_module *m, const vkl_lora_target *t, const init_ctx *x, vkl_err *e)
{
    int64_t a, b, c, d, r = x->o->rank;
    int conv = t->ndim == 4;
    int64_t kh = conv ? t->shape[2] : 1, kw = conv ? t->shape[3] : 1;
    vkl_lora_factorization(t->shape[0], x->o->factor, &a, &b);
    vkl_lora_factorization(t->shape[1], x->o->factor, &c, &d);
    float *w1 = alloc_role(m, VKL_LORA_LOKR_W1, 2, (int64_t[]){a, c}, e);
    if (!w1) return -1;
    fill_uniform(w1, a * c, x, 0, 1.0f / sqrtf((float)c));
    if (2 * r < (b > d ? b : d)) {
        float *w2a = alloc_role(m, VKL_LORA_LOKR_W2A, 2, (int64_t[]){b, r}, e);
        if (!w2a || !alloc_role(m, VKL_LORA_LOKR_W2B, 2, (int64_t[]){r, d * kh * kw}, e)) return -1;
        fill_uniform(w2a, b * r, x, 1, 1.0f / sqrtf((float)r));
    } else {
        if (!alloc_role(m, VKL_LORA_LOKR_W2, conv ? 4 : 2, (int64_t[]){b, d, kh, kw}, e)) return -1;
        m->alpha = (float)r;
    }
    return 0;
}

int vkl_lora_init_sd_ex(const vkl_sd_config *cfg, vkl_lora_select_fn select, void *user, const vkl_lora_init_opts *o,
                        vkl_lora *l, vkl_err *e)
{
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    memset(l, 0, sizeof *l);
    if (o->kind == VKL_LORA_KIND_LOKR && o->factor == 0) return vkl_fail(e, "LoKr factor 0 (use -1 or a divisor)");
    if (vkl_lora_targets_from_sd(cfg, &tg, e)) return -1;
    int rc = -1;
    /* LoRA keeps its two streams per module; the other kinds use four */
    init_ctx x = {o, 0x10a10000ull};
    uint64_t per = o->kind == VKL_LORA_KIND_LORA ? 2 : 4;
    if (o->kind != VKL_LORA_KIND_LORA) x.stream = 0x10a20000ull + (uint64_t)o->kind * 0x1000000ull;
    for (int i = 0; i < tg.n; i++) {
        const vkl_lora_target *t = &tg.v[i];
        if ((t->ndim != 2 && t->ndim != 4) || !select(user, t->name, t->ndim, t->shape)) continue;
        vkl_lora_module *m = vkl_lora_add_module(l, e);
        if (!m) goto done;
        /* kohya's sdxl_train_network names UNet modules by the SGM block
         * numbering (lora_unet_input_blocks_4_1_...), its SD 1.x/2.x trainer
         * by the diffusers paths */
        const char *kname = tg.has_te2 && t->ldm ? t->ldm : t->kname;
        m->name = strdup(t->name);
        m->kname = strdup(kname);
        m->source = strdup(kname);
        if (!m->name || !m->kname || !m->source) {
            vkl_fail(e, "out of host memory");
            goto done;
        }
        m->alpha = o->alpha;
        m->has_alpha = 1;
        m->alpha_dtype = VKL_F32;
        int bad = o->kind == VKL_LORA_KIND_LOHA   ? init_loha(m, t, &x, e)
                  : o->kind == VKL_LORA_KIND_LOKR ? init_lokr(m, t, &x, e)
                                                  : init_lora(m, t, &x, e);
        x.stream += per;
        if (bad || vkl_lora_module_finish(m, t, e)) goto done;
    }
    if (!l->n) {
        vkl_fail(e, "no layer of the model was selected for adapters");
        goto done;
    }
    rc = 0;
done:
    vkl_lora_targets_free(&tg);
    return rc;
}

int vkl_lora_init_sd(const vkl_sd_config *cfg, vkl_lora_select_fn select, void *user, int rank, float alpha,
                     uint64_t seed, int random_up, vkl_lora *l, vkl_err *e)
{
    vkl_lora_init_opts o = {VKL_LORA_KIND_LORA, rank, alpha, -1, seed, random_up};
    return vkl_lora_init_sd_ex(cfg, select, user, &o, l, e);
}

int vkl_lora_init_dora_magnitude(vkl_ctx *c, const vkl_weights *w, vkl_lora *l, vkl_err *e)
{
    for (int i = 0; i < l->n; i++) {
        vkl_lora_module *m = &l->m[i];
        vkl_lora_tensor *g = &m->t[VKL_LORA_MAG];
        if (!g->data) continue;
        char wname[600];
        snprintf(wname, sizeof wname, "%s.weight", m->name ? m->name : m->kname);
        vkl_tensor *t = vkl_weights_find(w, wname);
        uint64_t n = vkl_lora_wnelem(m);
        if (!t || (uint64_t)vkl_tensor_nelem(t) != n)
            return vkl_fail(e, "DoRA magnitude of %s: the model has no weight %s of %llu elements",
                            vkl_lora_module_label(m), wname, (unsigned long long)n);
        float *base = malloc(sizeof(float) * n);
        double *acc = calloc(vkl_lora_tensor_nelem(g), sizeof *acc);
        if (!base || !acc || vkl_tensor_download(c, t, base, VKL_F32, e)) {
            free(base);
            free(acc);
            return base && acc ? -1 : vkl_fail(e, "out of host memory");
        }
        int64_t O = m->wshape[0], I = m->wshape[1], KK = (int64_t)n / (O * I);
        int out_axis = g->shape[0] == O && vkl_lora_tensor_nelem(g) == (uint64_t)O;
        for (int64_t o = 0; o < O; o++)
            for (int64_t k = 0; k < I * KK; k++) acc[out_axis ? o : k / KK] += (double)base[o * I * KK + k] * base[o * I * KK + k];
        for (uint64_t k = 0; k < vkl_lora_tensor_nelem(g); k++) g->data[k] = (float)sqrt(acc[k]);
        free(base);
        free(acc);
    }
    return 0;
}
