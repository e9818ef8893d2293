/* Adapters folded into a model's weights on the device (merged mode): the
 * fastest steps, no multiplier changes afterwards. Every kind is folded with
 * the meaning it has at run time (lora_apply.h): DoRA modules first, on the
 * original weights (W' = W + m * DoRA delta), then every additive module
 * (W += m * delta W). Plain LoRA / LoCon deltas are formed on the device from
 * the factors (vkl_lora_merge); Tucker LoCon, LoHa, LoKr and DoRA deltas are
 * computed on the host in double (lora_delta.h) and added as f32
 * (vkl_delta_merge). IA3 modules come last: the weight (with every other
 * adapter folded in) times 1 + m (l - 1) on its rows or columns. */
#ifndef VKL_LORA_MERGE_WEIGHTS_H
#define VKL_LORA_MERGE_WEIGHTS_H

#include "lora/lora_apply.h"

/* Every module of every adapter must be resolved; w holds "<module>.weight".
 * Errors name the adapter module; weights already changed stay changed. */
int vkl_lora_merge_weights(vkl_ctx *c, vkl_weights *w, const vkl_lora_use *uses, int n, vkl_err *e);

#endif
