/* CPU references for glu.comp (GEGLU, SwiGLU), in double precision. */
#include "vkl_ref.h"

#include <math.h>

void vkl_ref_geglu(const float *x, int64_t rows, int64_t F, float *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t f = 0; f < F; f++) {
            double v = x[r * 2 * F + f], gate = x[r * 2 * F + F + f];
            y[r * F + f] = (float)(v * 0.5 * gate * (1 + erf(gate / sqrt(2.0))));
        }
}

void vkl_ref_swiglu(const float *gate, const float *up, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        double a = gate[i];
        y[i] = (float)(a / (1 + exp(-a)) * up[i]);
    }
}

/* ---- double precision forwards and backwards (gradient tests) */

void vkl_ref_geglu_f64(const double *x, int64_t rows, int64_t F, double *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t f = 0; f < F; f++) {
            double v = x[r * 2 * F + f], gate = x[r * 2 * F + F + f];
            y[r * F + f] = v * 0.5 * gate * (1 + erf(gate / sqrt(2.0)));
        }
}

void vkl_ref_geglu_backward(const double *x, int64_t rows, int64_t F, const double *dy, double *dx)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t f = 0; f < F; f++) {
            double v = x[r * 2 * F + f], gate = x[r * 2 * F + F + f], d = dy[r * F + f];
            double cdf = 0.5 * (1 + erf(gate / sqrt(2.0))), pdf = exp(-0.5 * gate * gate) / sqrt(2 * M_PI);
            dx[r * 2 * F + f] = d * gate * cdf;
            dx[r * 2 * F + F + f] = d * v * (cdf + gate * pdf);
        }
}

void vkl_ref_swiglu_f64(const double *gate, const double *up, int64_t n, double *y)
{
    for (int64_t i = 0; i < n; i++) y[i] = gate[i] / (1 + exp(-gate[i])) * up[i];
}

void vkl_ref_swiglu_backward(const double *gate, const double *up, int64_t n, const double *dy, double *dgate,
                             double *dup)
{
    for (int64_t i = 0; i < n; i++) {
        double s = 1 / (1 + exp(-gate[i]));
        if (dgate) dgate[i] = dy[i] * up[i] * s * (1 + gate[i] * (1 - s));
        if (dup) dup[i] = dy[i] * gate[i] * s;
    }
}
