/* A text's condition vector for HyperLoRA (lora/hyperlora.h): the frozen
 * model's mean final hidden state (after the final RMSNorm) over the text's
 * tokens. The BOS token is run first but left out of the mean: its state is
 * the same for every text. */
#ifndef VKL_LLAMA_CONDITION_H
#define VKL_LLAMA_CONDITION_H

#include "llama/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ids [n]: ids[0] BOS then the text (n >= 2); out [hidden]. */
int vkl_llama_mean_hidden(const vkl_llama *m, const int32_t *ids, int n, float *out, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
