/* `lm train --network adalora`: the AdaLoRA options (PEFT AdaLoraConfig's
 * fields, PEFT's defaults) parsed into a vkl_adalora_config. */
#ifndef VKL_LM_ADALORA_ARGS_H
#define VKL_LM_ADALORA_ARGS_H

#include "lora/lora_adalora.h"

#include <stdio.h>

/* 1 when opt is an AdaLoRA option (its value v consumed; *rc = 2 after
 * printing the reason when v is not valid), 0 when it is not one. */
int vkl_app_adalora_option(const char *opt, const char *v, vkl_adalora_config *c, int *given, int *rc);
/* The options' lines of `lm train --help`. */
void vkl_app_adalora_usage(FILE *f);
/* The JSON object text of a run's options (what a resume must find again)
 * with the AdaLoRA config in effect added as "adalora" (total_step
 * included); malloc'd, NULL when out of memory. */
char *vkl_app_adalora_options(const char *options, const vkl_adalora_config *c);

#endif
