/* What the parts of lm train's run share (lm_train_open.c, lm_train_run.c). */
#ifndef VKL_APP_LM_TRAIN_INTERNAL_H
#define VKL_APP_LM_TRAIN_INTERNAL_H

#include "dist_app.h"
#include "lm_data.h"
#include "lm_eval.h"
#include "lm_tok.h"
#include "lm_train_args.h"
#include "lm_train_state.h"
#include "progress.h"

#include "llama/llama_adalora.h"
#include "llama/llama_train.h"
#include "lora/lora_dylora.h"

#include <stdio.h>

typedef struct vkl_app_lm_run {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    vkl_app_lm_data data, val;
    vkl_app_lm_eval *ev;
    FILE *elog;
    char *opts; /* the options a resume must find again */
    vkl_lora l;
    vkl_lora_set *set;
    vkl_llama_dora *dora;
    vkl_llama_ia3 *ia3;
    vkl_llama_adalora *ada;
    vkl_adalora_alloc *alloc;
    float *ada_state; /* the allocator's state for --save-every / --resume */
    vkl_llama_train *tr;
    vkl_dylora *dy;
    int32_t *ids, *labels;
    int *attn, *order;
    FILE *log;
    /* the loop: the ranks, the length, the data's order and position (a
     * resumed run's from its state), the paths of the logs and the state */
    vkl_dist *dist;
    int P, R, GB, total, start, epoch, pos;
    uint64_t rng;
    double t0;
    char log_path[4200], eval_path[4200], statedir[4200];
    vkl_app_lm_state ls;
    vkl_progress bar;
} vkl_app_lm_run;

/* Opens the run: the model, the data, the adapter, the trainer, the logs,
 * the --resume state and the held-out score before training. 0, 2 (a
 * finished run resumed with its output written: nothing to do) or -1. */
int vkl_app_lm_run_open(const vkl_app_lm_train_args *a, const char *tmp, vkl_app_lm_run *r, vkl_err *e);
/* Frees what was opened (all of r may be zero). */
void vkl_app_lm_run_free(vkl_app_lm_run *r);
/* The held-out loss after step (0: before training) into eval_log.csv. */
int vkl_app_lm_evaluate(const vkl_app_lm_train_args *a, vkl_app_lm_run *r, int step, vkl_err *e);

#endif
