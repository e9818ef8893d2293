/* `vklora train`: a LoRA for a Stable Diffusion model from an image folder,
 * as kohya's sd-scripts train one. Latents are encoded once (cached), the
 * UNet gets trainable adapters, and the text encoder is frozen (its states
 * computed per batch outside the training graph) unless train_te gives it
 * adapters too (then it runs inside the graph, with gradients). Every
 * micro-batch draws noise and timesteps from the seed and its number only,
 * so a resumed run repeats the uninterrupted one exactly.
 *
 * Gradient accumulation (grad_accum = N > 1) follows accelerate: each
 * micro-batch's loss counts 1/N, the gradients are summed on the device, and
 * the optimiser steps once per N micro-batches; step counts, the learning-rate
 * schedule, --max-steps, --save-every and the loss log (mean of the N
 * micro-batch losses) are in optimiser steps. A cycle may span an epoch
 * boundary (accelerate closes it early there). States are saved, and Ctrl-C
 * stops, only at cycle ends, so a state never holds a partial sum; it records
 * N and a resume with another N is refused. */
#ifndef VKL_SD_TRAINER_H
#define VKL_SD_TRAINER_H

#include "dist.h"
#include "lora/lora_file.h"
#include "sd/sd_model.h"
#include "train/dataset.h"


#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_train_config {
    const char *model, *output, *tokenizer;
    const char *model_config; /* original yaml of a single-file model (NULL: <name>.yaml beside it) */
    vkl_dataset_opts data;
    int resolution_given;     /* data.resolution was set by name; if not, SDXL trains at 1024 (kohya's SDXL default) */
    int rank;
    float alpha;
    int network_conv;         /* LoCon: also the resnet 3x3 convolutions */
    vkl_lora_kind network_kind; /* LoRA (and LoCon), LoHa, LoKr or DoRA modules */
    int dylora;               /* LoRA modules trained as DyLoRA (lora/lora_dylora.h) in blocks of dylora_unit ranks */
    int dylora_unit;
    int lokr_factor;          /* LoKr factorization factor (-1: most balanced) */
    int train_ff;             /* also feed-forward and proj_in/proj_out */
    int train_te;             /* also the text encoder's q/k/v/out_proj and fc1/fc2 (lora_te_ names) */
    float lr;
    float te_lr;              /* text encoder's rate (kohya text_encoder_lr); < 0: lr */
    int grad_accum;           /* micro-batches per optimiser step (1: none) */
    float loraplus_ratio;     /* >1: the zero-initialised factors learn this much faster (LoRA+):
                               * lora_up, hada_w2_a, lokr_w2 / lokr_w2_b (DoRA: lora_up) */
    const char *lr_schedule;  /* constant, linear, cosine, cosine_with_restarts */
    int warmup, cycles;
    float weight_decay, max_grad_norm;
    int optim_bits;           /* AdamW's moment state: 32 (adamw) or 8 (adamw8bit, bitsandbytes' AdamW8bit) */
    int max_steps, epochs;    /* max_steps wins when both are set; neither: one epoch */
    float min_snr_gamma;      /* 0: off */
    float noise_offset;
    int checkpointing;
    int cache_to_disk;        /* keep latents beside the images (<stem>.vklora-latents.safetensors) */
    int cache_te_to_disk;     /* SDXL: keep caption states beside the images (<stem>.vklora-text.safetensors) */
    int clip_skip;
    int save_every, keep_last;
    const char *sample_prompts;
    int sample_every, sample_steps;
    const char *resume;       /* state folder of an interrupted run */
    int force;                /* replace an existing output, its log and state folder */
    /* tests: stop after this step as Ctrl-C would (interrupt_at), or kill the
     * process with SIGKILL after logging it (kill_at), between saves; 0: off */
    int interrupt_at, kill_at;
    int quiet;
    vkl_dtype weight_dtype;
    /* --mixed-precision fp16 (kohya's flag): f16 activations in the UNet and
     * dynamic loss scaling (runtime/loss_scale.h) where the device has fp16
     * arithmetic; f32 elsewhere (said once). 0: no. */
    int mixed_precision;
    /* --network full: every UNet weight (and the text encoder's with
     * --train-te) trained in f32; the output is a diffusers folder (-o DIR)
     * from the diffusers folder --model, written as save_dtype, with the
     * weights' moving average (ema_decay > 0) instead of the weights. */
    int full;
    float ema_decay;
    vkl_dtype save_dtype;
    /* the copies of string values set by name (vkl_train_config_set); a
     * config copied by value shares them: free one copy only */
    struct vkl_train_strings *strings;
    /* Data parallelism (runtime/dist.h; NULL or size 1: one process). Each
     * optimiser step takes size x grad_accum micro-batches of the one global
     * sample order (rank r the r-th group of grad_accum), the gradients are
     * summed across ranks before clipping and the step, so every rank takes
     * the same step, as one process with grad_accum x size would. Rank 0
     * alone writes files; a resume needs the same size x grad_accum. Not a
     * setting: it is not written to or read from the settings file. */
    vkl_dist *dist;
} vkl_train_config;

void vkl_train_config_default(vkl_train_config *c);
/* Frees the strings vkl_train_config_set / _read copied. */
void vkl_train_config_free(vkl_train_config *c);
/* Sets a field from a name as the command line spells it without dashes
 * ("rank", "lr", "max-steps", "shuffle-caption", ...). */
