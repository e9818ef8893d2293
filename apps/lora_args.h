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

/* An adapter weight as given on the command line or in a prompt: a finite
 * number of at most 1e6 in magnitude, the whole string. 0 or -1. */
int vkl_app_parse_weight(const char *s, float *w);
/* Splits "PATH[:W1[:W2]]" (at most maxw trailing weights, in order into w,
 * their count into *nw). The trailing parts are weights unless the whole
 * spec exists as a path (paths may hold ':'); a part that is not a finite
 * number is refused, naming it, when the path before it exists. Whether the
 * path exists is the caller's to report. */
int vkl_app_lora_spec(const char *spec, char *path, size_t size, float *w, int maxw, int *nw, vkl_err *e);

#endif
