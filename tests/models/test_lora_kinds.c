/* LoHa, LoKr, DoRA and Tucker LoCon adapters applied at run time on the tiny
 * reference model (refkit/sd/tiny-sd), against the same model with the
 * adapters merged into its weights on the CPU in double (lora_delta.h: W + m *
 * delta W; DoRA: W' on the original W, first): UNet epsilon at t=500 and the
 * text-encoder states, within 1e-4 x max. The adapters are built here,
 * written as kohya/LyCORIS files and read back; several of them stack on one
 * layer (LoHa + LoKr + DoRA on a linear, LoHa + plain LoCon on a conv). The
 * multipliers then change without re-planning (DoRA layers recompute W'), and
 * merging on the device (vkl_lora_merge_weights) is checked against the CPU
 * merge. */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "lora/lora_delta.h"
#include "lora/lora_merge_weights.h"
#include "sd/clip_text.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EXP "refkit/sd/vectors/lora_expected.safetensors"
#define TINY "refkit/sd/tiny-sd"

static vkl_test_rng rng;

/* ---- building adapters ---- */

static const vkl_lora_target *target(const vkl_lora_targets *tg, const char *name)
{
    int i = vkl_lora_targets_find(tg, name);
    if (i < 0) fail_msg("the tiny model has no %s", name);
    return &tg->v[i];
}

static vkl_lora_module *module(vkl_lora *l, const char *name, float alpha)
{
    vkl_err e;
    vkl_lora_module *m = vkl_lora_add_module(l, &e);
    assert_non_null(m);
    char k[512];
    assert_int_equal(vkl_lora_kohya_name(name, 0, k, sizeof k), 0);
    m->name = strdup(name);
    m->kname = strdup(k);
    m->alpha = alpha;
    m->has_alpha = alpha > 0;
    return m;
}

static void factor(vkl_lora_module *m, vkl_lora_role role, int nd, int64_t a, int64_t b, int64_t c, int64_t d,
                   float lo, float hi)
{
    vkl_err e;
    int64_t s[4] = {a, b, c, d};
    float *x = vkl_lora_tensor_alloc(&m->t[role], nd, s, &e);
    if (!x) fail_msg("%s", e.msg);
    vkl_test_fill(&rng, x, (size_t)vkl_lora_tensor_nelem(&m->t[role]), lo, hi);
}

static void finish(vkl_lora_module *m, const vkl_lora_targets *tg)
{
    vkl_err e;
    if (vkl_lora_module_finish(m, target(tg, m->name), &e)) fail_msg("%s", e.msg);
}

#define Q "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
#define CONV1 "unet.down_blocks.0.resnets.0.conv1"

