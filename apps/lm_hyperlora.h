/* What `vklora lm hyperlora train` and `emit` share: the tasks file, a
 * description's condition vector, the template adapter and the output checks. */
#ifndef VKL_LM_HYPERLORA_H
#define VKL_LM_HYPERLORA_H

#include "lm_tok.h"
#include "llama/llama.h"

#define VKL_APP_HYPER_MAX_TASKS 64
#define VKL_APP_HYPER_MAX_TARGETS 16

typedef struct vkl_app_hyper_task {
    char *description;
    char *data; /* the data file, relative paths taken from the tasks file's folder */
} vkl_app_hyper_task;

/* TASKS.jsonl: one {"description": TEXT, "data": PATH} per line (blank lines
 * skipped); every description non-empty, every data file present. */
int vkl_app_hyper_tasks_load(const char *path, vkl_app_hyper_task *t, int max, int *n, vkl_err *e);
/* The same with the data under key; folder: it names a folder (image tasks:
 * {"description": TEXT, "images": DIR}), else a file. */
int vkl_app_hyper_tasks_load_ex(const char *path, const char *key, int folder, vkl_app_hyper_task *t, int max, int *n,
                                vkl_err *e);
void vkl_app_hyper_tasks_free(vkl_app_hyper_task *t, int n);

/* The description's condition (llama_condition.h): BOS + its tokens. */
int vkl_app_hyper_condition(const vkl_llama *m, const vkl_app_lm_tok *tok, const char *description, float *cond,
                            vkl_err *e);

/* "q_proj,v_proj" into buf / names (at most VKL_APP_HYPER_MAX_TARGETS); 0 or -1. */
int vkl_app_hyper_split_targets(const char *list, char *buf, size_t cap, const char **names, int *n);

#endif
