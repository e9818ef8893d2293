/* The training of `vklora lm train`: a run opened (lm_train_open.c), its
 * steps, states and held-out scores, and the adapter written at the end
 * (lm_train_run.c). */
#ifndef VKL_APP_LM_TRAIN_RUN_H
#define VKL_APP_LM_TRAIN_RUN_H

#include "lm_train_args.h"


/* A SIGINT / SIGTERM (stop_signal.h) on any rank stops every rank before
 * the same next step, and nothing is written. */

/* Trains as a says, the outputs written into the folder tmp (rank 0):
 * 0, 2 (a finished run resumed with its output written: nothing to do) or
 * -1 (e set). */
int vkl_app_lm_train_run(const vkl_app_lm_train_args *a, const char *tmp, vkl_err *e);

#endif
