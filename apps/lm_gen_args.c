#include "lm_gen_args.h"
#include "llama/llama.h"
#include "llama/llama_gguf.h"
#include "io/text.h"


#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void vkl_app_lm_gen_args_default(vkl_app_lm_gen_args *g)
{
    memset(g, 0, sizeof *g);
    vkl_lm_sampling_default(&g->s);
    g->stops = (vkl_arg_list){g->stop_v, VKL_LM_MAX_STOPS, 0};
}

/* --temperature and --seed are read as their typed entries read them, and
 * marked: a filter alone samples at temperature 1, a seed not given is drawn. */
static int read_temperature(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_app_lm_gen_args *g = dest;
    const vkl_arg o = {opt, NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&g->s.temperature), .lo = 0, .hi = 100};
    if (vkl_args_value(cmd, &o, v)) return 1;
    g->temperature_given = 1;
    return 0;
}

static int read_seed(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_app_lm_gen_args *g = dest;
    unsigned long long seed;
    const vkl_arg o = {opt, NULL, VKL_ARG_U64, VKL_AS_U64(&seed), .help = NULL};
    if (vkl_args_value(cmd, &o, v)) return 1;
    g->s.seed = seed;
    g->seed_given = 1;
    return 0;
}

void vkl_app_lm_gen_table(vkl_app_lm_gen_args *g, vkl_arg *t)
{
    const vkl_arg own[VKL_APP_LM_GEN_NARGS] = {
        {"--temperature", NULL, VKL_ARG_CALL, g, .call = read_temperature},
        {"--top-k", NULL, VKL_ARG_INT, VKL_AS_INT(&g->s.top_k), .lo = 0, .hi = 1 << 30},
        {"--top-p", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&g->s.top_p), .lo = 0, .hi = 1, .lo_open = 1},
        {"--min-p", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&g->s.min_p), .lo = 0, .hi = 1},
        {"--repeat-penalty", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&g->s.repeat_penalty), .lo = 0, .hi = 100, .lo_open = 1},
        {"--seed", NULL, VKL_ARG_CALL, g, .call = read_seed},
        {"--stop", NULL, VKL_ARG_LIST, VKL_AS_LIST(&g->stops), .help = NULL},
        {"--json", NULL, VKL_ARG_FLAG, VKL_AS_INT(&g->json), .help = NULL},
    };
    memcpy(t, own, sizeof own);
}

void vkl_app_lm_gen_args_finish(vkl_app_lm_gen_args *g)
{
    int filter = g->s.top_k > 0 || g->s.top_p < 1 || g->s.min_p > 0;
    if (filter && !g->temperature_given) g->s.temperature = 1;
    if (!g->seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        g->s.seed = ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    }
}

vkl_dtype vkl_app_lm_model_dtype(const char *model)
{
    char path[4200], *text = NULL;
    if (vkl_llama_is_gguf(model)) return VKL_LLAMA_AS_STORED;
    snprintf(path, sizeof path, "%s/config.json", model);
    if (vkl_read_text_file(path, 1 << 20, &text, NULL, NULL)) return VKL_F32;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "torch_dtype");
    vkl_dtype dt = VKL_F32;
    if (cJSON_IsString(d) && !strcmp(d->valuestring, "float16")) dt = VKL_F16;
    if (cJSON_IsString(d) && !strcmp(d->valuestring, "bfloat16")) dt = VKL_BF16;
    cJSON_Delete(j);
    return dt;
}
