/* A new LoRA / DoRA adapter for a LLaMA, initialised as PEFT's LoraConfig
 * does (init_lora_weights=True): lora_A kaiming-uniform(a=sqrt(5)), i.e.
 * U(-1/sqrt(in), 1/sqrt(in)), lora_B zero, so training starts at the base
 * model; DoRA's magnitude is the row norm of the base weight. */
#ifndef VKL_LLAMA_LORA_INIT_H
#define VKL_LLAMA_LORA_INIT_H

#include "llama/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_llama_lora_opts {
    const char *const *targets; /* module suffixes ("q_proj", "mlp.down_proj"); NULL: PEFT's LLaMA default q_proj, v_proj */
    int nt;
    int rank;
    float alpha;
    int rslora; /* scale alpha / sqrt(rank) instead of alpha / rank */
    int dora;   /* add the magnitude (needs the model's weights on the device) */
    uint64_t seed;
} vkl_llama_lora_opts;

/* One module per projection of every layer whose name ends with "." + a
 * target; modules carry internal names (model.layers.N.self_attn.q_proj),
 * ready for vkl_lora_set_build_ex / vkl_llama_dora_build and vkl_lora_save_peft. */
int vkl_llama_lora_init(const vkl_llama *m, const vkl_llama_lora_opts *o, vkl_lora *out, vkl_err *e);

/* Checks that every module of an adapter read from a file (what: its name
 * for messages) is a projection of this model with the weight's shape; an
 * adapter for another model (an SD one, another size) is refused instead of
 * silently doing nothing. */
int vkl_llama_lora_check(const vkl_llama *m, const vkl_lora *l, const char *what, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
