/* The HyperLoRA network (models/lora/hyperlora.h) on tiny-llama's q/v
 * modules:
 *   - emit and the gradients of one training step (learning rate 0) equal
 *     the MLP and its chain rule recomputed here in double precision for a
 *     given dL/do;
 *   - end to end: the gradient of the language model's loss with respect to
 *     chosen entries of W1, b1, W2, b2 (dL/do read off a gradients-only LoRA
 *     step, then the network's backward pass) against central differences
 *     of that loss;
 *   - save and load give the same emitted adapter; a file is refused for a
 *     template of other modules. */
#include "llama_check.h"

#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
#include "lora/hyperlora.h"

#include <unistd.h>

#define MODEL LM_DIR "/tiny-llama"
#define H 5
#define B 2
#define L 8

typedef struct fixture {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_lora tmpl;
    vkl_hyperlora *hy;
    int D;
    int64_t P;
    float *cond, *mean;
    float scale;
} fixture;

static void setup_fixture(fixture *f, const char *const *targets, int nt)
{
    vkl_err e = {{0}};
    f->c = vkl_test_ctx(NULL);
    f->m = lm_load(f->c, MODEL, VKL_F32);
    f->D = f->m->cfg.hidden;
    vkl_llama_lora_opts lo = {.targets = targets, .nt = nt, .rank = 2, .alpha = 4, .seed = 3};
    if (vkl_llama_lora_init(f->m, &lo, &f->tmpl, &e) || vkl_hyperlora_new(f->c, &f->tmpl, f->D, H, 5, &f->hy, &e))
        fail_msg("%s", e.msg);
    f->P = vkl_hyperlora_outputs(f->hy);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 11);
    f->cond = malloc(sizeof(float) * (size_t)f->D);
    f->mean = malloc(sizeof(float) * (size_t)f->D);
    vkl_test_fill(&r, f->cond, (size_t)f->D, -1, 1);
    vkl_test_fill(&r, f->mean, (size_t)f->D, -0.3f, 0.3f);
    f->scale = 0.7f;
    if (vkl_hyperlora_set_centre(f->hy, f->mean, f->scale, &e)) fail_msg("%s", e.msg);
    /* W2 and b1 away from their zero start, so that every parameter has a gradient */
    float *w2 = malloc(sizeof(float) * (size_t)(f->P * H)), b1[H];
    vkl_test_fill(&r, w2, (size_t)(f->P * H), -0.05f, 0.05f);
    vkl_test_fill(&r, b1, H, -0.5f, 0.5f);
    if (vkl_tensor_upload(f->c, vkl_hyperlora_param(f->hy, 2), w2, VKL_F32, &e) ||
        vkl_tensor_upload(f->c, vkl_hyperlora_param(f->hy, 1), b1, VKL_F32, &e))
        fail_msg("%s", e.msg);
    free(w2);
    vkl_adamw_opts ao;
    vkl_adamw_opts_default(&ao);
    ao.weight_decay = 0;
    if (vkl_hyperlora_train_begin(f->hy, &ao, &e)) fail_msg("%s", e.msg);
}

static void free_fixture(fixture *f)
{
    vkl_hyperlora_free(f->hy);
    vkl_lora_free(&f->tmpl);
    vkl_llama_free(f->m);
    vkl_test_ctx_done(f->c);
    free(f->cond);
    free(f->mean);
}

static float *download(vkl_ctx *c, vkl_tensor *t) { return lm_download(c, t); }

