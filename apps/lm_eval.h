/* Held-out evaluation for `vklora lm train`: the model with its adapters
 * (run-time LoRA set, DoRA or IA3, as being trained) over samples of
 * vkl_app_lm_data, one row at a time through one planned graph: the
 * token-weighted mean cross-entropy of the labelled tokens (as the training
 * loss) and its exponential, the perplexity. */
#ifndef VKL_LM_EVAL_H
#define VKL_LM_EVAL_H

#include "lm_data.h"
#include "llama/llama.h"

typedef struct vkl_app_lm_eval vkl_app_lm_eval;

int vkl_app_lm_eval_new(const vkl_llama *m, const vkl_lora_set *set, const vkl_llama_dora *dora,
                        const vkl_llama_ia3 *ia3, int L, vkl_app_lm_eval **out, vkl_err *e);
/* The same with AdaLoRA modules being trained (llama_adalora.h; may be NULL). */
int vkl_app_lm_eval_new_ada(const vkl_llama *m, const vkl_lora_set *set, const vkl_llama_dora *dora,
                            const vkl_llama_ia3 *ia3, const struct vkl_llama_adalora *ada, int L,
                            vkl_app_lm_eval **out, vkl_err *e);
int vkl_app_lm_eval_run(vkl_app_lm_eval *ev, const vkl_app_lm_data *d, double *loss, long long *tokens, vkl_err *e);
void vkl_app_lm_eval_free(vkl_app_lm_eval *ev);

#endif
