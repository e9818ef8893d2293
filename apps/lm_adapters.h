/* The run-time form of a set of PEFT adapters of a LLaMA at their weights,
 * as `vklora lm generate --lora` and `vklora serve`'s text API apply them:
 * IA3 adapters become the IA3 vectors (they wrap whatever else a layer
 * runs: 1 + W (l - 1)), a DoRA adapter its DoRA modules (W scales the
 * low-rank product; the magnitude stays), the rest (LoRA, AdaLoRA read as
 * LoRA) one LoRA set. A DoRA adapter runs alone next to IA3 ones: its
 * row norms take the base weight plus its own product only. */
#ifndef VKL_LM_ADAPTERS_H
#define VKL_LM_ADAPTERS_H

#include "llama/llama.h"
#include "lora/lora_apply.h"

typedef enum { VKL_APP_LM_LORA, VKL_APP_LM_DORA, VKL_APP_LM_IA3 } vkl_app_lm_kind;

/* IA3 when its first module is one, DoRA when any module is, else LoRA. */
vkl_app_lm_kind vkl_app_lm_adapter_kind(const vkl_lora *l);
const char *vkl_app_lm_kind_name(vkl_app_lm_kind k);

typedef struct vkl_app_lm_adapters {
    vkl_lora_set *set;
    vkl_llama_dora *dora;
    vkl_llama_ia3 *ia3;
} vkl_app_lm_adapters;

/* Builds uses[0..n) (unet_mult is the weight); fails naming the rule when a
 * DoRA adapter comes with another LoRA or DoRA adapter. */
int vkl_app_lm_adapters_build(const vkl_llama *m, const vkl_lora_use *uses, int n, vkl_app_lm_adapters *out,
                              vkl_err *e);
void vkl_app_lm_adapters_free(vkl_app_lm_adapters *a);

#endif
