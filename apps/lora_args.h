/* Shared by `vklora convert`, `merge` and `lm generate`: reading an adapter
 * with the optional model for names, writing one in a chosen format, and
 * the --lora PATH[:W] option. */
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

/* --lora PATH[:W], once per adapter: the paths and weights (1 where none is
 * given) in order, at most max (<= VKL_APP_LORA_LIST_MAX). */
#define VKL_APP_LORA_LIST_MAX 64
typedef struct vkl_app_lora_list {
    char path[VKL_APP_LORA_LIST_MAX][4096];
    float w[VKL_APP_LORA_LIST_MAX];
    int max, n;
} vkl_app_lora_list;
/* The reader of such an option for option tables (apps/args.h,
 * VKL_ARG_CALL; dest: a vkl_app_lora_list): the spec split and its weight
 * checked, whether the path exists left to the command. */
int vkl_app_arg_lora(const char *cmd, const char *opt, const char *v, void *dest);

#endif
