#include "cmaes.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct vkl_cmaes {
    int n, lambda, mu, gen;
    double lo, hi, sigma;
    double *w;            /* [mu] recombination weights, sum 1 */
    double mueff, cc, cs, c1, cmu, damps, chin;
    double *mean, *pc, *ps;
    double *C, *B, *D;    /* C = B diag(D^2) B^T, B's columns the eigenvectors */
    double *y;            /* [lambda * n]: (x_j - mean) / sigma of the last ask */
    double *tmp;          /* [n] */
    int *order;           /* [lambda]: candidate indices by value */
    uint64_t rng;
    int have_spare;
    double spare;
};

/* uniform in (0, 1), from splitmix64 (rng.h): small, seedable, the same sequence everywhere */
static double uniform(uint64_t *x)
{
    return ((double)(vkl_splitmix64(x) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* standard normal (Box-Muller, both values used) */
static double gauss(vkl_cmaes *s)
{
    if (s->have_spare) {
        s->have_spare = 0;
        return s->spare;
    }
    double u = uniform(&s->rng), v = uniform(&s->rng), r = sqrt(-2.0 * log(u)), t = 6.283185307179586 * v;
    s->spare = r * sin(t);
    s->have_spare = 1;
    return r * cos(t);
}

/* Eigen-decomposition of the symmetric n x n matrix a by cyclic Jacobi
 * rotations: on return v's columns are the eigenvectors and d the
 * eigenvalues. a is destroyed. n is small (a handful of adapters). */
static void jacobi_eigen(double *a, int n, double *v, double *d)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) v[i * n + j] = i == j;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
        if (off < 1e-300) break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                double apq = a[p * n + q];
                if (fabs(apq) < 1e-300) continue;
                double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), sn = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q of a */
                    double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - sn * akq;
                    a[k * n + q] = sn * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q of a */
                    double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - sn * aqk;
                    a[q * n + k] = sn * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - sn * vkq;
                    v[k * n + q] = sn * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++) d[i] = a[i * n + i];
}

/* B and D from C; eigenvalues are kept positive (rounding can push a tiny one below zero). */
static void decompose(vkl_cmaes *s)
{
    int n = s->n;
    double *a = malloc(sizeof(double) * (size_t)n * n);
    if (!a) return; /* keep the previous decomposition */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) a[i * n + j] = 0.5 * (s->C[i * n + j] + s->C[j * n + i]);
    jacobi_eigen(a, n, s->B, s->D);
    free(a);
    for (int i = 0; i < n; i++) s->D[i] = sqrt(s->D[i] > 1e-20 ? s->D[i] : 1e-20);
}

void vkl_cmaes_free(vkl_cmaes *s)
{
    if (!s) return;
    free(s->w);
    free(s->mean);
    free(s->pc);
    free(s->ps);
    free(s->C);
    free(s->B);
    free(s->D);
    free(s->y);
    free(s->tmp);
    free(s->order);
    free(s);
}

int vkl_cmaes_new(const vkl_cmaes_opts *o, vkl_cmaes **out, vkl_err *e)
{
    *out = NULL;
    if (o->dim < 1 || o->dim > 1000) return vkl_fail(e, "CMA-ES: dimension %d is not in [1, 1000]", o->dim);
    if (!(o->lo < o->hi) || !isfinite(o->lo) || !isfinite(o->hi))
        return vkl_fail(e, "CMA-ES: the bounds [%g, %g] are not an interval", o->lo, o->hi);
    if (!(o->sigma0 > 0) || !isfinite(o->sigma0)) return vkl_fail(e, "CMA-ES: step size %g is not positive", o->sigma0);
    if (o->lambda < 0 || o->lambda == 1 || o->lambda > 100000)
        return vkl_fail(e, "CMA-ES: %d candidates per generation (at least 2)", o->lambda);
    int n = o->dim;
    vkl_cmaes *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->n = n;
    s->lambda = o->lambda ? o->lambda : 4 + (int)floor(3 * log((double)n));
    s->mu = s->lambda / 2;
    s->lo = o->lo;
    s->hi = o->hi;
    s->sigma = o->sigma0;
    s->rng = o->seed;
    size_t nn = (size_t)n * n;
    s->w = malloc(sizeof(double) * (size_t)s->mu);
    s->mean = malloc(sizeof(double) * (size_t)n);
    s->pc = calloc((size_t)n, sizeof(double));
    s->ps = calloc((size_t)n, sizeof(double));
    s->C = calloc(nn, sizeof(double));
    s->B = calloc(nn, sizeof(double));
    s->D = malloc(sizeof(double) * (size_t)n);
    s->y = malloc(sizeof(double) * (size_t)s->lambda * n);
    s->tmp = malloc(sizeof(double) * (size_t)n);
    s->order = malloc(sizeof(int) * (size_t)s->lambda);
    if (!s->w || !s->mean || !s->pc || !s->ps || !s->C || !s->B || !s->D || !s->y || !s->tmp || !s->order) {
        vkl_cmaes_free(s);
        return vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < n; i++) {
        double m = o->x0 ? o->x0[i] : 0.5 * (o->lo + o->hi);
        s->mean[i] = m < o->lo ? o->lo : m > o->hi ? o->hi : m;
        s->C[i * n + i] = s->B[i * n + i] = s->D[i] = 1;
    }
    /* the tutorial's defaults (its table 1) */
    double sum = 0, sum2 = 0;
    for (int i = 0; i < s->mu; i++) sum += s->w[i] = log(s->mu + 0.5) - log(i + 1.0);
    for (int i = 0; i < s->mu; i++) {
        s->w[i] /= sum;
        sum2 += s->w[i] * s->w[i];
    }
    double dn = n;
    s->mueff = 1 / sum2;
    s->cc = (4 + s->mueff / dn) / (dn + 4 + 2 * s->mueff / dn);
    s->cs = (s->mueff + 2) / (dn + s->mueff + 5);
    s->c1 = 2 / ((dn + 1.3) * (dn + 1.3) + s->mueff);
    double cmu = 2 * (s->mueff - 2 + 1 / s->mueff) / ((dn + 2) * (dn + 2) + s->mueff);
    s->cmu = cmu < 1 - s->c1 ? cmu : 1 - s->c1;
    double r = sqrt((s->mueff - 1) / (dn + 1)) - 1;
    s->damps = 1 + 2 * (r > 0 ? r : 0) + s->cs;
    s->chin = sqrt(dn) * (1 - 1 / (4 * dn) + 1 / (21 * dn * dn));
    *out = s;
    return 0;
}

