/* Ops: each appends a node to a graph and returns its output tensor (NULL on
 * error, with the error recorded in the graph). Outputs are new f32 tensors
 * unless said otherwise. For each op: shader in shaders/, CPU reference in
 * runtime/ref/, builder in runtime/ops/, test in tests/runtime/. */
#ifndef VKL_OPS_H
#define VKL_OPS_H

#include "vkl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Elementwise with numpy broadcasting (shapes aligned at the last dim).
 * Inputs f32, f16 or bf16, any strides. */
vkl_tensor *vkl_add(vkl_graph *g, vkl_tensor *a, vkl_tensor *b);
vkl_tensor *vkl_sub(vkl_graph *g, vkl_tensor *a, vkl_tensor *b);
vkl_tensor *vkl_mul(vkl_graph *g, vkl_tensor *a, vkl_tensor *b);
vkl_tensor *vkl_div(vkl_graph *g, vkl_tensor *a, vkl_tensor *b);

typedef enum vkl_unary_op {
    VKL_UNARY_IDENTITY = 0, /* alpha*x + beta */
    VKL_UNARY_SILU = 1,
    VKL_UNARY_GELU = 2,       /* exact: x * Phi(x), with erf */
    VKL_UNARY_GELU_TANH = 3,
    VKL_UNARY_QUICK_GELU = 4, /* x * sigmoid(1.702 x) (CLIP) */
    VKL_UNARY_RELU = 5,
    VKL_UNARY_EXP = 6,
    VKL_UNARY_SQUARE = 7,
    VKL_UNARY_SIGMOID = 8,
    VKL_UNARY_SQRT = 9,
    VKL_UNARY_TANH = 10,
    VKL_UNARY_COUNT
} vkl_unary_op;
const char *vkl_unary_name(vkl_unary_op op);

/* y = f(alpha * x + beta). */
vkl_tensor *vkl_unary(vkl_graph *g, vkl_tensor *x, vkl_unary_op op, float alpha, float beta);
vkl_tensor *vkl_scale(vkl_graph *g, vkl_tensor *x, float s);
vkl_tensor *vkl_silu(vkl_graph *g, vkl_tensor *x);
vkl_tensor *vkl_gelu(vkl_graph *g, vkl_tensor *x);
vkl_tensor *vkl_gelu_tanh(vkl_graph *g, vkl_tensor *x);
vkl_tensor *vkl_quick_gelu(vkl_graph *g, vkl_tensor *x);

/* Reductions over the last dimension: output shape has last dim 1. */
vkl_tensor *vkl_sum_rows(vkl_graph *g, vkl_tensor *x);
vkl_tensor *vkl_max_rows(vkl_graph *g, vkl_tensor *x);

/* Conversion between f32, f16 and bf16 (round to nearest even). Contiguous output. */
vkl_tensor *vkl_convert(vkl_graph *g, vkl_tensor *x, vkl_dtype to);

/* Batched matrix product: a [..., M, K], b [..., K, N] (any strides, so a
 * transposed operand is a vkl_permute view), batch dims broadcast; stored as
 * f32, f16 or bf16; f32 result [..., M, N]; optional bias [N] added. */
vkl_tensor *vkl_matmul(vkl_graph *g, vkl_tensor *a, vkl_tensor *b);
vkl_tensor *vkl_matmul_bias(vkl_graph *g, vkl_tensor *a, vkl_tensor *b, vkl_tensor *bias);
/* y = x W^T + b for a linear layer's weight W [out, in]; x [..., in]. */
vkl_tensor *vkl_linear(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias);

/* ---- declared for the op library (issue: forward ops); implemented in
 * runtime/ops/<op>.c with shaders/<op>.comp and runtime/ref/ref_<op>.c. ----
 * Activations are NCHW f32 unless said otherwise. Weights may be f32, f16 or bf16. */

/* Copies any strided view into a new contiguous f32 tensor (or dtype of x). */
vkl_tensor *vkl_contiguous(vkl_graph *g, vkl_tensor *x);

/* 2-D convolution. x [N,C,H,W]; w [O,C,kh,kw]; bias [O] or NULL. Padding per
 * side (the SD VAE encoder pads only right/bottom before a stride-2 conv). */
