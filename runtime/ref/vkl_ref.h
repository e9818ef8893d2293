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
/* ---- quantised weights (ref_quant.c): W [N, K] as NF4 packed codes and
 * absmax (runtime/quant.h); x [M, K], dy [M, N] contiguous.
 * y = x W^T [M, N]; dx = dy W [M, K]. */
void vkl_ref_linear_nf4(const float *x, const uint8_t *packed, const float *absmax, float *y, int64_t M, int64_t N,
                        int64_t K);
void vkl_ref_linear_nf4_grad_input(const float *dy, const uint8_t *packed, const float *absmax, float *dx, int64_t M,
                                   int64_t N, int64_t K);

/* ---- norm (ref_norm.c): x contiguous, double-precision statistics. */
/* x [N, C, S] in `groups` groups; gamma/beta [C] or NULL; silu applied last. */
void vkl_ref_group_norm(const float *x, int64_t N, int64_t C, int64_t S, int groups, double eps, const float *gamma,
                        const float *beta, int silu, float *y);
/* Rows of length D; gamma/beta [D] or NULL. */
void vkl_ref_layer_norm(const float *x, int64_t rows, int64_t D, const float *gamma, const float *beta, double eps,
                        float *y);
void vkl_ref_rms_norm(const float *x, int64_t rows, int64_t D, const float *gamma, double eps, float *y);
/* softmax(scale * x) over rows of length D. */
void vkl_ref_softmax(const float *x, int64_t rows, int64_t D, double scale, float *y);

/* ---- glu (ref_glu.c) */
/* x [rows, 2F] contiguous -> y [rows, F] = x[:, :F] * gelu_erf(x[:, F:]). */
void vkl_ref_geglu(const float *x, int64_t rows, int64_t F, float *y);
/* y = silu(gate) * up, n elements. */
void vkl_ref_swiglu(const float *gate, const float *up, int64_t n, float *y);

/* ---- embeddings (ref_embed.c) */
/* diffusers get_timestep_embedding, in float32 steps as torch computes it: t [N] -> y [N, dim]. */
void vkl_ref_timestep_embedding(const float *t, int64_t N, int dim, int flip_sin_to_cos, float shift,
                                float max_period, float *y);
/* y [n, D] = rows of table [V, D] picked by ids; ids outside [0, V) give zeros. */
void vkl_ref_embedding(const float *table, int64_t V, int64_t D, const int32_t *ids, int64_t n, float *y);
/* ---- rotary position embedding (ref_rope.c) */
/* inv_freq [D/2] as transformers computes it in float32: 1 / theta^(2k/D). */
void vkl_ref_rope_inv_freq(int64_t D, float theta, float *inv_freq);
/* Rotate-half RoPE on x [rows, L, D] contiguous with cos/sin tables [P, D]
 * (row p for position p, as transformers' cat(freqs, freqs)); position of
 * row l is pos0 + l. */
void vkl_ref_rope_tables(const float *x, int64_t rows, int64_t L, int64_t D, int64_t pos0, const float *cos_t,
                         const float *sin_t, float *y);
/* Fills cos/sin tables [P, D] from inv_freq in float32 angles (pos * inv_freq
 * rounded to float, as torch's matmul of float32 operands). */
void vkl_ref_rope_make_tables(int64_t P, int64_t D, const float *inv_freq, float *cos_t, float *sin_t);
/* Rotate-half RoPE on x [rows, L, D] with angles (pos0 + l) * theta^(-2k/D) in
 * double; inverse rotates by the negative angles, which is the backward (dx =
 * vkl_ref_rope_f64(dy, ..., 1)). */
void vkl_ref_rope_f64(const double *x, int64_t rows, int64_t L, int64_t D, int64_t pos0, double theta, int inverse,
                      double *y);
/* ---- lora (ref_lora.c) */
/* y [T, out] = x [T, in] . w^T + bias + sum_r rank_scale[r] (x . a_cat[r]) b_cat[:, r];
 * w [out, in], a_cat [R, in], b_cat [out, R], all contiguous. */
void vkl_ref_linear_lora(const float *x, int64_t T, int64_t in, const float *w, int64_t out, const float *bias,
                         const float *a_cat, const float *b_cat, const float *rank_scale, int64_t R, float *y);
/* delta [out, fan] = scale * up [out, r] . down [r, fan]. */
void vkl_ref_lora_delta(const float *up, const float *down, int64_t out, int64_t r, int64_t fan, float scale,
                        float *delta);

/* ---- norm backward (ref_norm_grad.c): double in, double out, x contiguous.
 * Forwards in double (for finite differences) and exact backwards: dx, and
 * dgamma/dbeta (each may be NULL) summed over every use of the parameter. */
void vkl_ref_group_norm_f64(const double *x, int64_t N, int64_t C, int64_t S, int groups, double eps,
                            const double *gamma, const double *beta, int silu, double *y);
void vkl_ref_group_norm_backward(const double *x, int64_t N, int64_t C, int64_t S, int groups, double eps,
                                 const double *gamma, const double *beta, int silu, const double *dy, double *dx,
                                 double *dgamma, double *dbeta);