int vkl_cmaes_lambda(const vkl_cmaes *s)
{
    return s->lambda;
}

const double *vkl_cmaes_mean(const vkl_cmaes *s)
{
    return s->mean;
}

double vkl_cmaes_sigma(const vkl_cmaes *s)
{
    return s->sigma;
}

void vkl_cmaes_ask(vkl_cmaes *s, double *x)
{
    int n = s->n;
    for (int j = 0; j < s->lambda; j++) {
        double *xj = x + (size_t)j * n, *yj = s->y + (size_t)j * n;
        for (int i = 0; i < n; i++) s->tmp[i] = s->D[i] * gauss(s);
        for (int i = 0; i < n; i++) {
            double v = 0;
            for (int k = 0; k < n; k++) v += s->B[i * n + k] * s->tmp[k];
            double xi = s->mean[i] + s->sigma * v;
            xi = xi < s->lo ? s->lo : xi > s->hi ? s->hi : xi;
            xj[i] = xi;
            yj[i] = (xi - s->mean[i]) / s->sigma; /* the projected step */
        }
    }
}

/* a ranks before b: smaller value; non-finite values last; ties keep the draw order */
static int before(const double *f, int a, int b)
{
    int na = !isfinite(f[a]), nb = !isfinite(f[b]);
    if (na != nb) return nb;
    if (!na && f[a] != f[b]) return f[a] < f[b];
    return a < b;
}

void vkl_cmaes_tell(vkl_cmaes *s, const double *f)
{
    int n = s->n;
    for (int j = 0; j < s->lambda; j++) { /* insertion sort: lambda is small */
        int k = j;
        for (; k > 0 && before(f, j, s->order[k - 1]); k--) s->order[k] = s->order[k - 1];
        s->order[k] = j;
    }
    /* y_w: the weighted mean step of the best mu */
    double *yw = s->tmp;
    for (int i = 0; i < n; i++) {
        double v = 0;
        for (int k = 0; k < s->mu; k++) v += s->w[k] * s->y[(size_t)s->order[k] * n + i];
        yw[i] = v;
    }
    for (int i = 0; i < n; i++) {
        double m = s->mean[i] + s->sigma * yw[i];
        s->mean[i] = m < s->lo ? s->lo : m > s->hi ? s->hi : m;
    }
    /* p_sigma += C^(-1/2) y_w, C^(-1/2) = B D^-1 B^T */
    double *bt = malloc(sizeof(double) * (size_t)n);
    if (!bt) return; /* out of memory: the mean moved, the paths stay (the search goes on, adapting less) */
    for (int k = 0; k < n; k++) {
        double v = 0;
        for (int i = 0; i < n; i++) v += s->B[i * n + k] * yw[i];
        bt[k] = v / s->D[k];
    }
    double cs = s->cs, norm_ps = 0;
    for (int i = 0; i < n; i++) {
        double v = 0;
        for (int k = 0; k < n; k++) v += s->B[i * n + k] * bt[k];
        s->ps[i] = (1 - cs) * s->ps[i] + sqrt(cs * (2 - cs) * s->mueff) * v;
        norm_ps += s->ps[i] * s->ps[i];
    }
    free(bt);
    norm_ps = sqrt(norm_ps);
    s->gen++;
    double hsig_lhs = norm_ps / sqrt(1 - pow(1 - cs, 2.0 * s->gen)) / s->chin;
    int hsig = hsig_lhs < 1.4 + 2 / (n + 1.0);
    double cc = s->cc;
    for (int i = 0; i < n; i++) s->pc[i] = (1 - cc) * s->pc[i] + hsig * sqrt(cc * (2 - cc) * s->mueff) * yw[i];
    double c1 = s->c1, cmu = s->cmu, keep = 1 - c1 - cmu + (1 - hsig) * c1 * cc * (2 - cc);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double rank_mu = 0;
            for (int k = 0; k < s->mu; k++) {
                const double *yk = s->y + (size_t)s->order[k] * n;
                rank_mu += s->w[k] * yk[i] * yk[j];
            }
            double v = keep * s->C[i * n + j] + c1 * s->pc[i] * s->pc[j] + cmu * rank_mu;
            s->C[i * n + j] = s->C[j * n + i] = v;
        }
    double ls = (cs / s->damps) * (norm_ps / s->chin - 1);
    s->sigma *= exp(ls < 1 ? ls : 1); /* at most e-fold per generation: a guard against a runaway first step */
    decompose(s);
}