typedef struct vkl_conv2d_params {
    int stride_h, stride_w;
    int pad_top, pad_bottom, pad_left, pad_right;
} vkl_conv2d_params;
vkl_tensor *vkl_conv2d(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, int stride, int pad);
vkl_tensor *vkl_conv2d_ex(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, const vkl_conv2d_params *p);

/* Group norm over x [N,C,...] with `groups` groups (C % groups == 0),
 * gamma/beta [C] (may be NULL), optionally followed by SiLU. */
vkl_tensor *vkl_group_norm(vkl_graph *g, vkl_tensor *x, int groups, float eps, vkl_tensor *gamma, vkl_tensor *beta,
                           int silu);
/* Layer norm / RMS norm over the last dimension; gamma/beta may be NULL. */
vkl_tensor *vkl_layer_norm(vkl_graph *g, vkl_tensor *x, vkl_tensor *gamma, vkl_tensor *beta, float eps);
vkl_tensor *vkl_rms_norm(vkl_graph *g, vkl_tensor *x, vkl_tensor *gamma, float eps);
/* Softmax over the last dimension of scale * x. */
vkl_tensor *vkl_softmax(vkl_graph *g, vkl_tensor *x, float scale);

/* Scaled dot-product attention, flash-style (the Lq x Lk matrix is never
 * stored whole). q [B,H,Lq,D], k and v [B,H,Lk,D] (any strides, so the
 * [B,L,H*D] token layout is a permuted view); result [B,H,Lq,D] f32.
 * causal: query i sees keys j <= i + (Lk - Lq). */
vkl_tensor *vkl_attention(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, float scale, int causal);
/* Head dimensions above this (the SD VAE's one 512-wide head) run unfused,
 * as matmul, softmax, matmul: the [B,H,Lq,Lk] scores are stored (twice, with
 * the probabilities), so memory grows with Lq x Lk. Not for causal attention. */
#define VKL_ATTN_MAX_FUSED_D 256
/* Which kernel runs attention: AUTO picks from the device's caps (streaming
 * from storage buffers on CPU devices, shared-memory K/V tiles on GPUs);
 * tests and benchmarks force one to run every path on any device. */
typedef enum vkl_attn_variant { VKL_ATTN_AUTO = 0, VKL_ATTN_STREAM = 1, VKL_ATTN_TILED = 2 } vkl_attn_variant;
vkl_tensor *vkl_attention_ex(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, float scale, int causal,
                             vkl_attn_variant variant);
/* The variant `want` resolves to on this device for head dimension d, and
 * its launch shape (for benchmarks): workgroup size, query rows per
 * invocation, keys per unrolled block, keys per shared-memory tile. */
vkl_attn_variant vkl_attention_pick(const vkl_ctx *c, int64_t d, vkl_attn_variant want, uint32_t *wg, uint32_t *tq,
                                    uint32_t *kb, uint32_t *kt);
/* The gradients of attention(q, k, v, scale, causal) for dy, the gradient of
 * its output o (o may be NULL: recomputed), as attention's backward rule
 * appends them: grad[0..2] get dq, dk, dv (f32, possibly strided views) where
 * need[i] is set, NULL elsewhere. FLASH: kernels with memory linear in
 * Lq + Lk (head dimensions up to VKL_ATTN_MAX_FUSED_D); UNFUSED: the scores
 * and probabilities stored as [B,H,Lq,Lk] tensors; AUTO: flash where it
 * applies, except on CPU devices at head dimensions of 64 and more with
 * scores of at most 64 MiB, where unfused is faster (lavapipe); the
 * environment variable VKLORA_ATTN_GRAD = flash | unfused | auto forces
 * AUTO's choice (tests). Returns 0, or -1 with the graph's error set. */
typedef enum vkl_attn_grad_path {
    VKL_ATTN_GRAD_AUTO = 0,
    VKL_ATTN_GRAD_FLASH = 1,
    VKL_ATTN_GRAD_UNFUSED = 2
} vkl_attn_grad_path;
int vkl_attention_backward(vkl_graph *g, vkl_tensor *q, vkl_tensor *k, vkl_tensor *v, vkl_tensor *o, vkl_tensor *dy,
                           float scale, int causal, const int need[3], vkl_tensor *grad[3], vkl_attn_grad_path path);

