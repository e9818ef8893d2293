/* Combining adapters: the exact concatenation against PEFT's own 'cat'
 * adapter of refkit/lm, SVD truncation against the exact sum, and the Jacobi
 * SVD on a hand-computed matrix. */
#include "vkl_test.h"

#include "lora/lora_combine.h"
#include "lora/lora_delta.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void load(const char *rel, const vkl_lora_targets *t, vkl_lora *l)
{
    VKL_REQUIRE_SHARED(rel);
    vkl_lora_opts o = {.targets = t};
    vkl_err e;
    if (vkl_lora_load(vkl_test_shared_path(rel), &o, l, &e)) fail_msg("%s: %s", rel, e.msg);
}

static double *delta(const vkl_lora_module *m)
{
    double *d = malloc(vkl_lora_wnelem(m) * sizeof *d);
    vkl_err e;
    if (vkl_lora_delta(m, NULL, d, &e)) fail_msg("%s", e.msg);
    return d;
}

/* max over modules of ||got - (wa dA + wb dB)||_F / ||wa dA + wb dB||_F */
static double worst_rel(const vkl_lora *got, const vkl_lora *a, double wa, const vkl_lora *b, double wb)
{
    double worst = 0;
    for (int i = 0; i < got->n; i++) {
        const vkl_lora_module *m = &got->m[i];
        const vkl_lora_module *x = vkl_lora_find(a, m->kname), *y = vkl_lora_find(b, m->kname);
        uint64_t n = vkl_lora_wnelem(m);
        double *dg = delta(m), *dx = x ? delta(x) : NULL, *dy = y ? delta(y) : NULL;
        double num = 0, den = 0;
        for (uint64_t k = 0; k < n; k++) {
            double want = (dx ? wa * dx[k] : 0) + (dy ? wb * dy[k] : 0);
            num += (dg[k] - want) * (dg[k] - want);
            den += want * want;
        }
        worst = fmax(worst, sqrt(num / den));
        free(dg);
        free(dx);
        free(dy);
    }
    return worst;
}

static void llama(vkl_lora_targets *t, vkl_lora *a, vkl_lora *b)
{
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    vkl_err e;
    if (vkl_lora_targets_open(vkl_test_shared_path("refkit/lm/tiny-llama/model.safetensors"), t, &e))
        fail_msg("%s", e.msg);
    load("refkit/lm/tiny-llama-lora/adapter_model.safetensors", t, a);
    load("refkit/lm/tiny-llama-lora-qv-r4/adapter_model.safetensors", t, b);
}

static void test_concat(void **state)
{
    (void)state;
    vkl_lora_targets t;
    vkl_lora a, b, cat, out;
    llama(&t, &a, &b);
    load("refkit/lm/tiny-llama-lora-cat/adapter_model.safetensors", &t, &cat);
    vkl_lora_input in[2] = {{&a, 0.7}, {&b, 0.3}};
    vkl_lora_combine_report rep;
    vkl_err e;
    if (vkl_lora_combine(in, 2, 0, &out, &rep, &e)) fail_msg("%s", e.msg);
    assert_int_equal(out.n, 21);
    assert_float_equal(rep.total_err, 0, 0);
    double w = worst_rel(&out, &a, 0.7, &b, 0.3);
    printf("concatenation: worst relative error %.3g\n", w);
    assert_true(w < 1e-6);
    /* PEFT's add_weighted_adapter 'cat' computes the same delta */
    for (int i = 0; i < out.n; i++) {
        const vkl_lora_module *m = &out.m[i], *c = vkl_lora_find(&cat, m->name);
        assert_non_null(c);
        assert_int_equal(m->rank, strstr(m->name, "q_proj") || strstr(m->name, "v_proj") ? 12 : 8);
        assert_float_equal(m->scale, 1, 0);
        double *dm = delta(m), *dc = delta(c);
        uint64_t n = vkl_lora_wnelem(m);
        double md = 0, mx = 0;
        for (uint64_t k = 0; k < n; k++) md = fmax(md, fabs(dm[k] - dc[k])), mx = fmax(mx, fabs(dc[k]));
        if (md > 1e-6 * mx) fail_msg("%s: differs from the cat adapter by %g (max %g)", m->name, md, mx);
        free(dm);
        free(dc);
    }
    vkl_lora_combine_report_free(&rep);
    vkl_lora_free(&out);
    vkl_lora_free(&cat);
    vkl_lora_free(&a);
    vkl_lora_free(&b);
    vkl_lora_targets_free(&t);
}

