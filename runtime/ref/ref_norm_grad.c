/* CPU references for the backward of the segment normalisations
 * (norm_grad.comp), and double-precision forwards to differentiate
 * numerically: everything in double, two-pass statistics. A segment is
 * `lines` lines of `inner` elements; its parameter index is pidx(s, line, i). */
#include "vkl_ref.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    int mode;             /* 0 mean/var, 1 RMS, 2 softmax */
    int64_t nseg, lines, inner;
    int per_elem;         /* param = i (row norms), else (s % pmod) * lines + line */
    int64_t pmod;
    double fparam;        /* eps, or the softmax scale */
    const double *gamma, *beta;
    int silu;
} seg_ref;

static int64_t pidx(const seg_ref *r, int64_t s, int64_t line, int64_t i)
{
    return r->per_elem ? i : (s % r->pmod) * r->lines + line;
}

/* shift a and multiplier b of segment x: xh = (x - a) * b, softmax y = exp(scale x - a) * b */
static void seg_stats(const seg_ref *r, const double *x, double *a, double *b)
{
    int64_t n = r->lines * r->inner;
    if (r->mode == 2) {
        double m = -INFINITY, s = 0;
        for (int64_t e = 0; e < n; e++)
            if (r->fparam * x[e] > m) m = r->fparam * x[e];
        for (int64_t e = 0; e < n; e++) s += exp(r->fparam * x[e] - m);
        *a = m;
        *b = 1 / s;
        return;
    }
    double mean = 0, q = 0;
    if (r->mode == 0) {
        for (int64_t e = 0; e < n; e++) mean += x[e];
        mean /= (double)n;
    }
    for (int64_t e = 0; e < n; e++) q += (x[e] - mean) * (x[e] - mean);
    *a = mean;
    *b = 1 / sqrt(q / (double)n + r->fparam);
}

static void seg_forward(const seg_ref *r, const double *x, double *y)
{
    int64_t n = r->lines * r->inner;
    for (int64_t s = 0; s < r->nseg; s++) {
        const double *xs = x + s * n;
        double a, b;
        seg_stats(r, xs, &a, &b);
        for (int64_t e = 0; e < n; e++) {
            double v;
            if (r->mode == 2) {
                v = exp(r->fparam * xs[e] - a) * b;
            } else {
                int64_t p = pidx(r, s, e / r->inner, e % r->inner);
                v = (xs[e] - a) * b;
                if (r->gamma) v *= r->gamma[p];
                if (r->beta) v += r->beta[p];
                if (r->silu) v = v / (1 + exp(-v));
            }
            y[s * n + e] = v;
        }
    }
}

/* dx (may be NULL), dgamma/dbeta (may be NULL; overwritten) */
static void seg_backward(const seg_ref *r, const double *x, const double *dy, double *dx, double *dgamma,
                         double *dbeta, int64_t nparam)
{
    int64_t n = r->lines * r->inner;
    for (int64_t p = 0; p < nparam; p++) {
        if (dgamma) dgamma[p] = 0;
        if (dbeta) dbeta[p] = 0;
    }
    double *xh = malloc(sizeof(double) * (size_t)n), *dxh = malloc(sizeof(double) * (size_t)n);
    for (int64_t s = 0; s < r->nseg; s++) {
        const double *xs = x + s * n, *ds = dy + s * n;
        double a, b, s1 = 0, s2 = 0;
        seg_stats(r, xs, &a, &b);
        for (int64_t e = 0; e < n; e++) {
            if (r->mode == 2) {
                xh[e] = exp(r->fparam * xs[e] - a) * b;
                s1 += ds[e] * xh[e];
                continue;
            }
            int64_t p = pidx(r, s, e / r->inner, e % r->inner);
            double gm = r->gamma ? r->gamma[p] : 1, g = ds[e];
            xh[e] = (xs[e] - a) * b;
            if (r->silu) {
                double z = xh[e] * gm + (r->beta ? r->beta[p] : 0), sg = 1 / (1 + exp(-z));
                g *= sg * (1 + z * (1 - sg));
            }
            if (dgamma) dgamma[p] += g * xh[e];
            if (dbeta) dbeta[p] += g;
            dxh[e] = g * gm;
            s1 += dxh[e];
            s2 += dxh[e] * xh[e];
        }
        if (!dx) continue;
        for (int64_t e = 0; e < n; e++) {
            if (r->mode == 2) dx[s * n + e] = r->fparam * xh[e] * (ds[e] - s1);
            else if (r->mode == 1) dx[s * n + e] = b * (dxh[e] - xh[e] * s2 / (double)n);
            else dx[s * n + e] = b * (dxh[e] - s1 / (double)n - xh[e] * s2 / (double)n);
        }
    }
    free(xh);
    free(dxh);
}

static seg_ref group_ref(int64_t N, int64_t C, int64_t S, int groups, double eps, const double *gamma,
                         const double *beta, int silu)
{
    seg_ref r = {0, N * groups, C / groups, S, 0, groups, eps, gamma, beta, silu};
    return r;
}

static seg_ref row_ref(int mode, int64_t rows, int64_t D, const double *gamma, const double *beta, double fparam)
{
    seg_ref r = {mode, rows, 1, D, 1, 1, fparam, mode == 2 ? NULL : gamma, mode == 0 ? beta : NULL, 0};
    return r;
}

void vkl_ref_group_norm_f64(const double *x, int64_t N, int64_t C, int64_t S, int groups, double eps,
                            const double *gamma, const double *beta, int silu, double *y)
{
    seg_ref r = group_ref(N, C, S, groups, eps, gamma, beta, silu);
    seg_forward(&r, x, y);
}

void vkl_ref_group_norm_backward(const double *x, int64_t N, int64_t C, int64_t S, int groups, double eps,
                                 const double *gamma, const double *beta, int silu, const double *dy, double *dx,
                                 double *dgamma, double *dbeta)
{
    seg_ref r = group_ref(N, C, S, groups, eps, gamma, beta, silu);
    seg_backward(&r, x, dy, dx, dgamma, dbeta, C);
}

void vkl_ref_row_norm_f64(int mode, const double *x, int64_t rows, int64_t D, const double *gamma,
                          const double *beta, double fparam, double *y)
{
    seg_ref r = row_ref(mode, rows, D, gamma, beta, fparam);
    seg_forward(&r, x, y);
}

void vkl_ref_row_norm_backward(int mode, const double *x, int64_t rows, int64_t D, const double *gamma,
                               const double *beta, double fparam, const double *dy, double *dx, double *dgamma,
                               double *dbeta)
{
    seg_ref r = row_ref(mode, rows, D, gamma, beta, fparam);
    seg_backward(&r, x, dy, dx, dgamma, dbeta, D);
}
