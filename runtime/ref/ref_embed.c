/* CPU references for timestep_embed.comp, embedding.comp and rope.comp.
 * The float32 rounding steps of PyTorch are reproduced explicitly (each
 * (float) cast is one torch float32 operation); transcendental functions are
 * evaluated in double and rounded once. */
#include "vkl_ref.h"

#include <math.h>

void vkl_ref_timestep_embedding(const float *t, int64_t N, int dim, int flip_sin_to_cos, float shift,
                                float max_period, float *y)
{
    int half = dim / 2;
    float neg_log = (float)-log((double)max_period), denom = (float)((double)half - (double)shift);
    for (int64_t n = 0; n < N; n++) {
        for (int k = 0; k < half; k++) {
            float ex = (float)(neg_log * (float)k);
            ex = ex / denom;
            float freq = (float)exp((double)ex);
            float arg = t[n] * freq;
            float s = (float)sin((double)arg), c = (float)cos((double)arg);
            y[n * dim + k] = flip_sin_to_cos ? c : s;
            y[n * dim + half + k] = flip_sin_to_cos ? s : c;
        }
        if (dim % 2) y[n * dim + dim - 1] = 0;
    }
}

void vkl_ref_embedding(const float *table, int64_t V, int64_t D, const int32_t *ids, int64_t n, float *y)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t d = 0; d < D; d++) y[r * D + d] = ids[r] >= 0 && ids[r] < V ? table[ids[r] * D + d] : 0.0f;
}

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

void vkl_ref_embedding_backward(const int32_t *ids, int64_t n, int64_t V, int64_t D, const double *dy, double *dtable)
{
    for (int64_t i = 0; i < V * D; i++) dtable[i] = 0;
    for (int64_t r = 0; r < n; r++)
        if (ids[r] >= 0 && ids[r] < V)
            for (int64_t d = 0; d < D; d++) dtable[ids[r] * D + d] += dy[r * D + d];
}
