#include "tuning.h"
#include "ops.h"
#include "vkl_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vkl_tuning_init(vkl_tuning *t, const vkl_caps *caps)
{
    memset(t, 0, sizeof *t);
    t->cpu = caps->type == VKL_DEV_CPU;
    t->loop_budget = t->cpu ? 30000 : 0;
    t->matmul = t->cpu ? VKL_MM_REG : VKL_MM_TILED;
    /* lavapipe runs 8 invocations per SIMD chunk; big register tiles keep
     * loads per flop few */
    t->mm_wg = 8;
    t->mm_tm = 8;
    t->mm_tn = 16;
    t->attn_grad = VKL_ATTN_GRAD_AUTO;
    t->seg_block = t->cpu ? 4096 : 1024;
    const char *v = getenv("VKLORA_MATMUL_VARIANT");
    if (v && !strcmp(v, "tiled")) t->matmul = VKL_MM_TILED;
    else if (v && !strcmp(v, "scalar")) t->matmul = VKL_MM_SCALAR;
    else if (v && !strcmp(v, "reg")) t->matmul = VKL_MM_REG;
    unsigned a, b, d;
    if ((v = getenv("VKLORA_MATMUL_TILE")) && sscanf(v, "%u,%u,%u", &a, &b, &d) == 3 && a >= 1 && a <= 256 && b >= 1 &&
        b <= 16 && d >= 4 && d <= 32 && d % 4 == 0) {
        t->mm_wg = a;
        t->mm_tm = b;
        t->mm_tn = d;
    }
    if ((v = getenv("VKLORA_ATTN_GRAD"))) {
        if (!strcmp(v, "flash")) t->attn_grad = VKL_ATTN_GRAD_FLASH;
        else if (!strcmp(v, "unfused")) t->attn_grad = VKL_ATTN_GRAD_UNFUSED;
    }
    if ((v = getenv("VKLORA_TRAIN_PROFILE"))) t->train_profile = atoi(v) > 0 ? atoi(v) : 1;
}

const vkl_tuning *vkl_ctx_tuning(const vkl_ctx *c) { return &c->tuning; }
vkl_tuning *vkl_ctx_tuning_edit(vkl_ctx *c) { return &c->tuning; }
