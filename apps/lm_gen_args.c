#include "lm_gen_args.h"
#include "llama/llama.h"
#include "llama/llama_gguf.h"
#include "io/text.h"


#include <cjson/cJSON.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void vkl_app_lm_gen_args_default(vkl_app_lm_gen_args *g)
{
    memset(g, 0, sizeof *g);
    vkl_lm_sampling_default(&g->s);
}

/* A finite number in [lo, hi] (open at lo when lo_open), the whole string. */
static int number(const char *opt, const char *v, double lo, int lo_open, double hi, float *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < lo || (lo_open && x == lo) || x > hi) {
        fprintf(stderr, "vklora lm generate: %s %s is not a number in %s%g, %g]\n", opt, v, lo_open ? "(" : "[", lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
}

int vkl_app_lm_gen_arg(int argc, char **argv, int *i, vkl_app_lm_gen_args *g)
{
    const char *a = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(a, "--json")) {
        g->json = 1;
        return 1;
    }
    static const char *const valued[] = {"--temperature", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--seed",
                                          "--stop"};
    int which = -1;
    for (int k = 0; k < 7; k++)
        if (!strcmp(a, valued[k])) which = k;
    if (which < 0 || !v) return 0;
    (*i)++;
    float f;
    char *end;
    switch (which) {
    case 0:
        if (number(a, v, 0, 0, 100, &g->s.temperature)) return -1;
        g->temperature_given = 1;
        return 1;
    case 1: {
        errno = 0;
        long k = strtol(v, &end, 10);
        if (!*v || *end || errno || k < 0 || k > 1 << 30) {
            fprintf(stderr, "vklora lm generate: --top-k %s is not a count (0 = off)\n", v);
            return -1;
        }
        g->s.top_k = (int)k;
        g->filter_given |= k > 0;
        return 1;
    }
    case 2:
        if (number(a, v, 0, 1, 1, &g->s.top_p)) return -1;
        g->filter_given |= g->s.top_p < 1;
        return 1;
    case 3:
        if (number(a, v, 0, 0, 1, &g->s.min_p)) return -1;
        g->filter_given |= g->s.min_p > 0;
        return 1;
    case 4:
        if (number(a, v, 0, 1, 100, &f)) return -1;
        g->s.repeat_penalty = f;
        return 1;
    case 5: {
        errno = 0;
        unsigned long long s = strtoull(v, &end, 10);
        if (!*v || *end || errno || v[0] == '-') {
            fprintf(stderr, "vklora lm generate: --seed %s is not a whole number >= 0\n", v);
            return -1;
        }
        g->s.seed = s;
        g->seed_given = 1;
        return 1;
    }
    default:
        if (!*v) {
            fprintf(stderr, "vklora lm generate: --stop needs a non-empty string\n");
            return -1;
        }
        if (g->n_stops == VKL_LM_MAX_STOPS) {
            fprintf(stderr, "vklora lm generate: at most %d --stop strings\n", VKL_LM_MAX_STOPS);
            return -1;
        }
        g->stops[g->n_stops++] = argv[*i];
        return 1;
    }
}

void vkl_app_lm_gen_args_finish(vkl_app_lm_gen_args *g)
{
    if (g->filter_given && !g->temperature_given) g->s.temperature = 1;
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