/* x [..., 2F] -> x[..., :F] * gelu(x[..., F:]) (diffusers GEGLU, exact gelu). */
vkl_tensor *vkl_geglu(vkl_graph *g, vkl_tensor *x);
/* silu(gate) * up, same shapes (LLaMA MLP). */
vkl_tensor *vkl_swiglu(vkl_graph *g, vkl_tensor *gate, vkl_tensor *up);
/* Nearest-neighbour 2x upsampling of x [N,C,H,W]. */
vkl_tensor *vkl_upsample_nearest2x(vkl_graph *g, vkl_tensor *x);
/* Concatenation along dimension dim (same dtype, other dims equal). */
vkl_tensor *vkl_concat(vkl_graph *g, vkl_tensor *a, vkl_tensor *b, int dim);
/* Sinusoidal timestep embedding as diffusers' get_timestep_embedding:
 * t [N] f32 -> [N, dim]; half = dim/2; freq_k = exp(-ln(max_period) * k / (half - shift));
 * [sin, cos] order, or [cos, sin] when flip_sin_to_cos. */
vkl_tensor *vkl_timestep_embedding(vkl_graph *g, vkl_tensor *t, int dim, int flip_sin_to_cos, float shift,
                                   float max_period);
/* Rows of table [V, D] picked by ids (i32, any shape) -> [..., D] f32; an id
 * outside [0, V) reads zeros (and is counted as an error by the caller's
 * tokenizer checks, never read out of bounds). */
vkl_tensor *vkl_embedding(vkl_graph *g, vkl_tensor *table, vkl_tensor *ids);
/* Rotary position embedding, LLaMA's rotate-half form, on x [B,H,L,D]
 * (any strides; any [..., L, D] works): position of row l is pos0 + l
 * (0 <= pos0 + l <= 2^17); inv_freq_k = theta^(-2k/D) in transformers'
 * float32 steps. */
vkl_tensor *vkl_rope(vkl_graph *g, vkl_tensor *x, int pos0, float theta);
/* Llama 3's rope_scaling (type "llama3"), applied to each inv_freq_k with
 * wavelength w = 2 pi / inv_freq_k: w > old_ctx / low_freq_factor: divided by
 * factor; w < old_ctx / high_freq_factor: kept; in between blended with
 * s = (old_ctx / w - low_freq_factor) / (high_freq_factor - low_freq_factor)
 * as (1 - s) inv_freq / factor + s inv_freq. factor 0: no scaling. */
typedef struct vkl_rope_scaling {
    float factor, low_freq_factor, high_freq_factor, old_ctx;
} vkl_rope_scaling;
/* vkl_rope with the frequencies scaled (s NULL or factor 0: vkl_rope). */
vkl_tensor *vkl_rope_scaled(vkl_graph *g, vkl_tensor *x, int pos0, float theta, const vkl_rope_scaling *s);

/* LoRA-fused linear and convolution:
 *   y = W x + b + sum_i s_i * B_i (A_i x)
 * with every adapter of a layer concatenated along the rank: a_cat [R, in]
 * (or [R, C, kh, kw] for conv), b_cat [out, R] (or [out, R, 1, 1]), and
 * rank_scale [R] f32 holding s_i for each rank row of adapter i (multiplier *
 * alpha / rank). Changing multipliers = uploading rank_scale, no re-plan.
 * W + delta W is never formed. */
vkl_tensor *vkl_linear_lora(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias, vkl_tensor *a_cat,
                            vkl_tensor *b_cat, vkl_tensor *rank_scale);
vkl_tensor *vkl_conv2d_lora(vkl_graph *g, vkl_tensor *x, vkl_tensor *w, vkl_tensor *bias,
                            const vkl_conv2d_params *p, vkl_tensor *a_cat, vkl_tensor *b_cat,
                            vkl_tensor *rank_scale);
/* In place on a persistent weight w (f32 or f16; linear [out,in] or conv
 * [out,in,kh,kw] with down [r,in,kh,kw] / up [out,r,1,1]): w += scale * B A
 * (merge) or w -= scale * B A (unmerge). The delta is rounded to w's own grid
 * where that keeps the result in w's binade, so unmerge restores every such
 * element bit-exactly; an element the merge carried into the next binade
 * comes back within one ulp. */
