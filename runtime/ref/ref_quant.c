/* CPU reference for the matmul shaders' quantised right operand (NF4,
 * runtime/quant.h): a linear layer y = x W^T and its input gradient
 * dx = dy W with W [N, K] given as packed codes and per-block absmax, each
 * element dequantised as level * absmax (f32) and summed in double. */
#include "vkl_ref.h"

#include "quant.h"

static float nf4_at(const uint8_t *packed, const float *absmax, int64_t i)
{
    uint8_t byte = packed[i / 2];
    int code = i % 2 ? byte & 15 : byte >> 4;
    return vkl_nf4_levels[code] * absmax[i / VKL_NF4_BLOCK];
}

void vkl_ref_linear_nf4(const float *x, const uint8_t *packed, const float *absmax, float *y, int64_t M, int64_t N,
                        int64_t K)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * nf4_at(packed, absmax, n * K + k);
            y[m * N + n] = (float)s;
        }
}

void vkl_ref_linear_nf4_grad_input(const float *dy, const uint8_t *packed, const float *absmax, float *dx, int64_t M,
                                   int64_t N, int64_t K)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k < K; k++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += (double)dy[m * N + n] * nf4_at(packed, absmax, n * K + k);
            dx[m * K + k] = (float)s;
        }
}
