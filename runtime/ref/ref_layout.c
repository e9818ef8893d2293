/* CPU references for copy_strided.comp (contiguous, upsample, concat). */
#include "vkl_ref.h"

void vkl_ref_contiguous(const float *x, const int64_t xs[4], const int64_t xst[4], float *y)
{
    int64_t i = 0;
    for (int64_t a = 0; a < xs[0]; a++)
        for (int64_t b = 0; b < xs[1]; b++)
            for (int64_t c = 0; c < xs[2]; c++)
                for (int64_t d = 0; d < xs[3]; d++) y[i++] = x[a * xst[0] + b * xst[1] + c * xst[2] + d * xst[3]];
}

void vkl_ref_upsample_nearest2x(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, float *y)
{
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t r = 0; r < 2 * H; r++)
            for (int64_t c = 0; c < 2 * W; c++) y[(p * 2 * H + r) * 2 * W + c] = x[(p * H + r / 2) * W + c / 2];
}

void vkl_ref_concat(const float *a, const int64_t as[4], const float *b, const int64_t bs[4], int d, float *y)
{
    /* outer: dims before d; inner: dims after d */
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; i++) outer *= as[i];
    for (int i = d + 1; i < 4; i++) inner *= as[i];
    int64_t na = as[d] * inner, nb = bs[d] * inner, k = 0;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < na; i++) y[k++] = a[o * na + i];
        for (int64_t i = 0; i < nb; i++) y[k++] = b[o * nb + i];
    }
}

void vkl_ref_upsample_nearest2x_backward(const double *dy, int64_t N, int64_t C, int64_t H, int64_t W, double *dx)
{
    for (int64_t i = 0; i < N * C * H * W; i++) dx[i] = 0;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t r = 0; r < 2 * H; r++)
            for (int64_t c = 0; c < 2 * W; c++) dx[(p * H + r / 2) * W + c / 2] += dy[(p * 2 * H + r) * 2 * W + c];
}
