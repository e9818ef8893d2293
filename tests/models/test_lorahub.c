/* LoRAHub's model-level parts (models/lora/lorahub.h) on adapters built here:
 * the composed factors equal sum_i w_i A_i and sum_i w_i B_i computed in the
 * test, with modules matched by name whatever their order; the checks refuse
 * one adapter, other modules, ranks, shapes, scales and kinds, naming the
 * module and the adapters; the search, on an objective whose minimum is known,
 * reports the references, beats them, keeps to its budget and its box, and
 * repeats itself for a seed. */
#include "vkl_test.h"
#include "lora/lorahub.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const MODS[3] = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                    "model.layers.1.mlp.down_proj"};
static const int OUT[3] = {8, 4, 8}, IN[3] = {8, 8, 6};

/* An adapter of rank r on the modules (in the given order), random factors, scale alpha / r. */
static void make(vkl_lora *l, const int *order, int n, int r, float alpha, vkl_test_rng *rng)
{
    vkl_err e = {{0}};
    memset(l, 0, sizeof *l);
    l->format = VKL_LORA_FMT_PEFT;
    for (int j = 0; j < n; j++) {
        int i = order[j];
        vkl_lora_module *m = vkl_lora_add_module(l, &e);
        assert_non_null(m);
        m->name = strdup(MODS[i]);
        char k[128];
        vkl_lora_kohya_name(MODS[i], 0, k, sizeof k);
        m->kname = strdup(k);
        m->kind = VKL_LORA_KIND_LORA;
        m->rank = r;
        m->alpha = alpha;
        m->has_alpha = 1;
        m->scale = alpha / r;
        m->wndim = 2;
        m->wshape[0] = OUT[i];
        m->wshape[1] = IN[i];
        float *a = vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], 2, (int64_t[]){r, IN[i]}, &e);
        float *b = vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], 2, (int64_t[]){OUT[i], r}, &e);
        assert_non_null(a);
        assert_non_null(b);
        vkl_test_fill(rng, a, (size_t)r * IN[i], -1, 1);
        vkl_test_fill(rng, b, (size_t)OUT[i] * r, -1, 1);
    }
}

static const vkl_lora_module *by_name(const vkl_lora *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->m[i].name, name)) return &l->m[i];
    fail_msg("module %s missing", name);
    return NULL;
}

static void test_compose(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 19);
    vkl_lora in[3];
    const int o0[3] = {0, 1, 2}, o1[3] = {2, 0, 1}, o2[3] = {1, 2, 0};
    make(&in[0], o0, 3, 4, 8, &rng);
    make(&in[1], o1, 3, 4, 8, &rng);
    make(&in[2], o2, 3, 4, 8, &rng);
    const vkl_lora *p[3] = {&in[0], &in[1], &in[2]};
    const char *names[3] = {"a", "b", "c"};
    vkl_err e = {{0}};
    assert_int_equal(vkl_lorahub_check(p, names, 3, &e), 0);
    vkl_lora out;
    assert_int_equal(vkl_lorahub_prepare(p, 3, &out, &e), 0);
    const double w[3] = {0.7, -1.2, 0.05};
    vkl_lorahub_compose(p, 3, w, &out);
    assert_int_equal(out.n, 3);
    for (int i = 0; i < 3; i++) {
        const vkl_lora_module *m = by_name(&out, MODS[i]);
        assert_int_equal(m->rank, 4);
        assert_float_equal(m->scale, 2.0, 1e-12);
        assert_float_equal(m->alpha, 8.0f, 0);
        for (int role = VKL_LORA_DOWN; role <= VKL_LORA_UP; role++) {
            size_t n = role == VKL_LORA_DOWN ? (size_t)4 * IN[i] : (size_t)OUT[i] * 4;
            assert_int_equal(vkl_lora_tensor_nelem(&m->t[role]), n);
            float *want = malloc(sizeof(float) * n);
            for (size_t x = 0; x < n; x++) {
                double s = 0;
                for (int k = 0; k < 3; k++) s += w[k] * by_name(&in[k], MODS[i])->t[role].data[x];
                want[x] = (float)s;
            }
            vkl_test_assert_close(MODS[i], m->t[role].data, want, n, 1e-6f, 1e-6f);
            free(want);
        }
    }
    /* weights e_2 give the second input back exactly */
    const double e2[3] = {0, 1, 0};
    vkl_lorahub_compose(p, 3, e2, &out);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(by_name(&out, MODS[i])->t[VKL_LORA_UP].data, by_name(&in[1], MODS[i])->t[VKL_LORA_UP].data,
                            sizeof(float) * (size_t)OUT[i] * 4);
    vkl_lora_free(&out);
    for (int k = 0; k < 3; k++) vkl_lora_free(&in[k]);
}