static void build_loha(vkl_lora *l, const vkl_lora_targets *tg)
{
    vkl_lora_module *m = module(l, Q, 2);
    factor(m, VKL_LORA_HADA_W1A, 2, 32, 4, 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W1B, 2, 4, 32, 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W2A, 2, 32, 4, 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W2B, 2, 4, 32, 0, 0, -0.4f, 0.4f);
    finish(m, tg);
    /* a 3x3 conv with LyCORIS's flat factors [r, in*kh*kw] */
    m = module(l, CONV1, 2);
    factor(m, VKL_LORA_HADA_W1A, 2, 32, 4, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_HADA_W1B, 2, 4, 32 * 9, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_HADA_W2A, 2, 32, 4, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_HADA_W2B, 2, 4, 32 * 9, 0, 0, -0.3f, 0.3f);
    finish(m, tg);
    /* Tucker LoHa on a 64-channel conv */
    const char *mid = "unet.mid_block.resnets.0.conv2";
    const vkl_lora_target *t = target(tg, mid);
    m = module(l, mid, 3);
    factor(m, VKL_LORA_HADA_T1, 4, 3, 3, 3, 3, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W1A, 2, 3, t->shape[0], 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W1B, 2, 3, t->shape[1], 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_T2, 4, 3, 3, 3, 3, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W2A, 2, 3, t->shape[0], 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W2B, 2, 3, t->shape[1], 0, 0, -0.4f, 0.4f);
    finish(m, tg);
    /* Tucker LoCon (a LoRA-kind module) in the same adapter */
    const char *tl = "unet.down_blocks.1.resnets.0.conv1";
    t = target(tg, tl);
    m = module(l, tl, 2);
    factor(m, VKL_LORA_DOWN, 4, 4, t->shape[1], 1, 1, -0.3f, 0.3f);
    factor(m, VKL_LORA_MID, 4, 4, 4, 3, 3, -0.3f, 0.3f);
    factor(m, VKL_LORA_UP, 4, t->shape[0], 4, 1, 1, -0.3f, 0.3f);
    finish(m, tg);
    m = module(l, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", 4);
    factor(m, VKL_LORA_HADA_W1A, 2, 32, 4, 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W1B, 2, 4, 32, 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W2A, 2, 32, 4, 0, 0, -0.4f, 0.4f);
    factor(m, VKL_LORA_HADA_W2B, 2, 4, 32, 0, 0, -0.4f, 0.4f);
    finish(m, tg);
}

static void build_lokr(vkl_lora *l, const vkl_lora_targets *tg)
{
    /* w1 full [4,4], w2 = w2_a [8,2] @ w2_b [2,8]: scale alpha / 2 */
    vkl_lora_module *m = module(l, Q, 1);
    factor(m, VKL_LORA_LOKR_W1, 2, 4, 4, 0, 0, -0.5f, 0.5f);
    factor(m, VKL_LORA_LOKR_W2A, 2, 8, 2, 0, 0, -0.5f, 0.5f);
    factor(m, VKL_LORA_LOKR_W2B, 2, 2, 8, 0, 0, -0.5f, 0.5f);
    finish(m, tg);
    /* conv: kron of w1 [2,2] and a 4-D w2 [16,16,3,3], both full (scale 1) */
    m = module(l, "unet.down_blocks.0.resnets.0.conv2", 0);
    factor(m, VKL_LORA_LOKR_W1, 2, 2, 2, 0, 0, -0.5f, 0.5f);
    factor(m, VKL_LORA_LOKR_W2, 4, 16, 16, 3, 3, -0.1f, 0.1f);
    finish(m, tg);
    /* a plain LoCon stacked with the LoHa on conv1 */
    m = module(l, CONV1, 3);
    factor(m, VKL_LORA_DOWN, 4, 3, 32, 3, 3, -0.2f, 0.2f);
    factor(m, VKL_LORA_UP, 4, 32, 3, 1, 1, -0.2f, 0.2f);
    finish(m, tg);
    /* 37 outputs: kron over [1,2] x [37,16] */
    m = module(l, "text_encoder.text_model.encoder.layers.1.mlp.fc1", 0);
    factor(m, VKL_LORA_LOKR_W1, 2, 1, 2, 0, 0, -0.5f, 0.5f);
    factor(m, VKL_LORA_LOKR_W2, 2, 37, 16, 0, 0, -0.3f, 0.3f);
    finish(m, tg);
}

static void build_dora(vkl_lora *l, const vkl_lora_targets *tg)
{
    /* LyCORIS wd_on_out: magnitude [out, 1] */
    vkl_lora_module *m = module(l, Q, 4);
    factor(m, VKL_LORA_DOWN, 2, 4, 32, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_UP, 2, 32, 4, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_MAG, 2, 32, 1, 0, 0, 0.5f, 1.5f);
    finish(m, tg);
    /* a 1x1 convolution that runs as a linear on tokens */
    m = module(l, "unet.down_blocks.0.attentions.0.proj_in", 4);
    factor(m, VKL_LORA_DOWN, 4, 4, 32, 1, 1, -0.3f, 0.3f);
    factor(m, VKL_LORA_UP, 4, 32, 4, 1, 1, -0.3f, 0.3f);
    factor(m, VKL_LORA_MAG, 4, 32, 1, 1, 1, 0.5f, 1.5f);
    finish(m, tg);
    const char *cv = "unet.up_blocks.1.resnets.0.conv1";
    const vkl_lora_target *t = target(tg, cv);
    m = module(l, cv, 2);
    factor(m, VKL_LORA_DOWN, 4, 4, t->shape[1], 3, 3, -0.1f, 0.1f);
    factor(m, VKL_LORA_UP, 4, t->shape[0], 4, 1, 1, -0.3f, 0.3f);
    factor(m, VKL_LORA_MAG, 4, t->shape[0], 1, 1, 1, 0.5f, 1.5f);
    finish(m, tg);
    /* wd_on_out=False: magnitude per input column [1, in] */
    m = module(l, "text_encoder.text_model.encoder.layers.0.self_attn.k_proj", 4);
    factor(m, VKL_LORA_DOWN, 2, 4, 32, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_UP, 2, 32, 4, 0, 0, -0.3f, 0.3f);
    factor(m, VKL_LORA_MAG, 2, 1, 32, 0, 0, 0.5f, 1.5f);
    finish(m, tg);
}

/* Builds, writes as a kohya/LyCORIS file, reads back against the model. */
static void make_adapter(vkl_lora *out, const vkl_lora_targets *tg, void (*build)(vkl_lora *, const vkl_lora_targets *),
                         const char *dir, const char *file, vkl_lora_kind kind0)
{
    vkl_lora l;
    memset(&l, 0, sizeof l);
    build(&l, tg);
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    vkl_err e;
    if (vkl_lora_save_kohya(&l, p, &e)) fail_msg("%s", e.msg);
    vkl_lora_opts o = {tg, 0, NULL, 0};
    if (vkl_lora_load(p, &o, out, &e)) fail_msg("%s: %s", p, e.msg);
    assert_int_equal(out->n, l.n);
    const vkl_lora_module *q = vkl_lora_find(out, Q);
    assert_non_null(q);
    assert_int_equal(q->kind, kind0);
    for (int i = 0; i < l.n; i++) {
        const vkl_lora_module *r = vkl_lora_find(out, l.m[i].name);
        assert_non_null(r);
        assert_int_equal(r->kind, l.m[i].kind);
        assert_true(fabs(r->scale - l.m[i].scale) < 1e-12);
    }
    vkl_lora_free(&l);
}

/* ---- the CPU merge ---- */

typedef struct {
    char *name;   /* weight name */
    float *orig;  /* the model's weight */
    uint64_t n;
} base_w;

typedef struct {
    base_w v[32];
    int n;
} bases;

static base_w *base_of(bases *b, const vkl_sd_source *src, const char *module)
{
    char wn[600];
    snprintf(wn, sizeof wn, "%s.weight", module);
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->v[i].name, wn)) return &b->v[i];
    assert_true(b->n < 32);
    base_w *x = &b->v[b->n++];
    const vkl_sd_entry *en = vkl_sd_source_find(src, wn);
    assert_non_null(en);
    x->name = strdup(wn);
    x->n = vkl_sd_entry_nelem(en);
    x->orig = malloc(sizeof(float) * x->n);
    vkl_err e;
    assert_int_equal(vkl_sd_source_read_f32(src, en, x->orig, x->n, &e), 0);
    return x;
}

