/* The resumable state of `vklora lm train` (--save-every, --resume): in a
 * folder, state.safetensors (each trained tensor by its PEFT key and its
 * AdamW state as "<key>.adam.<m|v|codes|absmax>"), state.json (the step, the
 * sample order and position, the shuffle generator, and the options that
 * must not change) and train_log.csv as far as the step. Written to a
 * temporary folder, then renamed over the last one. */
#ifndef VKL_LM_TRAIN_STATE_H
#define VKL_LM_TRAIN_STATE_H

#include "llama/llama_train.h"

#include <stdint.h>
#include <stdio.h>

typedef struct vkl_app_lm_state {
    int step, epoch, pos, n; /* n: samples; order[n] */
    /* How the global batch was split: ranks x grad_accum micro-batches per
     * step. A resume may split it otherwise (a 2-rank state on one process
     * with twice the --grad-accum) but must keep the product. */
    int ranks, grad_accum;
    uint64_t rng;
    int *order;
    /* One more host array kept with the tensors as "extra" (AdaLoRA's
     * rank-allocator state), loaded back into the same buffer with its
     * length checked; NULL: none. */
    float *extra;
    size_t n_extra;
} vkl_app_lm_state;

/* options: a JSON object text the resume must find again unchanged. */
int vkl_app_lm_state_save(const char *dir, vkl_ctx *c, vkl_llama_train *tr, const vkl_app_lm_state *s,
                          const char *options, const char *log_path, vkl_err *e);
/* Restores tensors and optimiser state into tr and fills s (order[s->n]
 * must have room; s->ranks and s->grad_accum are this run's, checked against
 * the saved split); the saved log's rows up to the step are written to log. */
int vkl_app_lm_state_load(const char *dir, vkl_ctx *c, vkl_llama_train *tr, vkl_app_lm_state *s, const char *options,
                          FILE *log, vkl_err *e);

#endif
