/* adapter_config.json of the PEFT adapters the language-model commands
 * write (lm train, lm hyperlora emit), completed after vkl_lora_save_peft. */
#ifndef VKL_PEFT_CONFIG_H
#define VKL_PEFT_CONFIG_H

#include "vkl_base.h"

#include <cjson/cJSON.h>

/* A JSON array of the n strings. */
cJSON *vkl_app_json_strings(const char *const *v, int n);
/* The config at path as PEFT writes it for a causal LM: the base model's
 * path, the task, and target_modules (feedforward_modules for IA3, ff NULL
 * otherwise) as the user named them (suffixes), rather than the expanded
 * per-layer list. */
int vkl_app_peft_finish_config(const char *path, const char *model, const char *const *t, int nt,
                               const char *const *ff, int nf, vkl_err *e);

#endif
