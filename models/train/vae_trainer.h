/* `vklora train-vae`: a whole SD-architecture VAE (diffusers AutoencoderKL)
 * trained from an image folder, from random weights (a config.json) or from
 * an existing VAE folder. Images are read once, resized (area) and
 * centre-cropped to size x size, and kept in memory; every batch comes from
 * the dataset iterator (train/dataset.h: order and horizontal flips from the
 * seed), and the posterior noise of step k from its own Philox stream
 * (seed, k), so a resumed run repeats the uninterrupted one bit for bit.
 *
 * OUT_DIR receives a diffusers VAE folder (config.json +
 * diffusion_pytorch_model.safetensors) with scaling_factor = 1 / std of the
 * posterior means of every image (unflipped), measured when it is written;
 * train_log.csv (step, loss, rec, kl, lr, seconds); and state/ for --resume
 * (state/step-NNNNNN/ with the f32 weights, AdamW moments and state.json;
 * state/latest names the newest complete one). */
#ifndef VKL_VAE_TRAINER_H
#define VKL_VAE_TRAINER_H

#include "train/vae_train_step.h"

#include <signal.h>

typedef struct vkl_vae_train_config {
    const char *images;      /* --images DIR */
    const char *init;        /* --init VAE_DIR (diffusers VAE folder), or */
    const char *config;      /* --config config.json: random weights of that architecture */
    const char *output;      /* -o OUT_DIR */
    int size;                /* square training size (32) */
    int batch;               /* 16 */
    int steps;               /* total optimiser steps (1000) */
    float lr;                /* AdamW rate (1e-3), constant after warmup */
    int warmup;              /* linear warm-up steps (0) */
    float weight_decay;      /* AdamW's decoupled decay (0) */
    float max_grad_norm;     /* clipping by global norm (1; <= 0: none) */
    vkl_vae_loss_kind loss;  /* l1 */
    float kl_weight;         /* 1e-6 */
    uint64_t seed;           /* 0 */
    int save_every;          /* 0: only at the end (and on Ctrl-C) */
    int resume;              /* continue from OUT_DIR/state */
    int force;               /* start over in an existing OUT_DIR */
    int interrupt_at;        /* tests: stop after this step as Ctrl-C would (0: off) */
    vkl_dtype dtype;         /* of the written weights: f32 (default) or f16 */
} vkl_vae_train_config;

void vkl_vae_train_config_default(vkl_vae_train_config *c);

typedef struct vkl_vae_train_report {
    int step, first_step, total;
    vkl_vae_losses losses;
    float lr, grad_norm;
    int skipped;
    double seconds;          /* this session's */
    int save_due;            /* a --save-every step: vkl_vae_trainer_checkpoint saves the VAE folder too */
} vkl_vae_train_report;
typedef void (*vkl_vae_train_progress_fn)(void *user, const vkl_vae_train_report *r);

typedef struct vkl_vae_train_result {
    int steps;               /* optimiser steps done in all */
    int images;              /* images in the set */
    double psnr;             /* of decoder(mean) against the images, dB, over the whole set at the end */
    float scaling_factor;    /* written into config.json */
    double seconds_per_step; /* this session's mean */
} vkl_vae_train_result;

/* Asks vkl_vae_train_run to stop after the current step with the state
 * saved; async-signal-safe (a SIGINT handler may call it). */
void vkl_vae_train_request_stop(void);

/* The run in parts, for a caller that drives the loop itself (serve's jobs,
 * a test); vkl_vae_train_run is this loop:
 *
 *     vkl_vae_trainer_open(ctx, &cfg, &t, &e);
 *     while (step < total && !stop) {
 *         vkl_vae_trainer_step(t, &r, &e);             (its row in train_log.csv)
 *         if (r.save_due) vkl_vae_trainer_checkpoint(t, &e);
 *     }
 *     stop ? vkl_vae_trainer_checkpoint(t, &e) : vkl_vae_trainer_finish(t, &result, &e);
 *     vkl_vae_trainer_close(t);
 *
 * Every call returns 0 or -1 with e set. The trainer reads cfg (not copied)
 * until it is closed. One thread at a time per trainer. */
typedef struct vkl_vae_trainer vkl_vae_trainer;
/* Checks the settings and the output folder, loads or makes the VAE, reads
 * the images, builds the optimiser and the step, restores cfg->resume's
 * state and opens the log. */
int vkl_vae_trainer_open(vkl_ctx *ctx, const vkl_vae_train_config *cfg, vkl_vae_trainer **t, vkl_err *e);
/* Optimiser steps done (a resumed run starts at its state's) and to do. */
void vkl_vae_trainer_position(const vkl_vae_trainer *t, int *step, int *total);
/* One optimiser step and its row in train_log.csv; *r describes it. Fails
 * past the last step, and after 10 non-finite steps in a row. */
int vkl_vae_trainer_step(vkl_vae_trainer *t, vkl_vae_train_report *r, vkl_err *e);
/* Saves the state of the current step (state/, what --resume reads), and on
 * a --save-every step the VAE folder too. Once per step: a second call saves nothing. */
int vkl_vae_trainer_checkpoint(vkl_vae_trainer *t, vkl_err *e);
/* After the last step: the state and the VAE folder (measured: result's
 * psnr and scaling_factor); result may be NULL. */
int vkl_vae_trainer_finish(vkl_vae_trainer *t, vkl_vae_train_result *result, vkl_err *e);
/* OUT_DIR/state: the folder --resume reads. */
const char *vkl_vae_trainer_state_dir(const vkl_vae_trainer *t);
/* Frees everything (NULL: nothing); unsaved steps are lost. */
void vkl_vae_trainer_close(vkl_vae_trainer *t);

/* The loop above; stops after the current step when
 * vkl_vae_train_request_stop was called or after step cfg->interrupt_at.
 * Returns 0 when done, 1 when interrupted (state saved, e names it), -1 on
 * error. result may be NULL. */
int vkl_vae_train_run(vkl_ctx *ctx, const vkl_vae_train_config *c, vkl_vae_train_progress_fn progress, void *user,
                      vkl_vae_train_result *result, vkl_err *e);

/* Measures the scaling factor and the reconstruction PSNR of a VAE over n
 * images [n, 3, size, size] (CHW, [-1, 1]) in batches of `batch` (the last
 * one padded): scaling factor = 1 / std of every posterior-mean element;
 * PSNR = 10 log10(1 / MSE) with images and reconstructions (clipped) mapped to
 * [0, 1] and the MSE over every pixel and channel of the set. */
int vkl_vae_measure(vkl_ctx *ctx, const vkl_vae *vae, const float *images, int n, int size, int batch,
                    float *scaling_factor, double *psnr, vkl_err *e);

#endif
