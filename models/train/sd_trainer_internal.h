/* Internals shared by the SD trainer's files (not installed): the trainer
 * object, and the files it writes and reads (sd_trainer_files.c: the adapter
 * with kohya's metadata, the state folder for --resume, sample images). */
#ifndef VKL_SD_TRAINER_INTERNAL_H
#define VKL_SD_TRAINER_INTERNAL_H

#include "grad_accum.h"
#include "loss_scale.h"
#include "optim.h"
#include "sd/schedule.h"
#include "lora/lora_dylora.h"
#include "train/full_network.h"
#include "train/sd_train_step.h"
#include "train/sd_trainer.h"
#include "train/sdxl_train_cond.h"

#include <cjson/cJSON.h>
#include <stdio.h>

/* The trainer object (vkl_trainer): the model, network, optimiser and data,
 * and the loop's position (step, data order, log, running average), so the
 * loop can be driven a step at a time. */
typedef struct vkl_trainer {
    vkl_ctx *ctx;
    const vkl_train_config *c; /* &cfg */
    vkl_train_config cfg;      /* the caller's settings (strings shared), SDXL's default resolution applied */
    vkl_sd_model *m;
    vkl_dataset *ds;
    vkl_latent_cache *cache;
    vkl_lora lora;
    vkl_lora_set *set;
    vkl_tensor **params;
    int np;
    vkl_adamw *opt;
    vkl_grad_accum *accum;  /* grad_accum > 1: gradients summed over micro-batches */
    vkl_graph *update;      /* and the optimiser step on the sums */
    int fp16;               /* mixed precision in force: f16 activations, loss scaling */
    vkl_loss_scaler scaler; /* with fp16: the loss scale S and its good-step count */
    vkl_tensor *seed;       /* with fp16: f32 [1] holding S, the loss gradient seed */
    vkl_noise_table table;
    struct { int w, h; vkl_sd_train_step *s; } steps[32];
    int nsteps;
    char base_hash[80], model_name[256];
    int xl;                           /* SDXL: two text encoders, added conditioning */
    vkl_sdxl_text_cache *text_cache;  /* SDXL: encoded captions */
    vkl_sdxl_text_disk *text_disk;    /* SDXL, --cache-text-embeddings-to-disk: their entries beside the images */
    vkl_full_net net;       /* --network full: the weights are the parameters */
    vkl_dylora *dy;         /* --network dylora: the per-step rank draw */
    cJSON *changes;         /* settings changed on resume: [{step, setting, was, now}] */
    double elapsed;         /* training seconds so far, earlier runs of a resumed one included */
    int epochs_done;        /* whole passes over the data finished */
    /* the loop */
    int root, P, R, N, G;   /* rank 0?, ranks, this rank, micro-batches per step (this rank's, all ranks') */
    char stem[1100], state_dir[1120], csv_path[1200];
    vkl_lr_schedule sched;
    vkl_ds_iter it;
    FILE *csv;              /* the loss log (rank 0) */
    int step, total;        /* optimiser steps done, and to do */
    int saved_step;         /* the step whose state was saved last (-1: none by this object) */
    int steps_run;          /* steps taken by this object */
    uint32_t epoch;
    double t0, seconds0;    /* clock at step 0 (earlier runs' time subtracted); training seconds before this run */
    double avg;             /* the reported running loss average, over navg steps */
    int navg, skipped_run;  /* skipped_run: non-finite steps in a row */
    /* one micro-batch's host buffers */
    float *x0, *noise, *noisy, *target, *text, *tt, *wts, *pooled, *tids; /* pooled, tids: SDXL's added conditioning */
    int32_t *ids;
    char **caps;
    char **img_paths;       /* the micro-batch's image files (SDXL's text cache entries) */
} trainer;

/* Processes sharing every optimiser step (1 without a communicator). */
static inline int vkl_sd_trainer_ranks(const vkl_train_config *c) { return vkl_dist_active(c->dist) ? c->dist->size : 1; }

/* Output path without its .safetensors extension, for the files written beside it. */
void vkl_sd_trainer_stem(const char *output, char *stem, size_t n);
/* What a run produces: the adapter, or (full training) the model folder with
 * the trained parts (their weights' average when there is one). */
int vkl_sd_trainer_save_output(trainer *t, const char *path, int step, int epoch, vkl_err *e);
/* The state of step `step` (adapter or the full network's weights,
 * optimiser moments, data position, settings) as base/step-NNNNNN, whole or
 * not at all (vkl_train_state_commit). */
int vkl_sd_trainer_save_state(trainer *t, const char *base, int step, int epoch, const vkl_ds_iter *it, vkl_err *e);
/* Restores base's latest state into an opened trainer (network, moments,
 * loss scale, data position it); *step its step. Refuses a state of
 * another run (settings that define it, network, optimiser, micro-batches
 * per step). */
int vkl_sd_trainer_load_state(trainer *t, const char *base, int *step, vkl_ds_iter *it, vkl_err *e);
/* cfg->sample_prompts, one image per line, into NAME.samples/stepNNNNNN-I.png. */
int vkl_sd_trainer_render_samples(trainer *t, int step, vkl_err *e);

#endif
