/* Helpers for gradient tests: double copies of host data, central finite
 * differences of a double-precision loss, comparison of device gradients
 * with a reference backward, and running vkl_graph_backward with dy = r. */
#ifndef VKL_GRAD_CHECK_H
#define VKL_GRAD_CHECK_H

#include "op_check.h"

#include <math.h>
#include <stdio.h>
#include <time.h>

static inline double *gc_f64(const float *x, int64_t n)
{
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) d[i] = x[i];
    return d;
}

/* Passes when max |got - want| <= tol * max(max |want|, floor): a gradient
 * whose terms nearly cancel is compared at the scale of its terms (floor). */
static inline void gc_assert_floor(const char *what, const float *got, const double *want, int64_t n, double tol,
                                   double floor)
{
    double scale = floor, worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
        double d = fabs(got[i] - want[i]);
        if (!(d <= worst)) {
            worst = d;
            at = i;
        }
    }
    print_message("%s: max abs diff %.3g (scale %.3g, ratio %.3g)\n", what, worst, scale, scale ? worst / scale : 0);
    if (!(worst <= tol * (scale > 0 ? scale : 1))) {
        print_error("%s: max abs diff %.6g at %lld (got %.8g want %.8g) exceeds %.3g x %.6g\n", what, worst,
                    (long long)at, got[at], want[at], tol, scale);
        fail();
    }
}

static inline void gc_assert(const char *what, const float *got, const double *want, int64_t n, double tol)
{
    gc_assert_floor(what, got, want, n, tol, 0);
}

/* Central differences (step h) of loss(user) w.r.t. each v[i], against analytic[i]:
 * max error <= tol * max(1, max |numeric|). */
typedef double (*gc_loss_fn)(void *user);
static inline void gc_fd_check(const char *what, gc_loss_fn loss, void *user, double *v, int64_t n,
                               const double *analytic, double h, double tol)
{
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + h;
        double lp = loss(user);
        v[i] = keep - h;
        double lm = loss(user);
        v[i] = keep;
        double num = (lp - lm) / (2 * h);
        if (fabs(num - analytic[i]) > worst) worst = fabs(num - analytic[i]);
        if (fabs(num) > scale) scale = fabs(num);
    }
    print_message("%s: max |analytic - numeric| %.3g (scale %.3g)\n", what, worst, scale);
    if (!(worst <= tol * (scale > 1 ? scale : 1))) {
        print_error("%s: the analytic gradient differs from finite differences by %.3g\n", what, worst);
        fail();
    }
}

/* Appends the backward of y with dy = R (loss = sum(y * R)) for the
 * persistent tensors wrt (NULL entries skipped), plans, runs twice and
 * downloads the gradients (out[i] NULL where not asked; the gradient
 * tensors in gt[i] when gt is not NULL). Returns the time of the second run
 * in ms. */
static inline double gc_run_backward_t(vkl_ctx *c, vkl_graph *g, vkl_tensor *y, vkl_tensor *R, vkl_tensor **wrt,
                                       int nwrt, float **out, vkl_tensor **gt)
{
    vkl_tensor *w[8], *gr[8];
    int idx[8], nw = 0;
    for (int i = 0; i < nwrt && i < 8; i++) {
        out[i] = NULL;
        if (wrt[i]) {
            idx[nw] = i;
            w[nw++] = wrt[i];
        }
    }
    vkl_err e = {{0}};
    if (vkl_graph_failed(g) || vkl_graph_backward(g, y, R, w, nw, gr, &e)) {
        print_error("backward: %s %s\n", e.msg, vkl_graph_error(g));
        fail();
    }
    for (int i = 0; i < nw; i++) {
        assert_non_null(gr[i]);
        vkl_graph_keep(g, gr[i]);
    }
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    for (int i = 0; i < nw; i++) {
        out[idx[i]] = opc_download(c, gr[i]);
        if (gt) gt[idx[i]] = gr[i];
    }
    return (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
}

static inline double gc_run_backward(vkl_ctx *c, vkl_graph *g, vkl_tensor *y, vkl_tensor *R, vkl_tensor **wrt,
                                     int nwrt, float **out)
{
    return gc_run_backward_t(c, g, y, R, wrt, nwrt, out, NULL);
}

#endif
