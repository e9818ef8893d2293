/* What the parts of a VAE training run share: the trainer (vae_trainer.c)
 * and its saved state (vae_trainer_state.c). */
#ifndef VKL_VAE_TRAINER_INTERNAL_H
#define VKL_VAE_TRAINER_INTERNAL_H

#include "train/dataset.h"
#include "train/vae_trainer.h"

#include <stdio.h>

struct vkl_vae_trainer {
    vkl_ctx *ctx;
    const vkl_vae_train_config *c;
    vkl_sd_vae_config cfg;
    vkl_weights *w;
    vkl_vae vae;
    vkl_dataset *ds;
    float *images; /* every image, unflipped, [n, 3, size, size] */
    vkl_tensor **params;
    int np;
    vkl_adamw *opt;
    char state_dir[1100];
    /* the loop */
    vkl_ds_iter it;
    vkl_vae_train_step *s;
    FILE *csv;        /* train_log.csv */
    float *batch, *eps;
    size_t per, neps; /* floats of one image, of one step's noise */
    vkl_lr_schedule sched;
    int step, first;  /* done, and done when this session began */
    int bad_run;      /* non-finite steps in a row */
    int saved_step;   /* of the newest state saved (-1: none this session) */
    double t0, seconds0; /* this session's start; the seconds of the sessions before */
};

/* The trainer's time in all: the sessions before and this one's. */
double vkl_vae_trainer_seconds(const vkl_vae_trainer *t);
/* The state of t->step (weights, moments, position in the data) as
 * state/step-NNNNNN, whole or not at all, state/latest moved once it is. */
int vkl_vae_state_save(vkl_vae_trainer *t, vkl_err *e);
/* The newest state folder's path into dir; -1 (no message) when there is none. */
int vkl_vae_state_latest(const vkl_vae_trainer *t, char *dir, size_t n);
/* t->step, t->seconds0, the data position and the moments from the state in
 * dir, checked to be this run's (image size, batch, seed, loss, tensors). */
int vkl_vae_state_load(vkl_vae_trainer *t, const char *dir, vkl_err *e);

#endif