/* emit and one step's gradients against the MLP recomputed here */
static void test_chain_rule(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    fixture f;
    const char *const qv[] = {"q_proj", "v_proj"};
    setup_fixture(&f, qv, 2);
    int D = f.D;
    int64_t P = f.P;
    vkl_err e = {{0}};
    float *w1 = download(f.c, vkl_hyperlora_param(f.hy, 0)), *b1 = download(f.c, vkl_hyperlora_param(f.hy, 1));
    float *w2 = download(f.c, vkl_hyperlora_param(f.hy, 2)), *b2 = download(f.c, vkl_hyperlora_param(f.hy, 3));
    /* b2 starts as the template's factors (B zero) */
    for (int k = 0; k < f.tmpl.n; k++) {
        int64_t oa = vkl_hyperlora_offset(f.hy, k, VKL_LORA_DOWN), ob = vkl_hyperlora_offset(f.hy, k, VKL_LORA_UP);
        assert_memory_equal(b2 + oa, f.tmpl.m[k].t[VKL_LORA_DOWN].data, sizeof(float) * (size_t)(ob - oa));
        for (int64_t i = 0; i < (int64_t)vkl_lora_tensor_nelem(&f.tmpl.m[k].t[VKL_LORA_UP]); i++) assert_true(b2[ob + i] == 0);
    }
    double *x = malloc(sizeof(double) * (size_t)D), h[H], dh[H] = {0};
    for (int d = 0; d < D; d++) x[d] = (f.cond[d] - f.mean[d]) / f.scale;
    for (int j = 0; j < H; j++) {
        double z = b1[j];
        for (int d = 0; d < D; d++) z += (double)w1[(size_t)j * D + d] * x[d];
        h[j] = tanh(z);
    }
    float *o = malloc(sizeof(float) * (size_t)P), *want = malloc(sizeof(float) * (size_t)P);
    for (int64_t p = 0; p < P; p++) {
        double s = b2[p];
        for (int j = 0; j < H; j++) s += (double)w2[(size_t)p * H + j] * h[j];
        want[p] = (float)s;
    }
    if (vkl_hyperlora_emit(f.hy, f.cond, o, NULL, &e)) fail_msg("%s", e.msg);
    vkl_test_assert_close("emitted factors", o, want, (size_t)P, 1e-5f, 1e-4f);

    float *dout = malloc(sizeof(float) * (size_t)P);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 12);
    vkl_test_fill(&r, dout, (size_t)P, -1, 1);
    if (vkl_hyperlora_train_step(f.hy, f.cond, dout, 1, 0.0f, &e)) fail_msg("%s", e.msg);
    float *g[4];
    for (int i = 0; i < 4; i++) g[i] = download(f.c, vkl_hyperlora_grad(f.hy, i));
    float *wdw1 = malloc(sizeof(float) * (size_t)H * D), wdb1[H];
    float *wdw2 = malloc(sizeof(float) * (size_t)(P * H));
    for (int64_t p = 0; p < P; p++)
        for (int j = 0; j < H; j++) {
            wdw2[p * H + j] = (float)(dout[p] * h[j]);
            dh[j] += (double)dout[p] * w2[p * H + j];
        }
    for (int j = 0; j < H; j++) {
        double dz = dh[j] * (1 - h[j] * h[j]);
        wdb1[j] = (float)dz;
        for (int d = 0; d < D; d++) wdw1[(size_t)j * D + d] = (float)(dz * x[d]);
    }
    vkl_test_assert_close("dL/dW1", g[0], wdw1, (size_t)H * D, 1e-5f, 1e-4f);
    vkl_test_assert_close("dL/db1", g[1], wdb1, H, 1e-5f, 1e-4f);
    vkl_test_assert_close("dL/dW2", g[2], wdw2, (size_t)(P * H), 1e-6f, 1e-4f);
    vkl_test_assert_close("dL/db2", g[3], dout, (size_t)P, 0, 0);
    /* learning rate 0 left the parameters as they were */
    float *w1b = download(f.c, vkl_hyperlora_param(f.hy, 0));
    assert_memory_equal(w1b, w1, sizeof(float) * (size_t)H * D);
    for (int i = 0; i < 4; i++) free(g[i]);
    free(w1b);
    free(wdw1);
    free(wdw2);
    free(dout);
    free(o);
    free(want);
    free(x);
    free(w1);
    free(b1);
    free(w2);
    free(b2);
    free_fixture(&f);
}

/* ---- end to end: the LM loss as a function of the network's parameters ---- */

typedef struct lm {
    vkl_lora_set *set;
    vkl_llama_train *tr;
    int32_t ids[B * L], labels[B * L];
    int64_t *goff;
} lm;

static void upload_adapter(fixture *f, lm *s)
{
    vkl_err e = {{0}};
    for (int k = 0; k < f->tmpl.n; k++) {
        const vkl_lora_slot *sl = vkl_lora_set_find(s->set, f->tmpl.m[k].name);
        assert_non_null(sl);
        if (vkl_lora_slot_upload(f->c, sl, &f->tmpl.m[k], &e)) fail_msg("%s", e.msg);
    }
}

static double lm_loss(fixture *f, lm *s)
{
    vkl_err e = {{0}};
    float loss;
    if (vkl_hyperlora_emit(f->hy, f->cond, NULL, &f->tmpl, &e)) fail_msg("%s", e.msg);
    upload_adapter(f, s);
    if (vkl_llama_train_step(s->tr, s->ids, s->labels, NULL, 1, 0, &loss, &e)) fail_msg("%s", e.msg);
    return loss;
}

/* The loss with entry i of parameter pt (host copy v) set to x. */
static double loss_with(fixture *f, lm *s, vkl_tensor *pt, float *v, int64_t i, float x)
{
    vkl_err e = {{0}};
    v[i] = x;
    if (vkl_tensor_upload(f->c, pt, v, VKL_F32, &e)) fail_msg("%s", e.msg);
    return lm_loss(f, s);
}

