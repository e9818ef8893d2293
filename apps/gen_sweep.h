/* generate --lora-sweep FILE:W1,W2,...: one image per weight, same seed, one
 * labelled grid. The model is loaded once; only the adapter's per-rank
 * scales change between images. */
#ifndef VKL_APP_GEN_SWEEP_H
#define VKL_APP_GEN_SWEEP_H

#include "gen_lora.h"
#include "sd/pipeline.h"

/* "W1,W2,...": up to 64 finite weights into w (may be NULL), their count into *n (may be NULL). */
int vkl_app_sweep_list(const char *weights, float *w, int *n, vkl_err *e);
/* Renders o at each weight of adapter idx of gl (o->progress_user: the
 * vkl_progress bar each image restarts) and writes the grid to out (PNG,
 * with the prompt, adapter, weights and seed as its "parameters"). */
int vkl_app_sweep(vkl_sd_model *m, vkl_gen_lora *gl, int idx, const char *weights, vkl_gen_opts *o, const char *out,
                  int quiet, vkl_err *e);

#endif
