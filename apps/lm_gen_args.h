/* The generation options of `vklora lm generate`: sampling (lm_sample.h),
 * stop strings and JSON output, as entries of the command's option table. */
#ifndef VKL_LM_GEN_ARGS_H
#define VKL_LM_GEN_ARGS_H

#include "args.h"
#include "llama/lm_sample.h"
#include "vkl.h"

#define VKL_LM_MAX_STOPS 16
#define VKL_APP_LM_GEN_NARGS 8 /* the options vkl_app_lm_gen_table writes */

typedef struct vkl_app_lm_gen_args {
    vkl_lm_sampling s;
    int temperature_given, seed_given;
    const char *stop_v[VKL_LM_MAX_STOPS];
    vkl_arg_list stops; /* --stop, repeatable: the strings in stop_v */
    int json;
} vkl_app_lm_gen_args;

/* Defaults; g must not be moved after this (stops points into it). */
void vkl_app_lm_gen_args_default(vkl_app_lm_gen_args *g);
/* Writes the entries of these options (--temperature, --top-k, --top-p,
 * --min-p, --repeat-penalty, --seed, --stop, --json) for a command's option
 * table (apps/args.h) to t[0 .. VKL_APP_LM_GEN_NARGS), reading into g. */
void vkl_app_lm_gen_table(vkl_app_lm_gen_args *g, vkl_arg *t);
/* After parsing: a filter without --temperature samples at temperature 1;
 * without --seed the seed comes from the clock (and is reported). */
void vkl_app_lm_gen_args_finish(vkl_app_lm_gen_args *g);

/* The dtype the model folder's config.json stores its weights in
 * (torch_dtype float16 / bfloat16; anything else, or no folder: f32), which
 * `lm generate` keeps on the device unless --weights says otherwise; for a
 * GGUF file VKL_LLAMA_AS_STORED (its blocks stay as they are). */
vkl_dtype vkl_app_lm_model_dtype(const char *model);

#endif