static void expect_refused(vkl_lora *a, vkl_lora *b, int k, const char *w1, const char *w2)
{
    const vkl_lora *p[2] = {a, b};
    const char *names[2] = {"first.safetensors", "second.safetensors"};
    vkl_err e = {{0}};
    assert_int_equal(vkl_lorahub_check(p, names, k, &e), -1);
    printf("  refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, w1));
    if (w2) assert_non_null(strstr(e.msg, w2));
}

static void test_refusals(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 3);
    const int all[3] = {0, 1, 2}, two[2] = {0, 1}, other[3] = {0, 1, 1};
    vkl_lora a, b;
    make(&a, all, 3, 4, 8, &rng);
    make(&b, all, 3, 4, 8, &rng);
    expect_refused(&a, &b, 1, "at least 2", NULL);
    vkl_lora_free(&b);
    make(&b, two, 2, 4, 8, &rng); /* a module fewer */
    expect_refused(&a, &b, 2, "down_proj", "same modules");
    expect_refused(&b, &a, 2, "modules", NULL);
    vkl_lora_free(&b);
    make(&b, other, 3, 4, 8, &rng); /* another module set of the same size */
    expect_refused(&a, &b, 2, "down_proj", "second.safetensors");
    vkl_lora_free(&b);
    make(&b, all, 3, 2, 4, &rng); /* rank 2 (same scale) */
    expect_refused(&a, &b, 2, "ranks", "[2,8]");
    vkl_lora_free(&b);
    make(&b, all, 3, 4, 4, &rng); /* alpha 4: another scale */
    expect_refused(&a, &b, 2, "scale", "alpha");
    b.m[0].kind = VKL_LORA_KIND_DORA;
    expect_refused(&a, &b, 2, "dora", "plain LoRA");
    vkl_lora_free(&b);
    make(&b, all, 3, 4, 8, &rng);
    b.m[2].t[VKL_LORA_DOWN].shape[1] = 3; /* another base: the weight's input width differs */
    b.m[2].t[VKL_LORA_UP].shape[0] = 3;
    expect_refused(&a, &b, 2, "down (A)", "same base");
    vkl_lora_free(&b);
    vkl_lora_free(&a);
}

/* f(w) = 3 + sum_i c_i (w_i - t_i)^2 + a small coupling: minimum near t */
static const double T[3] = {0.8, 0.6, -0.2};

typedef struct counter {
    int calls, refs;
    double ref[4];
    int bad_box;
} counter;

static int quad(void *user, const double *w, double *loss, vkl_err *e)
{
    (void)e;
    counter *c = user;
    c->calls++;
    double f = 3;
    for (int i = 0; i < 3; i++) {
        f += (i + 1) * (w[i] - T[i]) * (w[i] - T[i]);
        if (w[i] < -1.5 || w[i] > 1.5) c->bad_box = 1;
    }
    *loss = f + 0.5 * (w[0] - T[0]) * (w[1] - T[1]);
    return 0;
}

static void on_ref(void *user, int which, double loss)
{
    counter *c = user;
    c->ref[which] = loss;
    c->refs++;
}

static void run_search(uint64_t seed, double l1, counter *c, vkl_lorahub_result *r, double *w, double *in)
{
    vkl_lorahub_opts o;
    vkl_lorahub_opts_default(&o, 3);
    o.seed = seed;
    o.l1 = l1;
    o.on_reference = on_ref;
    o.user = c;
    memset(c, 0, sizeof *c);
    *r = (vkl_lorahub_result){.w = w, .input_loss = in};
    vkl_err e = {{0}};
    if (vkl_lorahub_search(&o, quad, c, r, &e)) fail_msg("%s", e.msg);
}

