/* The AdaLoRA options of `lm train` (lm_adalora_args.h). */
#include "lm_adalora_args.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int bad(const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "vklora lm train: %s %s: %s\n", opt, v, want);
    return 2;
}

static int int_in(const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        char want[96];
        snprintf(want, sizeof want, "expected an integer in [%ld, %ld]", lo, hi);
        return bad(opt, v, want);
    }
    *out = (int)x;
    return 0;
}

/* A number in (lo, hi) (open interval). */
static int real_in(const char *opt, const char *v, double lo, double hi, float *out)
{
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x) || !(x > lo && x < hi)) {
        char want[96];
        snprintf(want, sizeof want, "expected a number above %g and below %g", lo, hi);
        return bad(opt, v, want);
    }
    *out = (float)x;
    return 0;
}

int vkl_app_adalora_option(const char *opt, const char *v, vkl_adalora_config *c, int *given, int *rc)
{
    if (!strcmp(opt, "--init-r")) *rc = int_in(opt, v, 1, 4096, &c->init_r);
    else if (!strcmp(opt, "--target-r")) *rc = int_in(opt, v, 0, 4096, &c->target_r);
    else if (!strcmp(opt, "--tinit")) *rc = int_in(opt, v, 0, 100000000, &c->tinit);
    else if (!strcmp(opt, "--tfinal")) *rc = int_in(opt, v, 0, 100000000, &c->tfinal);
    else if (!strcmp(opt, "--delta-t")) *rc = int_in(opt, v, 1, 100000000, &c->delta_t);
    else if (!strcmp(opt, "--orth-reg-weight")) *rc = real_in(opt, v, 0, INFINITY, &c->orth_reg_weight);
    else if (!strcmp(opt, "--beta1")) *rc = real_in(opt, v, 0, 1, &c->beta1);
    else if (!strcmp(opt, "--beta2")) *rc = real_in(opt, v, 0, 1, &c->beta2);
    else if (!strcmp(opt, "--total-step")) *rc = int_in(opt, v, 1, 100000000, &c->total_step);
    else return 0;
    *given = 1;
    return 1;
}

void vkl_app_adalora_usage(FILE *f)
{
    fprintf(f,
            "AdaLoRA (--network adalora, PEFT AdaLoraConfig; defaults PEFT's): [--init-r 12] [--target-r 8] [--tinit 0]\n"
            "         [--tfinal 0] [--delta-t 1] [--orth-reg-weight 0.5] [--beta1 0.85] [--beta2 0.85]\n"
            "         [--total-step N (default: the run's length)]; --alpha is lora_alpha (default 8).\n"
            "Ranks start at init-r per module, the total\n"
            "budget falls cubically to target-r per module between step tinit and total - tfinal, the least\n"
            "important ranks (smoothed |p x grad| scores) masked every delta-t steps; the adapter is saved cut\n"
            "to the kept ranks with rank_pattern in adapter_config.json. The loss column is the cross-entropy\n"
            "(the regulariser is added to what is minimised). --resume needs the same AdaLoRA options and\n"
            "total step (give --total-step to stop early and extend the run later). --format gguf also writes\n"
            "the LoRA it reads as (down = A * E) for llama.cpp.\n");
}

char *vkl_app_adalora_options(const char *options, const vkl_adalora_config *c)
{
    cJSON *j = cJSON_Parse(options), *a = cJSON_CreateObject();
    if (!j || !a) {
        cJSON_Delete(j);
        cJSON_Delete(a);
        return NULL;
    }
    cJSON_AddNumberToObject(a, "init_r", c->init_r);
    cJSON_AddNumberToObject(a, "target_r", c->target_r);
    cJSON_AddNumberToObject(a, "tinit", c->tinit);
    cJSON_AddNumberToObject(a, "tfinal", c->tfinal);
    cJSON_AddNumberToObject(a, "deltaT", c->delta_t);
    cJSON_AddNumberToObject(a, "total_step", c->total_step);
    cJSON_AddNumberToObject(a, "beta1", c->beta1);
    cJSON_AddNumberToObject(a, "beta2", c->beta2);
    cJSON_AddNumberToObject(a, "orth_reg_weight", c->orth_reg_weight);
    cJSON_AddNumberToObject(a, "lora_alpha", c->lora_alpha);
    /* first, so that a message quoting the start of the options shows it */
    cJSON *out = cJSON_CreateObject();
    if (!out) {
        cJSON_Delete(j);
        cJSON_Delete(a);
        return NULL;
    }
    cJSON_AddItemToObject(out, "adalora", a);
    while (j->child) {
        cJSON *x = cJSON_DetachItemViaPointer(j, j->child);
        cJSON_AddItemToObject(out, x->string, x);
    }
    cJSON_Delete(j);
    char *s = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return s;
}
