/* delta W of an adapter module on the CPU, in double: the reference for the
 * GPU paths and what merge/convert use.
 *
 *   LoRA / LoCon: scale * up.flatten(1) @ down.flatten(1), reshaped to W
 *                 (Tucker LoCon: W[o,i,k,l] = sum_rs up[o,r] mid[r,s,k,l] down[s,i]).
 *   LoHa:  scale * (w1a @ w1b) * (w2a @ w2b) elementwise (Tucker: each factor
 *          is einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a)).
 *   LoKr:  scale * kron(w1, w2), w1 = lokr_w1 or w1_a @ w1_b, w2 likewise (or
 *          Tucker with lokr_t2); a 4-D w2 gives kron over (out, in) with
 *          w2's kernel; LyCORIS's flat [b, d*kh*kw] w2 yields the same data.
 *   DoRA (magnitude present, any kind): with V = W + D (D as above)
 *          W' = mag / ||V|| * V, the norm taken per output row (over in and the
 *          kernel) when mag has out elements ([out] PEFT, [out,1..] LyCORIS
 *          wd_on_out), per input column (over out and the kernel) when mag is
 *          [1,in,..] (LyCORIS wd_on_out=False); delta = W' - W. No epsilon is
 *          added to the norm (PEFT adds none; LyCORIS adds float eps, a
 *          relative difference below 1e-7 for any real weight).
 * The user multiplier is not included; for DoRA it scales delta linearly.
 * IA3 modules are refused: they multiply the weight instead (merged by
 * lora_merge_weights.h / sd_bake.h as a last, multiplicative pass). */
#ifndef VKL_LORA_DELTA_H
#define VKL_LORA_DELTA_H

#include "lora/lora_file.h"

/* out: vkl_lora_wnelem(m) doubles, row-major in m->wshape. base: the frozen
 * weight in the same layout (f32), needed only for DoRA (may be NULL otherwise). */
int vkl_lora_delta(const vkl_lora_module *m, const float *base, double *out, vkl_err *e);
/* Undoes only the scale: the raw factor product (DoRA: without magnitude). */
int vkl_lora_product(const vkl_lora_module *m, double *out, vkl_err *e);

#endif
