/* CPU reference for attention.comp: the whole score row, max-subtracted
 * softmax, then the weighted sum of values, all in double. */
#include "vkl_ref.h"

#include <math.h>
#include <stdlib.h>

void vkl_ref_attention(const float *q, const int64_t sq[4], const float *k, const int64_t sk[4], const float *v,
                       const int64_t sv[4], int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                       int causal, float *out)
{
    double *s = malloc(sizeof(double) * (size_t)(Lk ? Lk : 1));
    double *acc = malloc(sizeof(double) * (size_t)(D ? D : 1));
    if (!s || !acc) abort();
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *Q = q + b * sq[0] + h * sq[1], *K = k + b * sk[0] + h * sk[1], *V = v + b * sv[0] + h * sv[1];
            for (int64_t i = 0; i < Lq; i++) {
                float *o = out + ((b * H + h) * Lq + i) * D;
                int64_t nvis = causal ? i + (Lk - Lq) + 1 : Lk;
                if (nvis > Lk) nvis = Lk;
                if (nvis <= 0) {
                    for (int64_t d = 0; d < D; d++) o[d] = 0;
                    continue;
                }
                double mx = -INFINITY;
                for (int64_t j = 0; j < nvis; j++) {
                    double dot = 0;
                    for (int64_t d = 0; d < D; d++) dot += (double)Q[i * sq[2] + d * sq[3]] * K[j * sk[2] + d * sk[3]];
                    s[j] = dot * scale;
                    if (s[j] > mx) mx = s[j];
                }
                double sum = 0;
                for (int64_t j = 0; j < nvis; j++) sum += s[j] = exp(s[j] - mx);
                for (int64_t d = 0; d < D; d++) acc[d] = 0;
                for (int64_t j = 0; j < nvis; j++)
                    for (int64_t d = 0; d < D; d++) acc[d] += s[j] * V[j * sv[2] + d * sv[3]];
                for (int64_t d = 0; d < D; d++) o[d] = (float)(acc[d] / sum);
            }
        }
    free(s);
    free(acc);
}

void vkl_ref_causal_mask(const float *x, int64_t n, int64_t lq, int64_t lk, int64_t shift, float value, float *y)
{
    for (int64_t g = 0; g < n; g++) {
        int64_t col = g % lk, row = (g / lk) % lq;
        y[g] = col > row + shift ? value : x[g];
    }
}
