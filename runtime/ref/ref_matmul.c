/* CPU reference for matmul.comp (double accumulation). */
#include "vkl_ref.h"

void vkl_ref_matmul(const float *a, const int64_t sa[4], const float *b, const int64_t sb[4], const float *bias,
                    float *c, int64_t nb0, int64_t nb1, int64_t M, int64_t N, int64_t K)
{
    for (int64_t z0 = 0; z0 < nb0; z0++)
        for (int64_t z1 = 0; z1 < nb1; z1++) {
            const float *A = a + z0 * sa[0] + z1 * sa[1];
            const float *B = b + z0 * sb[0] + z1 * sb[1];
            float *C = c + (z0 * nb1 + z1) * M * N;
            for (int64_t m = 0; m < M; m++)
                for (int64_t n = 0; n < N; n++) {
                    double s = bias ? bias[n] : 0;
                    for (int64_t k = 0; k < K; k++) s += (double)A[m * sa[2] + k * sa[3]] * B[k * sb[2] + n * sb[3]];
                    C[m * N + n] = (float)s;
                }
        }
}
