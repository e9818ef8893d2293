/* CPU reference for conv2d.comp (double accumulation). */
#include "vkl_ref.h"

void vkl_ref_conv2d(const float *x, const int64_t xs[4], const int64_t xst[4], const float *w, int64_t O, int64_t kh,
                    int64_t kw, const float *bias, int sh, int sw, int pt, int pb, int pl, int pr, float *y)
{
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    int64_t Ho = (H + pt + pb - kh) / sh + 1, Wo = (W + pl + pr - kw) / sw + 1;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double s = bias ? bias[o] : 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < kh; ky++) {
                            int64_t iy = oy * sh - pt + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t ix = ox * sw - pl + kx;
                                if (ix < 0 || ix >= W) continue;
                                s += (double)w[((o * C + c) * kh + ky) * kw + kx] *
                                     x[n * xst[0] + c * xst[1] + iy * xst[2] + ix * xst[3]];
                            }
                        }
                    y[((n * O + o) * Ho + oy) * Wo + ox] = (float)s;
                }
}

void vkl_ref_conv2d_f64(const double *x, const int64_t xs[4], const double *w, int64_t O, int64_t kh, int64_t kw,
                        const double *bias, int sh, int sw, int pt, int pb, int pl, int pr, double *y)
{
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    int64_t Ho = (H + pt + pb - kh) / sh + 1, Wo = (W + pl + pr - kw) / sw + 1;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double s = bias ? bias[o] : 0;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < kh; ky++) {
                            int64_t iy = oy * sh - pt + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t ix = ox * sw - pl + kx;
                                if (ix < 0 || ix >= W) continue;
                                s += w[((o * C + c) * kh + ky) * kw + kx] * x[((n * C + c) * H + iy) * W + ix];
                            }
                        }
                    y[((n * O + o) * Ho + oy) * Wo + ox] = s;
                }
}

/* Scatters each output's gradient back along the taps that produced it. */
void vkl_ref_conv2d_backward(const double *x, const int64_t xs[4], const double *w, int64_t O, int64_t kh,
                             int64_t kw, int sh, int sw, int pt, int pb, int pl, int pr, const double *dy, double *dx,
                             double *dw, double *dbias)
{
    int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
    int64_t Ho = (H + pt + pb - kh) / sh + 1, Wo = (W + pl + pr - kw) / sw + 1;
    if (dx)
        for (int64_t i = 0; i < N * C * H * W; i++) dx[i] = 0;
    if (dw)
        for (int64_t i = 0; i < O * C * kh * kw; i++) dw[i] = 0;
    if (dbias)
        for (int64_t i = 0; i < O; i++) dbias[i] = 0;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t oy = 0; oy < Ho; oy++)
                for (int64_t ox = 0; ox < Wo; ox++) {
                    double g = dy[((n * O + o) * Ho + oy) * Wo + ox];
                    if (dbias) dbias[o] += g;
                    for (int64_t c = 0; c < C; c++)
                        for (int64_t ky = 0; ky < kh; ky++) {
                            int64_t iy = oy * sh - pt + ky;
                            if (iy < 0 || iy >= H) continue;
                            for (int64_t kx = 0; kx < kw; kx++) {
                                int64_t ix = ox * sw - pl + kx;
                                if (ix < 0 || ix >= W) continue;
                                int64_t wi = ((o * C + c) * kh + ky) * kw + kx, xi = ((n * C + c) * H + iy) * W + ix;
                                if (dx) dx[xi] += w[wi] * g;
                                if (dw) dw[wi] += x[xi] * g;
                            }
                        }
                }
}
