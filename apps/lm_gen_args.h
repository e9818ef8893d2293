/* The generation options of `vklora lm generate`: sampling (lm_sample.h),
 * stop strings and JSON output, parsed strictly. */
#ifndef VKL_LM_GEN_ARGS_H
#define VKL_LM_GEN_ARGS_H

#include "llama/lm_sample.h"
#include "vkl.h"

#define VKL_LM_MAX_STOPS 16

typedef struct vkl_app_lm_gen_args {
    vkl_lm_sampling s;
    int temperature_given, filter_given, seed_given;
    char *stops[VKL_LM_MAX_STOPS];
    int n_stops;
    int json;
} vkl_app_lm_gen_args;

void vkl_app_lm_gen_args_default(vkl_app_lm_gen_args *g);
/* Takes argv[*i] (and its value, advancing *i) when it is one of these
 * options: 1; not one: 0; a bad value: -1 with the message on stderr. */
int vkl_app_lm_gen_arg(int argc, char **argv, int *i, vkl_app_lm_gen_args *g);
/* After parsing: a filter without --temperature samples at temperature 1;
 * without --seed the seed comes from the clock (and is reported). */
void vkl_app_lm_gen_args_finish(vkl_app_lm_gen_args *g);

/* The dtype the model folder's config.json stores its weights in
 * (torch_dtype float16 / bfloat16; anything else, or no folder: f32), which
 * `lm generate` keeps on the device unless --weights says otherwise; for a
 * GGUF file VKL_LLAMA_AS_STORED (its blocks stay as they are). */
vkl_dtype vkl_app_lm_model_dtype(const char *model);

#endif
