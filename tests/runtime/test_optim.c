/* AdamW against the reference optimiser steps: the SD LoRA training vectors
 * (torch AdamW, weight decay 0.01) and the LLaMA LoRA+ vectors (B matrices at
 * 16x the rate, no weight decay), feeding the stored gradients; clipping and
 * NaN skipping; learning-rate schedules against hand-computed values. */
#include "vkl_test.h"
#include "io/safetensors.h"
#include "optim.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    vkl_st_file *f;
    char **names;
    int n;
} keyset;

/* parameter names = tensors "init.<name>" */
static void load_keys(const char *rel, const char *prefix, keyset *k)
{
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(vkl_test_shared_path(rel), &k->f, &e), 0);
    k->names = calloc((size_t)vkl_st_count(k->f), sizeof(char *));
    k->n = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < vkl_st_count(k->f); i++) {
        const char *nm = vkl_st_at(k->f, i)->name;
        if (!strncmp(nm, prefix, pl)) k->names[k->n++] = strdup(nm + pl);
    }
}

static float *read_t(vkl_st_file *f, const char *fmt, const char *name, int64_t *n)
{
    char full[512];
    snprintf(full, sizeof full, fmt, name);
    const vkl_st_tensor *t = vkl_st_find(f, full);
    if (!t) {
        print_error("missing %s\n", full);
        fail();
    }
    float *x = malloc(sizeof(float) * (t->nelem ? t->nelem : 1));
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_read(f, t, VKL_F32, x, &e), 0);
    *n = (int64_t)t->nelem;
    return x;
}

/* Runs two AdamW steps with stored gradients; compares with stored params. */
static void two_steps(const char *rel, const char *init_fmt, const char *g1_fmt, const char *g2_fmt,
                      const char *p1_fmt, const char *p2_fmt, float lr, float wd, float b_mult)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    keyset k;
    char pre[64];
    snprintf(pre, sizeof pre, "%.*s", (int)(strchr(init_fmt, '%') - init_fmt), init_fmt);
    load_keys(rel, pre, &k);
    assert_true(k.n > 0);
    vkl_tensor **P = calloc((size_t)k.n, sizeof *P), **G = calloc((size_t)k.n, sizeof *G);
    float *mult = calloc((size_t)k.n, sizeof *mult);
    vkl_err e = {{0}};
    for (int i = 0; i < k.n; i++) {
        int64_t n;
        float *x = read_t(k.f, init_fmt, k.names[i], &n);
        P[i] = vkl_tensor_new(c, VKL_F32, 1, &n, &e);
        G[i] = vkl_tensor_new(c, VKL_F32, 1, &n, &e);
        assert_int_equal(vkl_tensor_upload(c, P[i], x, VKL_F32, &e), 0);
        free(x);
        mult[i] = (strstr(k.names[i], "lora_B") || strstr(k.names[i], "lora_up")) ? b_mult : 1.0f;
    }
    vkl_adamw_opts o;
    vkl_adamw_opts_default(&o);
    o.lr = lr;
    o.weight_decay = wd;
    vkl_adamw *a = vkl_adamw_new(c, P, k.n, mult, &o, &e);
    assert_non_null(a);
    vkl_graph *g = vkl_graph_new(c);
    assert_int_equal(vkl_adamw_append(a, g, G, &e), 0);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    const char *gfmt[2] = {g1_fmt, g2_fmt}, *pfmt[2] = {p1_fmt, p2_fmt};
    for (int step = 1; step <= 2; step++) {
        for (int i = 0; i < k.n; i++) {
            int64_t n;
            float *gr = read_t(k.f, gfmt[step - 1], k.names[i], &n);
            assert_int_equal(vkl_tensor_upload(c, G[i], gr, VKL_F32, &e), 0);
            free(gr);
        }
        assert_int_equal(vkl_adamw_prepare(a, step, lr, &e), 0);
        assert_int_equal(vkl_graph_run(g, &e), 0);
        int skipped;
        float norm;
        assert_int_equal(vkl_adamw_result(a, &norm, &skipped, &e), 0);
        assert_false(skipped);
        assert_true(norm > 0);
        double worst = 0;
        for (int i = 0; i < k.n; i++) {
            int64_t n;
            float *want = read_t(k.f, pfmt[step - 1], k.names[i], &n);
            float *got = malloc(sizeof(float) * (size_t)n);
            assert_int_equal(vkl_tensor_download(c, P[i], got, VKL_F32, &e), 0);
            double maxp = 1;
            for (int64_t j = 0; j < n; j++) maxp = fmax(maxp, fabs(want[j]));
            for (int64_t j = 0; j < n; j++) {
                double d = fabs((double)got[j] - want[j]) / maxp;
                if (d > worst) worst = d;
            }
            free(want);
            free(got);
        }
        print_message("%s: AdamW step %d: max |diff| / max(1,|p|) = %.3g\n", rel, step, worst);
        assert_true(worst <= 1e-6);
    }
    vkl_graph_free(g);
    vkl_adamw_free(a);
    for (int i = 0; i < k.n; i++) {
        vkl_tensor_free(P[i]);
        vkl_tensor_free(G[i]);
        free(k.names[i]);
    }
    free(k.names);
    free(P);
    free(G);
    free(mult);
    vkl_st_close(k.f);
    vkl_test_ctx_done(c);
}

