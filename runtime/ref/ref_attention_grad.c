/* CPU reference for the attention gradient (attention_grad.comp): per query
 * row the probabilities in double, then dP = dO V^T, dS = P (dP - rowsum(P dP)),
 * dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO. */
#include "vkl_ref.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void vkl_ref_attention_backward(const float *q, const int64_t sq[4], const float *k, const int64_t sk[4],
                                const float *v, const int64_t sv[4], const float *dy, int64_t B, int64_t H, int64_t Lq,
                                int64_t Lk, int64_t D, double scale, int causal, double *dq, double *dk, double *dv)
{
    double *p = malloc(sizeof(double) * (size_t)(Lk ? Lk : 1));
    double *dp = malloc(sizeof(double) * (size_t)(Lk ? Lk : 1));
    if (!p || !dp) abort();
    size_t nq = (size_t)(B * H * Lq * D), nk = (size_t)(B * H * Lk * D);
    memset(dq, 0, sizeof(double) * nq);
    memset(dk, 0, sizeof(double) * nk);
    memset(dv, 0, sizeof(double) * nk);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++) {
            const float *Q = q + b * sq[0] + h * sq[1], *K = k + b * sk[0] + h * sk[1], *V = v + b * sv[0] + h * sv[1];
            int64_t bh = b * H + h;
            for (int64_t i = 0; i < Lq; i++) {
                int64_t nvis = causal ? i + (Lk - Lq) + 1 : Lk;
                if (nvis > Lk) nvis = Lk;
                if (nvis <= 0) continue; /* zero output, zero gradients */
                const float *G = dy + (bh * Lq + i) * D;
                double mx = -INFINITY, sum = 0, rs = 0;
                for (int64_t j = 0; j < nvis; j++) {
                    double dot = 0, dd = 0;
                    for (int64_t d = 0; d < D; d++) {
                        dot += (double)Q[i * sq[2] + d * sq[3]] * K[j * sk[2] + d * sk[3]];
                        dd += (double)G[d] * V[j * sv[2] + d * sv[3]];
                    }
                    p[j] = dot * scale;
                    dp[j] = dd;
                    if (p[j] > mx) mx = p[j];
                }
                for (int64_t j = 0; j < nvis; j++) sum += p[j] = exp(p[j] - mx);
                for (int64_t j = 0; j < nvis; j++) rs += (p[j] /= sum) * dp[j];
                double *dQ = dq + (bh * Lq + i) * D;
                for (int64_t j = 0; j < nvis; j++) {
                    double ds = p[j] * (dp[j] - rs) * scale;
                    double *dK = dk + (bh * Lk + j) * D, *dV = dv + (bh * Lk + j) * D;
                    for (int64_t d = 0; d < D; d++) {
                        dQ[d] += ds * K[j * sk[2] + d * sk[3]];
                        dK[d] += ds * Q[i * sq[2] + d * sq[3]];
                        dV[d] += p[j] * G[d];
                    }
                }
            }
        }
    free(p);
    free(dp);
}