/* mode 0 layer norm (fparam eps, gamma, beta), 1 RMS norm (eps, gamma), 2
 * softmax of fparam * x; rows of length D. */
void vkl_ref_row_norm_f64(int mode, const double *x, int64_t rows, int64_t D, const double *gamma,
                          const double *beta, double fparam, double *y);
void vkl_ref_row_norm_backward(int mode, const double *x, int64_t rows, int64_t D, const double *gamma,
                               const double *beta, double fparam, const double *dy, double *dx, double *dgamma,
                               double *dbeta);

/* ---- glu and embedding backward (ref_glu.c, ref_embed.c): double in, double out. */
void vkl_ref_geglu_f64(const double *x, int64_t rows, int64_t F, double *y);
/* dx [rows, 2F] from dy [rows, F]. */
void vkl_ref_geglu_backward(const double *x, int64_t rows, int64_t F, const double *dy, double *dx);
void vkl_ref_swiglu_f64(const double *gate, const double *up, int64_t n, double *y);
/* dgate / dup may be NULL. */
void vkl_ref_swiglu_backward(const double *gate, const double *up, int64_t n, const double *dy, double *dgate,
                             double *dup);
/* dtable [V, D] = scatter-add of dy [n, D] rows by ids (ids outside [0, V) ignored). */
void vkl_ref_embedding_backward(const int32_t *ids, int64_t n, int64_t V, int64_t D, const double *dy, double *dtable);
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

/* ---- conv2d and upsample backward (ref_conv2d.c, ref_layout.c): double in,
 * double out, contiguous x [N, C, H, W], w [O, C, kh, kw], dy [N, O, Ho, Wo]. */
void vkl_ref_conv2d_f64(const double *x, const int64_t xs[4], const double *w, int64_t O, int64_t kh, int64_t kw,
                        const double *bias, int sh, int sw, int pt, int pb, int pl, int pr, double *y);
/* dx, dw, dbias: each may be NULL. */
void vkl_ref_conv2d_backward(const double *x, const int64_t xs[4], const double *w, int64_t O, int64_t kh,
                             int64_t kw, int sh, int sw, int pt, int pb, int pl, int pr, const double *dy, double *dx,
                             double *dw, double *dbias);
/* dx [N, C, H, W] = sums of the 2x2 blocks of dy [N, C, 2H, 2W]. */
void vkl_ref_upsample_nearest2x_backward(const double *dy, int64_t N, int64_t C, int64_t H, int64_t W, double *dx);

/* ---- cross_entropy (ref_cross_entropy.c): x [rows, V] contiguous, one i32
 * target per row; rows whose target is outside [0, V) or equals ignore_index
 * are skipped. Returns the mean loss over valid rows; row_loss (may be NULL)
 * gets each row's loss (0 when skipped). */
double vkl_ref_cross_entropy(const float *x, int64_t rows, int64_t V, const int32_t *t, int ignore_index,
                             float *row_loss);
/* dx of (dy * mean loss). */
void vkl_ref_cross_entropy_backward(const float *x, int64_t rows, int64_t V, const int32_t *t, int ignore_index,
                                    double dy, float *dx);
/* ---- attention */
/* out[b][h][i][:] = softmax_j(scale * q_i . k_j) v_j for q [B,H,Lq,D] and
 * k, v [B,H,Lk,D] addressed with element strides (batch, head, row, d);
 * causal: key j visible to query i when j <= i + (Lk - Lq); a row that sees
 * no key gets zeros. out contiguous [B,H,Lq,D]. Naive, double precision. */
/* y = x except y = value where column j > row i + shift, for x [rows/lq, lq, lk]
 * (the masked scores of causal attention). */
void vkl_ref_causal_mask(const float *x, int64_t n, int64_t lq, int64_t lk, int64_t shift, float value, float *y);
void vkl_ref_attention(const float *q, const int64_t sq[4], const float *k, const int64_t sk[4], const float *v,
                       const int64_t sv[4], int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D, double scale,
                       int causal, float *out);

/* ---- optimiser (ref_adamw8.c) */
/* One AdamW step with 8-bit blockwise state in place (layout of runtime/optim.h:
 * codes [blocks][2][256], absmax [blocks][2]) on p [n] with gradient g [n],
 * f32 arithmetic in the shader's order: g is multiplied by clip; lr includes
 * the parameter's multiplier; t is the 1-based step. */
void vkl_ref_adamw8(float *p, const float *g, int64_t n, uint8_t *codes, float *absmax, float lr, float beta1,
                    float beta2, float eps, float wd, float clip, int t);

/* ---- attention backward (ref_attention_grad.c): the gradients of
 * sum(attention(q, k, v) * dy) (operands as vkl_ref_attention; dy contiguous
 * [B,H,Lq,D]) into contiguous dq [B,H,Lq,D], dk and dv [B,H,Lk,D]. Double. */
void vkl_ref_attention_backward(const float *q, const int64_t sq[4], const float *k, const int64_t sk[4],
                                const float *v, const int64_t sv[4], const float *dy, int64_t B, int64_t H, int64_t Lq,
                                int64_t Lk, int64_t D, double scale, int causal, double *dq, double *dk, double *dv);

#endif