static float mult_of(const vkl_lora_use *u, const char *module)
{
    return strncmp(module, "text_encoder", 12) ? u->unet_mult : u->te_mult;
}

/* Writes W + sum m * delta (DoRA first, on the original W) into ref (f32 weights). */
static void cpu_merge(vkl_ctx *c, vkl_weights *ref, bases *b, const vkl_sd_source *src, const vkl_lora_use *uses,
                      int n)
{
    for (int i = 0; i < n; i++)
        for (int k = 0; k < uses[i].lora->n; k++) base_of(b, src, uses[i].lora->m[k].name);
    vkl_err e;
    for (int j = 0; j < b->n; j++) {
        base_w *x = &b->v[j];
        double *acc = malloc(sizeof(double) * x->n), *d = malloc(sizeof(double) * x->n);
        for (uint64_t q = 0; q < x->n; q++) acc[q] = x->orig[q];
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < n; i++) {
                char mod[600];
                snprintf(mod, sizeof mod, "%.*s", (int)(strlen(x->name) - 7), x->name);
                const vkl_lora_module *m = vkl_lora_find(uses[i].lora, mod);
                if (!m || (m->kind == VKL_LORA_KIND_DORA) != (pass == 0)) continue;
                if (vkl_lora_delta(m, x->orig, d, &e)) fail_msg("%s", e.msg);
                double mu = mult_of(&uses[i], mod);
                for (uint64_t q = 0; q < x->n; q++) acc[q] += mu * d[q];
            }
        float *f = malloc(sizeof(float) * x->n);
        for (uint64_t q = 0; q < x->n; q++) f[q] = (float)acc[q];
        assert_int_equal(vkl_tensor_upload(c, vkl_weights_find(ref, x->name), f, VKL_F32, &e), 0);
        free(acc);
        free(d);
        free(f);
    }
}

/* ---- running ---- */

