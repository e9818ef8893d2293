/* Shared by `vklora convert` and `vklora merge`: reading an adapter with the
 * optional model for names, and writing one in a chosen format. */
#ifndef VKL_LORA_ARGS_H
#define VKL_LORA_ARGS_H

#include "lora/lora_file.h"

/* Loads path; with model (may be NULL) names are resolved against it. */
int vkl_app_lora_load(const char *path, const vkl_lora_targets *targets, const char *config, vkl_lora *l);
/* to: "kohya" or "peft". PEFT writes adapter_config.json in out's folder,
 * refusing to replace one unless force. Messages go to the log. */
int vkl_app_lora_save(const vkl_lora *l, const char *to, const char *out, int force);

#endif
