/* CPU references for rope.comp: transformers' float32 steps (inverse
 * frequencies, cos/sin tables, rotate-half), and the rotation in double
 * precision for the gradient tests. */
#include "vkl_ref.h"

#include <math.h>

void vkl_ref_rope_inv_freq(int64_t D, float theta, float *inv_freq)
{
    for (int64_t k = 0; k < D / 2; k++) {
        float e = (float)(2 * k) / (float)D;
        float p = (float)pow((double)theta, (double)e);
        inv_freq[k] = 1.0f / p;
    }
}

void vkl_ref_rope_make_tables(int64_t P, int64_t D, const float *inv_freq, float *cos_t, float *sin_t)
{
    for (int64_t p = 0; p < P; p++)
        for (int64_t d = 0; d < D; d++) {
            float angle = (float)p * inv_freq[d % (D / 2)];
            cos_t[p * D + d] = (float)cos((double)angle);
            sin_t[p * D + d] = (float)sin((double)angle);
        }
}

void vkl_ref_rope_tables(const float *x, int64_t rows, int64_t L, int64_t D, int64_t pos0, const float *cos_t,
                         const float *sin_t, float *y)
{
    int64_t h = D / 2;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t l = 0; l < L; l++) {
            const float *xr = x + (r * L + l) * D, *c = cos_t + (pos0 + l) * D, *s = sin_t + (pos0 + l) * D;
            float *yr = y + (r * L + l) * D;
            for (int64_t d = 0; d < h; d++) {
                /* q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q[h:], q[:h]) */
                yr[d] = xr[d] * c[d] + (-xr[d + h]) * s[d];
                yr[d + h] = xr[d + h] * c[d + h] + xr[d] * s[d + h];
            }
        }
}

/* ---- double precision (gradient tests) */

void vkl_ref_rope_f64(const double *x, int64_t rows, int64_t L, int64_t D, int64_t pos0, double theta, int inverse,
                      double *y)
{
    int64_t h = D / 2;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t l = 0; l < L; l++) {
            const double *xr = x + (r * L + l) * D;
            double *yr = y + (r * L + l) * D;
            for (int64_t k = 0; k < h; k++) {
                double angle = (double)(pos0 + l) * pow(theta, -2.0 * (double)k / (double)D);
                double c = cos(angle), s = inverse ? -sin(angle) : sin(angle);
                yr[k] = xr[k] * c - xr[k + h] * s;
                yr[k + h] = xr[k + h] * c + xr[k] * s;
            }
        }
}
