/* CMA-ES (runtime/cmaes.h) on functions whose minimum is known: a shifted,
 * badly scaled and rotated quadratic (the covariance must adapt), Rosenbrock
 * in 2-D, and a minimum on the box's edge (the projection); candidates stay
 * inside the box; the same seed gives the same candidates, another seed
 * others; bad options are refused by name. */
#include "vkl_test.h"
#include "cmaes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef double (*fn)(const double *x, int n);

static const double TARGET[4] = {0.7, -0.3, 1.1, 0.2};

/* (x - t)^T R^T diag(1, 10, 100, 1000) R (x - t), R a fixed rotation in the (0,1) and (2,3) planes */
static double ellipsoid(const double *x, int n)
{
    double d[4], r[4], c = cos(0.6), s = sin(0.6);
    for (int i = 0; i < n; i++) d[i] = x[i] - TARGET[i];
    for (int i = 0; i + 1 < n; i += 2) {
        r[i] = c * d[i] - s * d[i + 1];
        r[i + 1] = s * d[i] + c * d[i + 1];
    }
    if (n % 2) r[n - 1] = d[n - 1];
    double f = 0;
    for (int i = 0; i < n; i++) f += pow(10.0, i) * r[i] * r[i];
    return f;
}

static double rosenbrock(const double *x, int n)
{
    (void)n;
    return 100 * (x[1] - x[0] * x[0]) * (x[1] - x[0] * x[0]) + (1 - x[0]) * (1 - x[0]);
}

/* minimum at (2, 2), outside the box [-1.5, 1.5]^2: the best point inside is the corner */
static double outside(const double *x, int n)
{
    double f = 0;
    for (int i = 0; i < n; i++) f += (x[i] - 2) * (x[i] - 2);
    return f;
}

/* Runs `evals` evaluations; returns the best value and writes its point. */
static double minimise(fn f, int n, double lo, double hi, double sigma, uint64_t seed, int evals, double *best_x)
{
    vkl_cmaes *s;
    vkl_err e;
    vkl_cmaes_opts o = {.dim = n, .sigma0 = sigma, .lo = lo, .hi = hi, .seed = seed};
    if (vkl_cmaes_new(&o, &s, &e)) fail_msg("%s", e.msg);
    int lambda = vkl_cmaes_lambda(s);
    double *x = malloc(sizeof(double) * (size_t)lambda * n), *v = malloc(sizeof(double) * (size_t)lambda);
    double best = INFINITY;
    for (int done = 0; done < evals; done += lambda) {
        vkl_cmaes_ask(s, x);
        for (int j = 0; j < lambda; j++) {
            for (int i = 0; i < n; i++) assert_true(x[j * n + i] >= lo && x[j * n + i] <= hi);
            v[j] = f(x + j * n, n);
            if (v[j] < best) {
                best = v[j];
                memcpy(best_x, x + j * n, sizeof(double) * (size_t)n);
            }
        }
        vkl_cmaes_tell(s, v);
    }
    free(x);
    free(v);
    vkl_cmaes_free(s);
    return best;
}

static void test_ellipsoid(void **state)
{
    (void)state;
    double x[4];
    /* conditioning 1e3 in 4-D: the covariance has to learn the scales */
    double f = minimise(ellipsoid, 4, -3, 3, 1.0, 42, 3000, x);
    printf("  4-D rotated ellipsoid: best %.3g at (%.5f, %.5f, %.5f, %.5f)\n", f, x[0], x[1], x[2], x[3]);
    assert_true(f < 1e-10);
    for (int i = 0; i < 4; i++) assert_true(fabs(x[i] - TARGET[i]) < 1e-4);
    /* a LoRAHub-sized budget in 2-D already gets close */
    f = minimise(ellipsoid, 2, -1.5, 1.5, 0.5, 7, 40, x);
    printf("  2-D, 40 evaluations: best %.3g at (%.4f, %.4f)\n", f, x[0], x[1]);
    assert_true(f < 0.05);
}

static void test_rosenbrock(void **state)
{
    (void)state;
    double x[2];
    double f = minimise(rosenbrock, 2, -2, 2, 0.5, 3, 2000, x);
    printf("  Rosenbrock: best %.3g at (%.6f, %.6f)\n", f, x[0], x[1]);
    assert_true(f < 1e-8);
    assert_true(fabs(x[0] - 1) < 1e-3 && fabs(x[1] - 1) < 1e-3);
}

static void test_bounds(void **state)
{
    (void)state;
    double x[2];
    double f = minimise(outside, 2, -1.5, 1.5, 0.5, 11, 200, x);
    printf("  minimum outside the box: best %.6f at (%.6f, %.6f)\n", f, x[0], x[1]);
    assert_true(fabs(x[0] - 1.5) < 1e-6 && fabs(x[1] - 1.5) < 1e-6);
    assert_true(fabs(f - 0.5) < 1e-6);
}

static void ask_once(uint64_t seed, double *x)
{
    vkl_cmaes *s;
    vkl_err e;
    double x0[3] = {0.1, 0.2, 0.3};
    vkl_cmaes_opts o = {.dim = 3, .x0 = x0, .sigma0 = 0.5, .lo = -1.5, .hi = 1.5, .seed = seed};
    if (vkl_cmaes_new(&o, &s, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_cmaes_lambda(s), 7); /* 4 + floor(3 ln 3) */
    vkl_cmaes_ask(s, x);
    vkl_cmaes_free(s);
}

static void test_seed(void **state)
{
    (void)state;
    double a[21], b[21], c[21];
    ask_once(5, a);
    ask_once(5, b);
    ask_once(6, c);
    assert_memory_equal(a, b, sizeof a);
    assert_true(memcmp(a, c, sizeof a) != 0);
    /* around the start mean, spread by about sigma */
    double mean[3] = {0};
    for (int j = 0; j < 7; j++)
        for (int i = 0; i < 3; i++) mean[i] += a[j * 3 + i] / 7;
    for (int i = 0; i < 3; i++) assert_true(fabs(mean[i] - 0.1 * (i + 1)) < 0.6);
}

static void expect_refused(vkl_cmaes_opts o, const char *word)
{
    vkl_cmaes *s = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_cmaes_new(&o, &s, &e), -1);
    assert_null(s);
    printf("  refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, word));
}

static void test_bad_options(void **state)
{
    (void)state;
    vkl_cmaes_opts ok = {.dim = 2, .sigma0 = 0.5, .lo = -1, .hi = 1};
    vkl_cmaes_opts o = ok;
    o.dim = 0;
    expect_refused(o, "dimension");
    o = ok;
    o.lo = 1;
    expect_refused(o, "bounds");
    o = ok;
    o.sigma0 = 0;
    expect_refused(o, "step size");
    o = ok;
    o.lambda = 1;
    expect_refused(o, "candidates");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ellipsoid), cmocka_unit_test(test_rosenbrock), cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_seed),      cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