int vkl_lora_merge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *down, vkl_tensor *up, float scale, vkl_err *e);
int vkl_lora_unmerge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *down, vkl_tensor *up, float scale, vkl_err *e);
/* The same for a full delta W (f32, persistent, contiguous, w's element count,
 * e.g. a LoHa / LoKr / DoRA delta made on the host): w += scale * delta (merge)
 * or w -= scale * delta (unmerge), with the same exact rounding. */
int vkl_delta_merge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *delta, float scale, vkl_err *e);
int vkl_delta_unmerge(vkl_ctx *c, vkl_tensor *w, vkl_tensor *delta, float scale, vkl_err *e);

/* ---- gradient helpers (runtime/ops/grad_ops.c) ---- */
/* A new f32 tensor filled with value. */
vkl_tensor *vkl_fill(vkl_graph *g, int ndim, const int64_t *shape, float value);
/* Sums x down to `shape` (each dim equal to x's or 1, right-aligned like
 * broadcasting): the gradient of a broadcast. */
vkl_tensor *vkl_sum_to(vkl_graph *g, vkl_tensor *x, int ndim, const int64_t *shape);
/* dx of y = f(alpha*x + beta) given dy (same shape as x). */
vkl_tensor *vkl_unary_grad(vkl_graph *g, vkl_tensor *x, vkl_tensor *dy, vkl_unary_op op, float alpha, float beta);

/* ---- losses (runtime/ops/loss.c), composed of differentiable ops ---- */
/* mean over the batch of w_b * mean((pred_b - target_b)^2); pred/target
 * [B, ...]; weights f32 [B] or NULL (all 1). Returns a [1, 1] tensor; if
 * per_sample is not NULL it receives the [B, 1] unweighted per-sample means. */
vkl_tensor *vkl_mse_loss(vkl_graph *g, vkl_tensor *pred, vkl_tensor *target, vkl_tensor *weights,
                         vkl_tensor **per_sample);

/* The tile shape the matmul uses on this device (for benchmarks/tests). */
void vkl_matmul_tile(const vkl_ctx *c, uint32_t *wg, uint32_t *tm, uint32_t *tn);


/* ---- copy into persistent memory (runtime/ops/copy.c) ----
 * Copies src (any strides, f32/f16/bf16) into dst, a contiguous f32 view of a
 * persistent tensor (e.g. one position of a KV cache), as a node of g: later
 * nodes of g see the new values. Returns dst. To autograd the copy is a
 * detach: what later nodes read from dst is a constant. */
vkl_tensor *vkl_copy_into(vkl_graph *g, vkl_tensor *src, vkl_tensor *dst);
/* dst = beta * dst + alpha * src in place on a contiguous f32 window of
 * persistent memory, as a node of g (gradient accumulation over
 * micro-batches). src may be NULL (then dst = beta * dst). A zero alpha or
 * beta drops its term without reading it, so beta = 0 clears a buffer even
 * when it holds NaN. A detach to autograd, like vkl_copy_into. Returns dst. */
vkl_tensor *vkl_accumulate_into(vkl_graph *g, vkl_tensor *src, vkl_tensor *dst, float alpha, float beta);


/* ---- cross-entropy (runtime/ops/cross_entropy.c) ----
 * Mean over valid rows of logsumexp(x_r) - x_r[t_r] for logits [..., V] (rows
 * = the leading dims) and i32 targets with one entry per row. A row is valid
 * when its target lies in [0, V) and is not ignore_index (e.g. -100); with no
 * valid row the result is 0/0 = NaN, as in torch. Returns [1, 1]. Backward:
 * d logits = dy / #valid * (softmax - one-hot) on valid rows, 0 elsewhere.
 * Causal-LM shifting (logits[:, t] predicts labels[:, t+1]) is the caller's. */
vkl_tensor *vkl_cross_entropy(vkl_graph *g, vkl_tensor *logits, vkl_tensor *targets, int ignore_index);

#ifdef __cplusplus
}
#endif

#endif