static void test_end_to_end(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    fixture f;
    const char *const qv[] = {"q_proj", "v_proj"};
    setup_fixture(&f, qv, 2);
    vkl_err e = {{0}};
    lm s;
    memset(&s, 0, sizeof s);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 13);
    for (int i = 0; i < B * L; i++) s.ids[i] = s.labels[i] = vkl_test_rng_int(&r, 3, f.m->cfg.vocab - 1);
    vkl_lora_use use = {&f.tmpl, 1.0f, 1.0f};
    vkl_llama_train_opts to = {.grad_only = 1};
    vkl_adamw_opts_default(&to.adam);
    if (vkl_lora_set_build(f.c, &use, 1, &s.set, &e) || vkl_llama_train_new(f.m, s.set, NULL, B, L, &to, &s.tr, &e))
        fail_msg("%s", e.msg);
    /* where each differentiated tensor lies in o: matched by the set's device tensors */
    int np = vkl_llama_train_count(s.tr);
    float *dout = calloc((size_t)f.P, sizeof(float));
    double base = lm_loss(&f, &s);
    for (int i = 0; i < np; i++) {
        vkl_tensor *t = vkl_llama_train_param(s.tr, i);
        int64_t off = -1;
        for (int k = 0; k < f.tmpl.n && off < 0; k++) {
            const vkl_lora_slot *sl = vkl_lora_set_find(s.set, f.tmpl.m[k].name);
            if (sl->a_cat == t) off = vkl_hyperlora_offset(f.hy, k, VKL_LORA_DOWN);
            if (sl->b_cat == t) off = vkl_hyperlora_offset(f.hy, k, VKL_LORA_UP);
        }
        assert_true(off >= 0);
        float *g = download(f.c, vkl_llama_train_grad(s.tr, i));
        memcpy(dout + off, g, sizeof(float) * (size_t)vkl_tensor_nelem(t));
        free(g);
    }
    if (vkl_hyperlora_train_step(f.hy, f.cond, dout, 1, 0.0f, &e)) fail_msg("%s", e.msg);
    const float eps[4] = {3e-2f, 3e-2f, 3e-2f, 3e-2f};
    int checked = 0;
    for (int p = 0; p < 4; p++) {
        vkl_tensor *pt = vkl_hyperlora_param(f.hy, p);
        int64_t n = vkl_tensor_nelem(pt);
        float *g = download(f.c, vkl_hyperlora_grad(f.hy, p)), *v = download(f.c, pt);
        /* the three entries of largest gradient: where a difference quotient is meaningful in f32 */
        int64_t top[3] = {-1, -1, -1};
        for (int64_t i = 0; i < n; i++)
            for (int k = 0; k < 3; k++)
                if (top[k] < 0 || fabsf(g[i]) > fabsf(g[top[k]])) {
                    for (int m = 2; m > k; m--) top[m] = top[m - 1];
                    top[k] = i;
                    break;
                }
        for (int k = 0; k < 3; k++) {
            int64_t i = top[k];
            float keep = v[i];
            double lp = loss_with(&f, &s, pt, v, i, keep + eps[p]), lmn = loss_with(&f, &s, pt, v, i, keep - eps[p]);
            loss_with(&f, &s, pt, v, i, keep);
            double fd = (lp - lmn) / (2.0 * eps[p]);
            printf("  %s[%lld]: autograd %.6g, central difference %.6g\n", vkl_hyperlora_param_name(p), (long long)i,
                   (double)g[i], fd);
            if (fabs(fd - g[i]) > 0.01 * fabs(fd) + 1e-4)
                fail_msg("%s[%lld]: gradient %g, central difference %g", vkl_hyperlora_param_name(p), (long long)i,
                         (double)g[i], fd);
            checked++;
        }
        free(g);
        free(v);
    }
    assert_int_equal(checked, 12);
    assert_true(fabs(lm_loss(&f, &s) - base) < 1e-6); /* parameters restored */
    free(dout);
    vkl_llama_train_free(s.tr);
    vkl_lora_set_free(s.set);
    free_fixture(&f);
}

/* A copy of the file at src with metadata key set to value (NULL: kept) and
 * tensor `flat` (NULL: none) written flat, one dimension. */