static void test_search(void **state)
{
    (void)state;
    counter c;
    vkl_lorahub_result r;
    double w[3], in[3];
    run_search(5, 0, &c, &r, w, in);
    /* the references first: inputs alone (w = e_i) and the average, as computed here */
    assert_int_equal(c.refs, 4);
    assert_int_equal(c.calls, 4 + 40);
    assert_int_equal(r.evals, 40);
    assert_false(c.bad_box);
    for (int i = 0; i < 3; i++) {
        double e_i[3] = {i == 0, i == 1, i == 2}, f;
        quad(&(counter){0}, e_i, &f, NULL);
        assert_float_equal(in[i], f, 1e-12);
        assert_float_equal(c.ref[i], f, 1e-12);
    }
    double avg[3] = {1 / 3.0, 1 / 3.0, 1 / 3.0}, fa;
    quad(&(counter){0}, avg, &fa, NULL);
    assert_float_equal(r.average_loss, fa, 1e-12);
    printf("  inputs %.4f %.4f %.4f, average %.4f; search %.4f at (%.3f, %.3f, %.3f), minimum 3\n", in[0], in[1],
           in[2], fa, r.loss, w[0], w[1], w[2]);
    /* the search's own best is what it reports, and it beats every reference */
    double f;
    quad(&(counter){0}, w, &f, NULL);
    assert_float_equal(r.loss, f, 1e-12);
    assert_float_equal(r.objective, f, 1e-12); /* l1 = 0 */
    for (int i = 0; i < 3; i++) assert_true(r.loss < in[i]);
    assert_true(r.loss < fa);
    assert_true(r.loss < 3.1);
    /* the same seed repeats the search; another seed searches elsewhere */
    double w2[3], in2[3];
    vkl_lorahub_result r2;
    run_search(5, 0, &c, &r2, w2, in2);
    assert_memory_equal(w, w2, sizeof w);
    run_search(6, 0, &c, &r2, w2, in2);
    assert_true(memcmp(w, w2, sizeof w) != 0);
    /* the L1 term: objective = loss + l1 sum |w| */
    run_search(5, 0.5, &c, &r2, w2, in2);
    assert_float_equal(r2.objective, r2.loss + 0.5 * (fabs(w2[0]) + fabs(w2[1]) + fabs(w2[2])), 1e-12);
}

static int failing(void *user, const double *w, double *loss, vkl_err *e)
{
    (void)w;
    (void)loss;
    int *n = user;
    if (++*n < 6) {
        *loss = 1;
        return 0;
    }
    return vkl_fail(e, "device lost");
}

static void test_search_errors(void **state)
{
    (void)state;
    vkl_lorahub_opts o;
    double w[2], in[2];
    vkl_lorahub_result r = {.w = w, .input_loss = in};
    vkl_err e = {{0}};
    int n = 0;
    vkl_lorahub_opts_default(&o, 2);
    assert_int_equal(vkl_lorahub_search(&o, failing, &n, &r, &e), -1);
    assert_string_equal(e.msg, "device lost"); /* the objective's error comes through */
    vkl_lorahub_opts_default(&o, 1);
    assert_int_equal(vkl_lorahub_search(&o, failing, &n, &r, &e), -1);
    assert_non_null(strstr(e.msg, "2 to 64"));
    vkl_lorahub_opts_default(&o, 2);
    o.budget = 0;
    assert_int_equal(vkl_lorahub_search(&o, failing, &n, &r, &e), -1);
    assert_non_null(strstr(e.msg, "budget"));
    vkl_lorahub_opts_default(&o, 2);
    o.l1 = -1;
    assert_int_equal(vkl_lorahub_search(&o, failing, &n, &r, &e), -1);
    assert_non_null(strstr(e.msg, "L1"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compose),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_search),
        cmocka_unit_test(test_search_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