static vkl_tensor *up(vkl_ctx *c, const char *name, vkl_dtype dt, int nd, const int64_t *s)
{
    int64_t n;
    void *x = dt == VKL_I32 ? (void *)vkl_test_ref_i32(EXP, name, &n) : (void *)vkl_test_ref_f32(EXP, name, &n);
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, s, &e);
    assert_int_equal(vkl_tensor_upload(c, t, x, dt, &e), 0);
    free(x);
    return t;
}

typedef struct {
    vkl_graph *g;
    vkl_tensor *eps, *hs;
} net;

static void net_build(net *r, vkl_ctx *c, const vkl_sd_config *cfg, vkl_weights *w, const vkl_lora_set *set,
                      vkl_tensor *const *in)
{
    vkl_unet unet = {&cfg->unet, w, set, 0};
    vkl_clip_text te = {&cfg->te[0], w, "text_encoder.", set};
    r->g = vkl_graph_new(c);
    r->eps = vkl_unet_forward(r->g, &unet, in[0], in[1], in[2], NULL);
    r->hs = vkl_clip_text_forward(r->g, &te, in[3], 0, 1, NULL);
    vkl_graph_keep(r->g, r->eps);
    vkl_graph_keep(r->g, r->hs);
    vkl_err e;
    if (vkl_graph_plan(r->g, &e)) fail_msg("%s", e.msg);
}

static float *get(vkl_ctx *c, vkl_tensor *t)
{
    float *x = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    vkl_err e;
    assert_int_equal(vkl_tensor_download(c, t, x, VKL_F32, &e), 0);
    return x;
}

/* Runs both nets and compares; returns max |adapted - plain| / max |plain| of eps for information. */
static void compare(vkl_ctx *c, net *rt, net *ref, const char *label)
{
    vkl_err e;
    assert_int_equal(vkl_graph_run(rt->g, &e), 0);
    assert_int_equal(vkl_graph_run(ref->g, &e), 0);
    const char *names[2] = {"UNet eps", "text states"};
    vkl_tensor *a[2] = {rt->eps, rt->hs}, *b[2] = {ref->eps, ref->hs};
    for (int k = 0; k < 2; k++) {
        float *x = get(c, a[k]), *y = get(c, b[k]);
        char what[160];
        snprintf(what, sizeof what, "%s, %s: run time vs merged on the CPU", label, names[k]);
        vkl_test_assert_scaled(what, x, y, (size_t)vkl_tensor_nelem(a[k]), 1e-4);
        free(x);
        free(y);
    }
}

/* The adapters must change the outputs, or the comparison proves nothing. */
static void assert_changes(vkl_ctx *c, net *ref, const float *plain_eps, const float *plain_hs)
{
    float *x = get(c, ref->eps), *y = get(c, ref->hs);
    size_t ne = (size_t)vkl_tensor_nelem(ref->eps), nh = (size_t)vkl_tensor_nelem(ref->hs);
    float me = 0, mh = 0;
    for (size_t i = 0; i < ne; i++) me = fmaxf(me, fabsf(plain_eps[i]));
    for (size_t i = 0; i < nh; i++) mh = fmaxf(mh, fabsf(plain_hs[i]));
    float de = vkl_test_max_abs_diff(x, plain_eps, ne) / me, dh = vkl_test_max_abs_diff(y, plain_hs, nh) / mh;
    printf("adapters change eps by %.3g and text states by %.3g of their max\n", de, dh);
    assert_true(de > 1e-2 && dh > 1e-2);
    free(x);
    free(y);
}