static void adamw_matches_torch_sd(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/train_lora.safetensors");
    two_steps("refkit/sd/vectors/train_lora.safetensors", "init.%s", "grad.%s", "grad_step2.%s", "step1.%s",
              "step2.%s", 1e-3f, 1e-2f, 1.0f);
}

static void loraplus_matches_peft(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/vectors/train_loraplus.safetensors");
    two_steps("refkit/lm/vectors/train_loraplus.safetensors", "init.%s", "grad.0.%s", "grad.1.%s", "param.1.%s",
              "param.2.%s", 1e-3f, 0.0f, 16.0f);
}

static void clipping_and_nan_skip(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t n = 4;
    float p0[4] = {1, 2, 3, 4}, g0[4] = {3, 0, 4, 0}; /* norm 5 */
    vkl_tensor *P = vkl_tensor_new(c, VKL_F32, 1, &n, &e), *G = vkl_tensor_new(c, VKL_F32, 1, &n, &e);
    assert_int_equal(vkl_tensor_upload(c, P, p0, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, G, g0, VKL_F32, &e), 0);
    vkl_adamw_opts o = {0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, 32};
    vkl_adamw *a = vkl_adamw_new(c, &P, 1, NULL, &o, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_int_equal(vkl_adamw_append(a, g, &G, &e), 0);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    assert_int_equal(vkl_adamw_prepare(a, 1, 0.1f, &e), 0);
    assert_int_equal(vkl_graph_run(g, &e), 0);
    float norm, got[4];
    int skipped;
    assert_int_equal(vkl_adamw_result(a, &norm, &skipped, &e), 0);
    assert_true(fabsf(norm - 5.0f) < 1e-5f);
    assert_false(skipped);
    /* step 1 of Adam moves each element by lr * sign(g) (clipping rescales g, not the sign) */
    assert_int_equal(vkl_tensor_download(c, P, got, VKL_F32, &e), 0);
    float want[4] = {0.9f, 2.0f, 2.9f, 4.0f};
    vkl_test_assert_close("adamw step", got, want, 4, 1e-5f, 0);
    /* the moment saw the clipped gradient: m = 0.1 * g / 5 */
    float m[4];
    assert_int_equal(vkl_tensor_download(c, vkl_adamw_m(a, 0), m, VKL_F32, &e), 0);
    float wm[4] = {0.06f, 0, 0.08f, 0};
    vkl_test_assert_close("clipped moment", m, wm, 4, 1e-7f, 1e-5f);
    /* a NaN gradient: the step is skipped and nothing changes */
    float bad[4] = {1, NAN, 0, 0};
    assert_int_equal(vkl_tensor_upload(c, G, bad, VKL_F32, &e), 0);
    assert_int_equal(vkl_adamw_prepare(a, 2, 0.1f, &e), 0);
    assert_int_equal(vkl_graph_run(g, &e), 0);
    assert_int_equal(vkl_adamw_result(a, &norm, &skipped, &e), 0);
    assert_true(skipped);
    float after[4];
    assert_int_equal(vkl_tensor_download(c, P, after, VKL_F32, &e), 0);
    assert_memory_equal(after, got, sizeof got);
    vkl_graph_free(g);
    vkl_adamw_free(a);
    vkl_tensor_free(P);
    vkl_tensor_free(G);
    vkl_test_ctx_done(c);
}

/* A 1-D parameter longer than one binding (binding=64K: 16384 f32): the
 * norm pass and the update still run, and the norm is the host's. */
static void long_vector_beyond_one_binding(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    vkl_err e = {{0}};
    int64_t n = 50021; /* prime: no row shape divides it */
    float *p0 = malloc(sizeof(float) * n), *g0 = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    double sq = 0;
    for (int64_t i = 0; i < n; i++) {
        p0[i] = (float)(i % 97) / 97.0f;
        g0[i] = (float)((i * 31) % 101) / 101.0f - 0.5f;
        sq += (double)g0[i] * g0[i];
    }
    vkl_tensor *P = vkl_test_upload(c, VKL_F32, 1, &n, p0), *G = vkl_test_upload(c, VKL_F32, 1, &n, g0);
    vkl_adamw_opts o = {0.01f, 0.9f, 0.999f, 1e-8f, 0.0f, 1e9f, 32};
    vkl_adamw *a = vkl_adamw_new(c, &P, 1, NULL, &o, &e);
    assert_non_null(a);
    vkl_graph *g = vkl_graph_new(c);
    if (vkl_adamw_append(a, g, &G, &e) || vkl_graph_plan(g, &e) || vkl_adamw_prepare(a, 1, 0.01f, &e) ||
        vkl_graph_run(g, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float norm;
    int skipped;
    assert_int_equal(vkl_adamw_result(a, &norm, &skipped, &e), 0);
    print_message("norm %.6f, host %.6f\n", norm, sqrt(sq));
    assert_true(fabs(norm - sqrt(sq)) < 1e-4 * sqrt(sq));
    assert_false(skipped);
    /* Adam's first step moves every element by lr * sign(g) */
    assert_int_equal(vkl_tensor_download(c, P, got, VKL_F32, &e), 0);
    for (int64_t i = 0; i < n; i++) {
        float want = g0[i] > 0 ? p0[i] - 0.01f : g0[i] < 0 ? p0[i] + 0.01f : p0[i];
        if (fabsf(got[i] - want) > 1e-5f) {
            print_error("element %lld: %g, want %g\n", (long long)i, got[i], want);
            fail();
        }
    }
    free(p0);
    free(g0);
    free(got);
    vkl_graph_free(g);
    vkl_adamw_free(a);
    vkl_tensor_free(P);
    vkl_tensor_free(G);
    vkl_test_ctx_done(c);
}

static void lr_schedules(void **state)
{
    (void)state;
    vkl_lr_schedule s = {VKL_LR_CONSTANT, 1.0f, 10, 110, 1};
    assert_true(vkl_lr_at(&s, 0) == 0.0f);
    assert_true(fabsf(vkl_lr_at(&s, 5) - 0.5f) < 1e-7f);
    assert_true(vkl_lr_at(&s, 50) == 1.0f);
    s.kind = VKL_LR_LINEAR;
    assert_true(fabsf(vkl_lr_at(&s, 60) - 0.5f) < 1e-6f);
    assert_true(vkl_lr_at(&s, 110) == 0.0f);
    s.kind = VKL_LR_COSINE;
    assert_true(fabsf(vkl_lr_at(&s, 10) - 1.0f) < 1e-6f);
    assert_true(fabsf(vkl_lr_at(&s, 60) - 0.5f) < 1e-6f);
    s.kind = VKL_LR_COSINE_RESTARTS;
    s.cycles = 2;
    assert_true(fabsf(vkl_lr_at(&s, 60) - 1.0f) < 1e-6f);  /* restart at half-way */
    assert_true(fabsf(vkl_lr_at(&s, 35) - 0.5f) < 1e-6f);
    vkl_lr_kind k;
    assert_int_equal(vkl_lr_kind_parse("cosine_with_restarts", &k), 0);
    assert_int_equal(k, VKL_LR_COSINE_RESTARTS);
    assert_int_equal(vkl_lr_kind_parse("sawtooth", &k), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(adamw_matches_torch_sd),
        cmocka_unit_test(loraplus_matches_peft),
        cmocka_unit_test(clipping_and_nan_skip),
        cmocka_unit_test(lr_schedules),
        cmocka_unit_test(long_vector_beyond_one_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
