/* CPU references for the segment normalisations (norm_stats.comp +
 * norm_apply.comp): two-pass statistics in double precision. */
#include "vkl_ref.h"

#include <math.h>

static void stats(const float *x, int64_t n, double *mean, double *var)
{
    double s = 0, q = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    s /= (double)n;
    for (int64_t i = 0; i < n; i++) q += (x[i] - s) * (x[i] - s);
    *mean = s;
    *var = q / (double)n;
}

void vkl_ref_group_norm(const float *x, int64_t N, int64_t C, int64_t S, int groups, double eps, const float *gamma,
                        const float *beta, int silu, float *y)
{
    int64_t cpg = C / groups, len = cpg * S;
    for (int64_t n = 0; n < N; n++)
        for (int64_t gi = 0; gi < groups; gi++) {
            int64_t base = (n * C + gi * cpg) * S;
            double mean, var;
            stats(x + base, len, &mean, &var);
            double rstd = 1.0 / sqrt(var + eps);
            for (int64_t e = 0; e < len; e++) {
                int64_t c = gi * cpg + e / S;
                double r = (x[base + e] - mean) * rstd;
                if (gamma) r *= gamma[c];
                if (beta) r += beta[c];
                if (silu) r = r / (1 + exp(-r));
                y[base + e] = (float)r;
            }
        }
}

void vkl_ref_layer_norm(const float *x, int64_t rows, int64_t D, const float *gamma, const float *beta, double eps,
                        float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        double mean, var;
        stats(x + r * D, D, &mean, &var);
        double rstd = 1.0 / sqrt(var + eps);
        for (int64_t i = 0; i < D; i++) {
            double v = (x[r * D + i] - mean) * rstd;
            if (gamma) v *= gamma[i];
            if (beta) v += beta[i];
            y[r * D + i] = (float)v;
        }
    }
}

void vkl_ref_rms_norm(const float *x, int64_t rows, int64_t D, const float *gamma, double eps, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        double q = 0;
        for (int64_t i = 0; i < D; i++) q += (double)x[r * D + i] * x[r * D + i];
        double rstd = 1.0 / sqrt(q / (double)D + eps);
        for (int64_t i = 0; i < D; i++) y[r * D + i] = (float)(x[r * D + i] * rstd * (gamma ? gamma[i] : 1.0));
    }
}

void vkl_ref_softmax(const float *x, int64_t rows, int64_t D, double scale, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        double m = -INFINITY, s = 0;
        for (int64_t i = 0; i < D; i++)
            if (scale * xr[i] > m) m = scale * xr[i];
        for (int64_t i = 0; i < D; i++) s += exp(scale * xr[i] - m);
        for (int64_t i = 0; i < D; i++) y[r * D + i] = (float)(exp(scale * xr[i] - m) / s);
    }
}