int vkl_train_config_set(vkl_train_config *c, const char *key, const char *value, vkl_err *e);
/* "adamw" or "adamw8bit" (as --optimizer spells them). */
const char *vkl_train_optimizer_name(const vkl_train_config *c);
/* The settings as JSON (what the run writes beside its output), values as
 * given; paths relative to json_path's folder (NULL: absolute). malloc'd. */
char *vkl_train_config_json(const vkl_train_config *c, const char *json_path);
/* Reads settings from a JSON object or TOML-style `key = value` lines (the
 * names of vkl_train_config_set, `_` read as `-`); relative paths count from
 * the file's folder, so the JSON a run writes reproduces it from anywhere. */
int vkl_train_config_read(vkl_train_config *c, const char *path, vkl_err *e);

/* What a step did (the row of the loss log) and what its end calls for. */
typedef struct vkl_train_report {
    int step, total, epoch;   /* step: optimiser steps done (1 after the first) */
    float loss, loss_avg, lr, grad_norm;
    int skipped;              /* the update was skipped (a non-finite gradient) */
    double seconds;           /* training time so far, earlier runs of a resumed one included */
    uint64_t device_bytes;
    int save_due;             /* a --save-every step: vkl_trainer_checkpoint now */
    int sample_due;           /* a --sample-every step: vkl_trainer_sample now */
} vkl_train_report;
typedef void (*vkl_train_progress_fn)(void *user, const vkl_train_report *r);

/* Asks vkl_train_run (every run in the process) to stop at the end of the
 * step in flight, with the state saved. Async-signal-safe: it only sets a
 * volatile sig_atomic_t, so a SIGINT or SIGTERM handler may call it. The
 * request stays until vkl_train_stop_clear(). */
void vkl_train_request_stop(void);
/* Nonzero once a stop was requested and not cleared since. */
int vkl_train_stop_requested(void);
/* Withdraws a stop request, before starting another run. */
void vkl_train_stop_clear(void);

/* The training loop in parts, for a program that drives it a step at a time
 * (serve's training jobs: other work runs between steps, a stop request
 * ends the job at a step's end). vkl_train_run is this loop:
 *
 *     vkl_trainer_open(ctx, &cfg, &t, &e);            (0, or 2: a finished state, nothing to do)
 *     while (step < total && !stop) {
 *         vkl_trainer_step(t, &r, &e);
 *         if (r.save_due) vkl_trainer_checkpoint(t, &e);
 *         if (r.sample_due) vkl_trainer_sample(t, &e);
 *     }
 *     stop ? vkl_trainer_checkpoint(t, &e) : vkl_trainer_finish(t, &e);
 *     vkl_trainer_close(t);
 *
 * Every call returns 0 or -1 with e set. The trainer reads cfg's strings
 * (not copied) until it is closed. One thread at a time per trainer. */
typedef struct vkl_trainer vkl_trainer;

/* Checks the settings, refuses to replace an earlier run (unless force),
 * loads the model, opens the data (encoding latents not cached yet), builds
 * the network and optimiser, restores cfg->resume's state, writes the
 * settings file and opens the loss log. Returns 0 (*t set), 2 when resuming
 * a finished state whose output exists (*t NULL, nothing written), -1. */
int vkl_trainer_open(vkl_ctx *ctx, const vkl_train_config *cfg, vkl_trainer **t, vkl_err *e);
/* Optimiser steps done (a resumed run starts at its state's) and to do. */
void vkl_trainer_position(const vkl_trainer *t, int *step, int *total);
/* One optimiser step (grad_accum micro-batches, on every rank), its row in
 * the loss log; *r describes it. Fails past the last step, and after 10
 * non-finite steps in a row. */
int vkl_trainer_step(vkl_trainer *t, vkl_train_report *r, vkl_err *e);
/* Saves the state of the current step (NAME.state/, what --resume reads),
 * and on a --save-every step the adapter NAME-stepNNNNNN.safetensors too
 * (the --keep-last newest kept). Once per step: a second call saves nothing.
 * Rank 0 writes; other ranks return 0. */
int vkl_trainer_checkpoint(vkl_trainer *t, vkl_err *e);
/* Renders cfg->sample_prompts with the network as trained so far into NAME.samples/. */
int vkl_trainer_sample(vkl_trainer *t, vkl_err *e);
/* After the last step: the state and the output (adapter, or model folder). */
int vkl_trainer_finish(vkl_trainer *t, vkl_err *e);
/* NAME.state: the folder to --resume from. */
const char *vkl_trainer_state_dir(const vkl_trainer *t);
/* Frees everything (NULL: nothing); unsaved steps are lost. */
void vkl_trainer_close(vkl_trainer *t);

/* Runs the training (the loop above; stops when vkl_train_request_stop was called,
 * or after step cfg->interrupt_at); returns 0 when done, 1 when interrupted (state saved),
 * 2 when resumed from a finished state whose output exists (nothing written),
 * -1 on error. Without resume it refuses to replace an earlier run's output,
 * log or state folder unless force (which removes that state folder). Writes output (kohya LoRA with ss_* metadata), its
 * settings (<output>.json), the loss log (<output>.csv) and the state folder
 * (<output>.state/) for --resume. */
int vkl_train_run(vkl_ctx *ctx, const vkl_train_config *c, vkl_train_progress_fn progress, void *user, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
