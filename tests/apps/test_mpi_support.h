/* Helpers of the data-parallel tests: running vklora under mpirun and
 * comparing two adapter files tensor by tensor. */
#ifndef VKL_TEST_MPI_SUPPORT_H
#define VKL_TEST_MPI_SUPPORT_H

#include "vkl_test.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The environment prefix that starts vklora on n ranks of this machine
 * (Open MPI refuses root without the two variables; binding each rank to
 * one core would starve lavapipe's threads). Skips without an MPI build. */
static inline const char *mpi_prefix(int n)
{
    static char buf[1024];
    const char *mpiexec = getenv("VKLORA_MPIEXEC");
    if (!mpiexec || !*mpiexec) {
        fprintf(stderr, "SKIPPED: vklora was built without MPI (VKLORA_MPI=OFF)\n");
        skip();
    }
    snprintf(buf, sizeof buf,
             "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
             "'%s' --oversubscribe --bind-to none -np %d", mpiexec, n);
    return buf;
}

/* Runs vklora with args in the group's folder on `ranks` processes (1:
 * without mpirun), env assignments first; prints the output of a failure. */
static inline int run(int ranks, const char *env, const char *args, char **out)
{
    char pre[2048], full[8192];
    snprintf(pre, sizeof pre, "%s %s", env ? env : "", ranks > 1 ? mpi_prefix(ranks) : "");
    snprintf(full, sizeof full, "%s", args);
    char *o = NULL;
    int rc = vkl_test_cli(full, pre, &o);
    if (rc && rc != 130) print_error("exit %d:\n%s\n", rc, o ? o : "");
    if (out) *out = o;
    else free(o);
    return rc;
}

static inline void path_of(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", vkl_test_dir, name); }

/* Every tensor of b within tol (relative to the tensor's largest magnitude) of
 * a's, same names and sizes; prints the worst relative difference. */
static inline void assert_same_adapter(const char *pa, const char *pb, double tol)
{
    vkl_st_file *fa, *fb;
    vkl_err e = {{0}};
    if (vkl_st_open(pa, &fa, &e) || vkl_st_open(pb, &fb, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    assert_int_equal(vkl_st_count(fa), vkl_st_count(fb));
    double worst = 0, largest = 0;
    for (int i = 0; i < vkl_st_count(fa); i++) {
        const vkl_st_tensor *x = vkl_st_at(fa, i), *y = vkl_st_find(fb, x->name);
        assert_non_null(y);
        assert_int_equal(x->nelem, y->nelem);
        float *u = malloc(sizeof(float) * (x->nelem + 1)), *v = malloc(sizeof(float) * (x->nelem + 1));
        assert_int_equal(vkl_st_read(fa, x, VKL_F32, u, &e), 0);
        assert_int_equal(vkl_st_read(fb, y, VKL_F32, v, &e), 0);
        double big = 0, diff = 0;
        for (uint64_t k = 0; k < x->nelem; k++) {
            assert_true(isfinite(u[k]) && isfinite(v[k]));
            big = fmax(big, fabs(u[k]));
            diff = fmax(diff, fabs((double)u[k] - v[k]));
        }
        if (!strstr(x->name, "alpha")) largest = fmax(largest, big);
        double rel = big > 0 ? diff / big : diff;
        if (rel > worst) worst = rel;
        if (rel > tol) print_error("%s: max |a - b| %g, max |a| %g\n", x->name, diff, big);
        assert_true(rel <= tol);
        free(u);
        free(v);
    }
    printf("  %s vs %s: %d tensors, worst relative difference %.3g (largest trained value %.3g)\n", pa, pb,
           vkl_st_count(fa),
           worst, largest);
    /* a trained adapter, not two untouched ones */
    assert_true(largest > 0);
    vkl_st_close(fa);
    vkl_st_close(fb);
}

/* The loss column (3rd) of two logs agrees to tol relative, row for row. */
static inline void assert_same_losses(const char *csv_a, const char *csv_b, int rows, double tol)
{
    const char *s[2] = {csv_a, csv_b};
    double loss[2][64];
    int n[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        const char *p = strchr(s[k], '\n');
        while (p && p[1] && n[k] < 64) {
            int step;
            unsigned ep;
            double l;
            assert_int_equal(sscanf(p + 1, "%d,%u,%lf", &step, &ep, &l), 3);
            assert_int_equal(step, n[k] + 1);
            loss[k][n[k]++] = l;
            p = strchr(p + 1, '\n');
        }
    }
    assert_int_equal(n[0], rows);
    assert_int_equal(n[1], rows);
    for (int i = 0; i < rows; i++) assert_true(fabs(loss[0][i] - loss[1][i]) <= tol * fabs(loss[0][i]));
}

#endif