static void test_svd(void **state)
{
    (void)state;
    vkl_lora_targets t;
    vkl_lora a, b, out;
    llama(&t, &a, &b);
    vkl_lora_input in[2] = {{&a, 0.7}, {&b, 0.3}};
    vkl_lora_combine_report rep;
    vkl_err e;
    /* rank 12 >= the true rank of every summed delta (8 + 4) */
    if (vkl_lora_combine(in, 2, 12, &out, &rep, &e)) fail_msg("%s", e.msg);
    double w = worst_rel(&out, &a, 0.7, &b, 0.3);
    printf("SVD rank 12: worst relative error %.3g, reported total %.3g\n", w, rep.total_err);
    assert_true(w < 1e-5);
    assert_true(rep.total_err < 1e-6);
    vkl_lora_combine_report_free(&rep);
    vkl_lora_free(&out);
    double prev = 2;
    for (int r = 1; r <= 8; r *= 2) {
        if (vkl_lora_combine(in, 2, r, &out, &rep, &e)) fail_msg("%s", e.msg);
        /* the reported error is what the result actually has */
        double actual = worst_rel(&out, &a, 0.7, &b, 0.3), rmax = 0;
        for (int i = 0; i < rep.n; i++) rmax = fmax(rmax, rep.rel_err[i]);
        printf("SVD rank %d: total relative error %.4f, worst module %.4f (measured %.4f)\n", r, rep.total_err,
               rmax, actual);
        assert_true(fabs(actual - rmax) < 1e-5);
        assert_true(rep.total_err > 1e-3);
        assert_true(rep.total_err < prev);
        prev = rep.total_err;
        assert_int_equal(out.m[0].rank, r);
        vkl_lora_combine_report_free(&rep);
        vkl_lora_free(&out);
    }
    vkl_lora_free(&a);
    vkl_lora_free(&b);
    vkl_lora_targets_free(&t);
}

/* The kit's SD adapter in two layouts (kohya names vs PEFT paths, matched by
 * kohya name without a model), including 3x3 LoCon modules. */
static void test_svd_dense_sd(void **state)
{
    (void)state;
    vkl_lora a, b, out;
    load("refkit/sd/vectors/lora/lora_kohya.safetensors", NULL, &a);
    load("refkit/sd/vectors/lora/lora_peft.safetensors", NULL, &b);
    vkl_lora_input in[2] = {{&a, 1.0}, {&b, -0.25}};
    vkl_lora_combine_report rep;
    vkl_err e;
    if (vkl_lora_combine(in, 2, 0, &out, &rep, &e)) fail_msg("%s", e.msg);
    assert_int_equal(out.n, 159);
    assert_true(worst_rel(&out, &a, 1.0, &b, -0.25) < 1e-6);
    vkl_lora_free(&out);
    vkl_lora_combine_report_free(&rep);
    /* same adapter twice: the sum has rank 4, so rank 4 is exact */
    if (vkl_lora_combine(in, 2, 4, &out, &rep, &e)) fail_msg("%s", e.msg);
    double w = worst_rel(&out, &a, 1.0, &b, -0.25);
    printf("SD: SVD rank 4 of a rank-4 sum: worst %.3g, total %.3g\n", w, rep.total_err);
    assert_true(w < 1e-5);
    const vkl_lora_module *c = vkl_lora_find(&out, "lora_unet_down_blocks_0_resnets_0_conv1");
    assert_non_null(c);
    assert_int_equal(c->t[VKL_LORA_DOWN].ndim, 4);
    assert_int_equal(c->t[VKL_LORA_DOWN].shape[2], 3);
    vkl_lora_free(&out);
    vkl_lora_combine_report_free(&rep);
    vkl_lora_free(&a);
    vkl_lora_free(&b);
}