static void rewrite(const char *src, const char *dst, const char *key, const char *value, const char *flat)
{
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(src, &f, &e)) fail_msg("%s", e.msg);
    vkl_st_writer *w = vkl_st_writer_new();
    for (int i = 0; i < vkl_st_meta_count(f); i++) {
        const char *k = vkl_st_meta_key(f, i);
        if (vkl_st_writer_meta(w, k, key && !strcmp(k, key) ? value : vkl_st_meta_value(f, i), &e)) fail_msg("%s", e.msg);
    }
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        float *x = malloc(sizeof(float) * t->nelem);
        if (vkl_st_read_f32(f, t->name, x, t->nelem, &e)) fail_msg("%s", e.msg);
        int64_t n = (int64_t)t->nelem;
        int fl = flat && !strcmp(t->name, flat);
        if (vkl_st_writer_add(w, t->name, VKL_F32, fl ? 1 : t->ndim, fl ? &n : t->shape, x, &e)) fail_msg("%s", e.msg);
        free(x);
    }
    if (vkl_st_writer_finish(w, dst, &e)) fail_msg("%s", e.msg);
    vkl_st_writer_free(w);
    vkl_st_close(f);
}

/* save, load: the same emitted factors; a template of other modules refused */
static void test_file(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    fixture f;
    const char *const qv[] = {"q_proj", "v_proj"};
    setup_fixture(&f, qv, 2);
    vkl_err e = {{0}};
    char path[1024];
    snprintf(path, sizeof path, "%s/vkl-hyperlora-%ld.safetensors", vkl_test_tmpdir(), (long)getpid());
    vkl_hyperlora_meta m = {.rank = 2, .alpha = 4, .hidden = H, .cond_dim = f.D};
    snprintf(m.targets, sizeof m.targets, "q_proj,v_proj");
    snprintf(m.base, sizeof m.base, "tiny-llama");
    if (vkl_hyperlora_save(f.hy, &m, "tasks", "[\"a\"]", path, &e)) fail_msg("%s", e.msg);
    vkl_hyperlora_meta got;
    if (vkl_hyperlora_read_meta(path, &got, &e)) fail_msg("%s", e.msg);
    assert_string_equal(got.targets, "q_proj,v_proj");
    assert_int_equal(got.rank, 2);
    assert_int_equal(got.hidden, H);
    assert_int_equal(got.cond_dim, f.D);
    assert_true(got.alpha == 4);
    vkl_hyperlora *h2 = NULL;
    if (vkl_hyperlora_load(f.c, path, &f.tmpl, &h2, &e)) fail_msg("%s", e.msg);
    float *a = malloc(sizeof(float) * (size_t)f.P), *b = malloc(sizeof(float) * (size_t)f.P);
    if (vkl_hyperlora_emit(f.hy, f.cond, a, NULL, &e) || vkl_hyperlora_emit(h2, f.cond, b, NULL, &e)) fail_msg("%s", e.msg);
    assert_memory_equal(a, b, sizeof(float) * (size_t)f.P);
    vkl_hyperlora_free(h2);
    /* other modules (k_proj too): refused, naming the count */
    vkl_lora other;
    const char *const qkv[] = {"q_proj", "k_proj", "v_proj"};
    vkl_llama_lora_opts lo = {.targets = qkv, .nt = 3, .rank = 2, .alpha = 4, .seed = 3};
    if (vkl_llama_lora_init(f.m, &lo, &other, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_hyperlora_load(f.c, path, &other, &h2, &e), -1);
    assert_non_null(strstr(e.msg, "holds 6 adapter modules but its targets make 9"));
    vkl_lora_free(&other);
    /* not a hypernetwork */
    assert_int_equal(vkl_hyperlora_read_meta(vkl_test_shared_path(MODEL "/model.safetensors"), &got, &e), -1);
    assert_non_null(strstr(e.msg, "is not a HyperLoRA network"));
    /* lying files: each refused with the field named */
    char bad[1100];
    snprintf(bad, sizeof bad, "%s.bad", path);
    static const struct { const char *key, *value, *flat, *msg; } lies[] = {
        {"rank", "four", NULL, "metadata rank is \"four\""},
        {"cond_scale", "-1", NULL, "metadata cond_scale is -1"},
        {"modules", "{}", NULL, "metadata modules missing or not a JSON list"},
        {"modules", "[[\"x\", 64, 64]]", NULL, "holds 1 adapter modules but its targets make 6"},
        {NULL, NULL, "hyper.w2", "tensor hyper.w2 is not shaped f32["},
        {NULL, NULL, "hyper.w1", "tensor hyper.w1 is not shaped f32["},
    };
    for (size_t i = 0; i < sizeof lies / sizeof *lies; i++) {
        rewrite(path, bad, lies[i].key, lies[i].value, lies[i].flat);
        h2 = NULL;
        assert_int_equal(vkl_hyperlora_load(f.c, bad, &f.tmpl, &h2, &e), -1);
        assert_null(h2);
        if (!strstr(e.msg, lies[i].msg)) fail_msg("case %zu: %s (wanted: %s)", i, e.msg, lies[i].msg);
    }
    unlink(bad);
    unlink(path);
    free(a);
    free(b);
    free_fixture(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chain_rule),
        cmocka_unit_test(test_end_to_end),
        cmocka_unit_test(test_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