static void every_kind_at_run_time(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(EXP);
    vkl_test_rng_seed(&rng, 77);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(TINY), NULL, &src, &e), 0);
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(cfg, &tg, &e), 0);
    const char *dir = vkl_test_tmpdir();
    vkl_lora ad[3];
    make_adapter(&ad[0], &tg, build_loha, dir, "loha.safetensors", VKL_LORA_KIND_LOHA);
    make_adapter(&ad[1], &tg, build_lokr, dir, "lokr.safetensors", VKL_LORA_KIND_LOKR);
    make_adapter(&ad[2], &tg, build_dora, dir, "dora.safetensors", VKL_LORA_KIND_DORA);
    vkl_lora_targets_free(&tg);

    vkl_weights *w = vkl_weights_new(), *ref = vkl_weights_new(), *dev = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "", VKL_F32, w, &e), 0);
    assert_int_equal(vkl_sd_load_weights(c, src, "", VKL_F32, ref, &e), 0);
    assert_int_equal(vkl_sd_load_weights(c, src, "", VKL_F32, dev, &e), 0);

    vkl_lora_use use[3] = {{&ad[0], 1.0f, 1.0f}, {&ad[1], 1.0f, 1.0f}, {&ad[2], 1.0f, 1.0f}};
    vkl_lora_set *set;
    /* DoRA needs the model's weights */
    assert_int_equal(vkl_lora_set_build(c, use, 3, &set, &e), -1);
    assert_non_null(strstr(e.msg, "DoRA"));
    if (vkl_lora_set_build_ex(c, use, 3, w, &set, &e)) fail_msg("%s", e.msg);

    int64_t ss[4] = {2, 4, 16, 16}, cs[3] = {2, 77, 32}, is[2] = {6, 77};
    float tv[2] = {500, 500};
    vkl_tensor *in[4] = {up(c, "sample", VKL_F32, 4, ss), vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){2}, &e),
                         up(c, "encoder_hidden_states", VKL_F32, 3, cs), up(c, "te_input_ids", VKL_I32, 2, is)};
    assert_int_equal(vkl_tensor_upload(c, in[1], tv, VKL_F32, &e), 0);
    net rt, rf;
    net_build(&rt, c, cfg, w, set, in);
    net_build(&rf, c, cfg, ref, NULL, in);
    assert_int_equal(vkl_graph_run(rf.g, &e), 0);
    float *plain_eps = get(c, rf.eps), *plain_hs = get(c, rf.hs);

    bases b = {0};
    cpu_merge(c, ref, &b, src, use, 3);
    compare(c, &rt, &rf, "multipliers 1");
    assert_changes(c, &rf, plain_eps, plain_hs);

    /* new multipliers, same planned graphs: the UNet and text encoder apart, one negative */
    vkl_lora_use use2[3] = {{&ad[0], 0.5f, 1.5f}, {&ad[1], -0.7f, 0.3f}, {&ad[2], 0.6f, 0.9f}};
    if (vkl_lora_set_multipliers(set, use2, 3, &e)) fail_msg("%s", e.msg);
    cpu_merge(c, ref, &b, src, use2, 3);
    compare(c, &rt, &rf, "multipliers changed without re-planning");
    /* only the LoHa's multiplier moves: a scale upload */
    use2[0].unet_mult = 1.25f;
    use2[0].te_mult = -0.5f;
    if (vkl_lora_set_multipliers(set, use2, 3, &e)) fail_msg("%s", e.msg);
    cpu_merge(c, ref, &b, src, use2, 3);
    compare(c, &rt, &rf, "LoHa multiplier changed");

    /* merged on the device: the weights the CPU merge made */
    if (vkl_lora_merge_weights(c, dev, use2, 3, &e)) fail_msg("%s", e.msg);
    for (int j = 0; j < b.n; j++) {
        float *x = get(c, vkl_weights_find(dev, b.v[j].name)), *y = get(c, vkl_weights_find(ref, b.v[j].name));
        char what[700];
        snprintf(what, sizeof what, "%s merged on the device vs the CPU", b.v[j].name);
        vkl_test_assert_close(what, x, y, (size_t)b.v[j].n, 1e-6f, 1e-5f);
        free(x);
        free(y);
    }

    for (int j = 0; j < b.n; j++) {
        free(b.v[j].name);
        free(b.v[j].orig);
    }
    free(plain_eps);
    free(plain_hs);
    vkl_graph_free(rt.g);
    vkl_graph_free(rf.g);
    for (int i = 0; i < 4; i++) vkl_tensor_free(in[i]);
    vkl_lora_set_free(set);
    for (int i = 0; i < 3; i++) vkl_lora_free(&ad[i]);
    vkl_weights_free(w);
    vkl_weights_free(ref);
    vkl_weights_free(dev);
    vkl_sd_source_close(src);
    vkl_test_rmtree(dir);
    vkl_test_ctx_done(c);
}

/* Two DoRA adapters on one layer are refused, at run time and when merging. */
/* LoHa and LoKr at run time hold their factors on the device, not a
 * weight-sized delta per module (composed in each graph instead): the set's
 * memory is the factors' (plus one multiplier per module). */
