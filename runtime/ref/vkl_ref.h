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

/* ---- attention */
/* out[b][h][i][:] = softmax_j(scale * q_i . k_j) v_j for q [B,H,Lq,D] and
 * k, v [B,H,Lk,D] addressed with element strides (batch, head, row, d);
 * causal: key j visible to query i when j <= i + (Lk - Lq); a row that sees
 * no key gets zeros. out contiguous [B,H,Lq,D]. Naive, double precision. */
void vkl_ref_attention(const float *q, const int64_t sq[4], const float *k, const int64_t sk[4], const float *v,
                       const int64_t sv[4], int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                       int causal, float *out);

#endif
