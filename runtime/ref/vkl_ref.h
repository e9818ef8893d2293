/* CPU reference implementations of the ops: plain loops in double precision,
 * used by tests to check the shaders. Inputs are f32 host arrays addressed
 * with 4-D shapes and element strides (stride 0 = broadcast). */
#ifndef VKL_REF_H
#define VKL_REF_H

#include <stdint.h>

/* op: 0 add, 1 sub, 2 mul, 3 div. y is contiguous with shape ys. */
void vkl_ref_binary(int op, const float *a, const int64_t as[4], const float *b, const int64_t bs[4], float *y,
                    const int64_t ys[4]);
/* op: vkl_unary_op. y[i] = f(alpha * x[i] + beta) for x addressed with strides xs over shape ys. */
void vkl_ref_unary(int op, float alpha, float beta, const float *x, const int64_t xs[4], float *y, const int64_t ys[4]);
double vkl_ref_unary1(int op, double x);
/* op: 0 sum, 1 max over rows of length n (contiguous). */
void vkl_ref_reduce_rows(int op, const float *x, int64_t rows, int64_t n, float *y);
/* C[z][m][n] = sum_k A[z][m][k] B[z][k][n] (+ bias[n]), with element strides:
 * A at a + z0*sa[0] + z1*sa[1] + m*sa[2] + k*sa[3]; B likewise with (k, n);
 * z = z0*nb1 + z1; C contiguous. */
void vkl_ref_matmul(const float *a, const int64_t sa[4], const float *b, const int64_t sb[4], const float *bias,
                    float *c, int64_t nb0, int64_t nb1, int64_t M, int64_t N, int64_t K);

/* ---- conv2d */
/* y[n][o][oy][ox] = bias[o] + sum_{c,ky,kx} w[o][c][ky][kx] * x[n][c][oy*sh-pt+ky][ox*sw-pl+kx]
 * (zero outside the image). x has shape xs = {N,C,H,W} and element strides xst;
 * w is contiguous [O, C, kh, kw]; bias may be NULL; y contiguous [N, O, Ho, Wo]
 * with Ho = (H+pt+pb-kh)/sh + 1, Wo likewise. */
void vkl_ref_conv2d(const float *x, const int64_t xs[4], const int64_t xst[4], const float *w, int64_t O, int64_t kh,
                    int64_t kw, const float *bias, int sh, int sw, int pt, int pb, int pl, int pr, float *y);

/* ---- layout ops (contiguous, upsample, concat) */
/* Copies x (shape xs, element strides xst) into contiguous y. */
void vkl_ref_contiguous(const float *x, const int64_t xs[4], const int64_t xst[4], float *y);
/* y [N,C,2H,2W] = x [N,C,H,W] (contiguous) repeated 2x2. */
void vkl_ref_upsample_nearest2x(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, float *y);
/* y = concat(a, b) along dim d of 4-D contiguous shapes as, bs (equal except at d). */
void vkl_ref_concat(const float *a, const int64_t as[4], const float *b, const int64_t bs[4], int d, float *y);

#endif
