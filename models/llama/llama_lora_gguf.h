/* LLaMA LoRA adapters as GGUF files in llama.cpp's adapter layout
 * (llama_lora_gguf.c): general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha, `<GGUF weight name>.lora_a` / `.lora_b`. */
#ifndef VKL_LLAMA_LORA_GGUF_H
#define VKL_LLAMA_LORA_GGUF_H

#include "llama/llama.h"
#include "lora/lora_file.h"

/* Plain LoRA modules with internal names (model.layers.N.self_attn.q_proj,
 * ...) of a model with config c; modules whose alpha / rank differs from the
 * first one's have the ratio folded into B, so every module keeps its scale. */
int vkl_llama_lora_save_gguf(const vkl_llama_config *c, const vkl_lora *l, const char *path, vkl_err *e);
/* The adapter as modules with internal names, each checked against the
 * model's shapes; scale alpha / rank as llama.cpp applies it. */
int vkl_llama_lora_load_gguf(const char *path, const vkl_llama_config *c, vkl_lora *out, vkl_err *e);

#endif