/* Dense path: a LoHa module (rank 2 x rank 2 Hadamard product: rank <= 4),
 * 6 x 5 or, transposed, 5 x 6. */
static void test_svd_dense_loha(void **state)
{
    (void)state;
    for (int tr = 0; tr < 2; tr++) {
        int O = tr ? 5 : 6, I = tr ? 6 : 5;
        const char *dir = vkl_test_tmpdir();
        char p[512];
        snprintf(p, sizeof p, "%s/h.safetensors", dir);
        vkl_st_writer *w = vkl_st_writer_new();
        vkl_test_rng rng;
        vkl_test_rng_seed(&rng, 7 + tr);
        float buf[64];
        vkl_err e;
        static const char *keys[] = {"lora_unet_x.hada_w1_a", "lora_unet_x.hada_w1_b", "lora_unet_x.hada_w2_a",
                                     "lora_unet_x.hada_w2_b"};
        for (int k = 0; k < 4; k++) {
            int64_t sh[2] = {k % 2 ? 2 : O, k % 2 ? I : 2};
            vkl_test_fill(&rng, buf, (size_t)(sh[0] * sh[1]), -1, 1);
            assert_int_equal(vkl_st_writer_add(w, keys[k], VKL_F32, 2, sh, buf, &e), 0);
        }
        assert_int_equal(vkl_st_writer_finish(w, p, &e), 0);
        vkl_st_writer_free(w);
        vkl_lora a, out;
        if (vkl_lora_load(p, NULL, &a, &e)) fail_msg("%s", e.msg);
        vkl_lora_input in[1] = {{&a, 0.5}};
        vkl_lora_combine_report rep;
        assert_int_equal(vkl_lora_combine(in, 1, 0, &out, &rep, &e), -1); /* LoHa does not concatenate */
        assert_non_null(strstr(e.msg, "--rank"));
        if (vkl_lora_combine(in, 1, 4, &out, &rep, &e)) fail_msg("%s", e.msg);
        double w4 = worst_rel(&out, &a, 0.5, &a, 0);
        assert_true(w4 < 1e-5);
        vkl_lora_free(&out);
        vkl_lora_combine_report_free(&rep);
        if (vkl_lora_combine(in, 1, 2, &out, &rep, &e)) fail_msg("%s", e.msg);
        double w2 = worst_rel(&out, &a, 0.5, &a, 0);
        printf("LoHa %dx%d: rank 4 error %.3g, rank 2 error %.4f (reported %.4f)\n", O, I, w4, w2, rep.total_err);
        assert_true(fabs(w2 - rep.total_err) < 1e-5 && w2 > 1e-3);
        vkl_lora_free(&out);
        vkl_lora_combine_report_free(&rep);
        vkl_lora_free(&a);
        vkl_test_rmtree(dir);
    }
}

/* [[3,0],[4,5]]: A^T A = [[25,20],[20,25]], eigenvalues 45 and 5. */
static void test_jacobi(void **state)
{
    (void)state;
    double a[4] = {3, 0, 4, 5}, s[2], v[4];
    assert_true(vkl_svd_jacobi(a, 2, 2, s, v) >= 0);
    assert_float_equal(s[0], sqrt(45.0), 1e-14);
    assert_float_equal(s[1], sqrt(5.0), 1e-14);
    /* (U S) V^T reproduces the matrix */
    double want[4] = {3, 0, 4, 5};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double x = a[i * 2] * v[j * 2] + a[i * 2 + 1] * v[j * 2 + 1];
            assert_float_equal(x, want[i * 2 + j], 1e-14);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concat), cmocka_unit_test(test_svd), cmocka_unit_test(test_svd_dense_sd),
        cmocka_unit_test(test_svd_dense_loha),
        cmocka_unit_test(test_jacobi),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
