/* `vklora lm generate --prompts FILE`: many prompts in one process, each
 * line with its own set of LoRA adapters. FILE is JSONL:
 *   {"prompt": "text", "lora": ["ADAPTER_DIR[:W]", ...]}   ("lora" optional)
 * Every adapter is read once (the first line that names it) and kept; a
 * line's adapters are combined into a run-time set for that line only, so
 * the model is never reloaded. Each line prints one JSON object (as --json,
 * plus "line" and "lora"). */
#ifndef VKL_LM_PROMPTS_H
#define VKL_LM_PROMPTS_H

#include "llama/llama_generate.h"
#include "lm_gen_args.h"
#include "lm_tok.h"

int vkl_app_lm_prompts(vkl_llama *m, const vkl_app_lm_tok *tok, const char *file, const vkl_app_lm_gen_args *ga,
                       int max_new, vkl_err *e);

#endif