static void factored_forms_hold_factor_memory(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(EXP);
    vkl_test_rng_seed(&rng, 78);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(TINY), NULL, &src, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(vkl_sd_source_config(src), &tg, &e), 0);
    const char *dir = vkl_test_tmpdir();
    vkl_lora ad[2];
    make_adapter(&ad[0], &tg, build_loha, dir, "loha.safetensors", VKL_LORA_KIND_LOHA);
    make_adapter(&ad[1], &tg, build_lokr, dir, "lokr.safetensors", VKL_LORA_KIND_LOKR);
    vkl_lora_targets_free(&tg);
    /* only the LoHa / LoKr modules (the files also carry LoCon ones): moved
     * to the front, the count cut for the build and restored for freeing */
    int all[2];
    for (int i = 0; i < 2; i++) {
        all[i] = ad[i].n;
        int k = 0;
        for (int j = 0; j < ad[i].n; j++)
            if (ad[i].m[j].kind == VKL_LORA_KIND_LOHA || ad[i].m[j].kind == VKL_LORA_KIND_LOKR) {
                vkl_lora_module t = ad[i].m[k];
                ad[i].m[k++] = ad[i].m[j];
                ad[i].m[j] = t;
            }
        assert_true(k > 0);
        ad[i].n = k;
    }
    uint64_t factors = 0, deltas = 0;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < ad[i].n; k++) {
            const vkl_lora_module *m = &ad[i].m[k];
            uint64_t full = (vkl_lora_wnelem(m) * 4 + 255) / 256 * 256;
            if (m->t[VKL_LORA_HADA_T1].data || m->t[VKL_LORA_LOKR_T2].data) {
                factors += full; /* Tucker forms: the full delta */
            } else {
                for (int r = 0; r < VKL_LORA_ROLES; r++)
                    if (m->t[r].data) factors += (vkl_lora_tensor_nelem(&m->t[r]) * 4 + 255) / 256 * 256;
            }
            factors += 256; /* the multiplier */
            deltas += full + 256;
        }
    /* an upload as large as any the set makes first, so the context's
     * staging buffer is not counted as the set's */
    float *zeros = calloc(deltas / 4, sizeof(float));
    vkl_tensor *warm = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){(int64_t)(deltas / 4)}, &e);
    assert_non_null(warm);
    assert_int_equal(vkl_tensor_upload(c, warm, zeros, VKL_F32, &e), 0);
    vkl_tensor_free(warm);
    free(zeros);
    vkl_mem_stats before, after;
    vkl_mem_get_stats(c, &before);
    vkl_lora_use use[2] = {{&ad[0], 1.0f, 1.0f}, {&ad[1], 0.5f, 0.5f}};
    vkl_lora_set *set;
    if (vkl_lora_set_build(c, use, 2, &set, &e)) fail_msg("%s", e.msg);
    vkl_mem_get_stats(c, &after);
    uint64_t held = after.total_current - before.total_current;
    print_message("set holds %llu bytes; factors %llu, full deltas would be %llu\n", (unsigned long long)held,
                  (unsigned long long)factors, (unsigned long long)deltas);
    assert_true(held <= factors);
    assert_true(held < deltas);
    vkl_lora_set_free(set);
    for (int i = 0; i < 2; i++) {
        ad[i].n = all[i];
        vkl_lora_free(&ad[i]);
    }
    vkl_sd_source_close(src);
    vkl_test_rmtree(dir);
    vkl_test_ctx_done(c);
}

static void two_dora_on_one_layer(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(TINY);
    vkl_test_rng_seed(&rng, 5);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(TINY), NULL, &src, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(vkl_sd_source_config(src), &tg, &e), 0);
    vkl_lora a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    build_dora(&a, &tg);
    build_dora(&b, &tg);
    vkl_weights *w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "", VKL_F32, w, &e), 0);
    vkl_lora_use use[2] = {{&a, 1, 1}, {&b, 1, 1}};
    vkl_lora_set *set;
    assert_int_equal(vkl_lora_set_build_ex(c, use, 2, w, &set, &e), -1);
    assert_non_null(strstr(e.msg, "two adapters"));
    assert_int_equal(vkl_lora_merge_weights(c, w, use, 2, &e), -1);
    assert_non_null(strstr(e.msg, "two adapters"));
    vkl_lora_free(&a);
    vkl_lora_free(&b);
    vkl_lora_targets_free(&tg);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(every_kind_at_run_time),
                                       cmocka_unit_test(factored_forms_hold_factor_memory),
                                       cmocka_unit_test(two_dora_on_one_layer)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
