/* What `vklora hyperlora train` (sd_hyperlora_train.c) and `vklora lm
 * hyperlora train` (lm_hyperlora_train.c) share: the training loop of a
 * HyperLoRA network (lora/hyperlora.h) over tasks, with the family's model
 * behind a few callbacks. Each step picks a task (every task once per round,
 * the rounds' orders drawn from --seed), emits its adapter from the task's
 * condition, lets the family run its training step on a batch of the task's
 * data with gradients only, and takes the gradient with respect to the
 * emitted factors back through the network (AdamW on W1, b1, W2, b2). The
 * outputs are written under temporary names and renamed into place; a signal
 * stops the run after its step, leaving nothing behind (exit 130).
 * Also the pieces the two commands' train|emit front ends share. */
#ifndef VKL_HYPERLORA_RUNNER_H
#define VKL_HYPERLORA_RUNNER_H

#include "lm_hyperlora.h"

#include "lora/hyperlora.h"

#include <stdio.h>

typedef struct vkl_app_hyper_run {
    /* set by the family's setup */
    vkl_ctx *c;
    vkl_app_hyper_task tasks[VKL_APP_HYPER_MAX_TASKS];
    int nt, D;
    float *cond;     /* [nt, D] each task's condition */
    vkl_lora tmpl;   /* the adapter the network emits into */
    vkl_lora_set *set; /* the step's adapter, the emitted factors uploaded into it each step */
    char shape[64];  /* appended to the opening line (" at 512x512"), or "" */
    /* the runner's */
    vkl_hyperlora *hy;
    int64_t *goff;   /* offset in the network's output of each trained tensor */
    float *dout;
    FILE *log;
} vkl_app_hyper_run;

typedef struct vkl_app_hyper_family {
    const char *cmd;     /* "lm hyperlora train": the messages' prefix */
    const char *targets; /* the network's `targets` metadata */
    /* the trained tensors' names: key_prefix + module + key_suffix[role] */
    const char *key_prefix, *key_suffix[2];
    void *self;          /* the family's state, passed to the callbacks */
    /* Loads the tasks, the model, the conditions and the data, the template
     * and its adapter set, and builds the training step. */
    int (*setup)(void *self, vkl_app_hyper_run *r, vkl_err *e);
    /* The step's trained tensors: their count; the i-th's name, value and gradient. */
    int (*param_count)(void *self);
    void (*param)(void *self, int i, const char **name, const vkl_tensor **value, const vkl_tensor **grad);
    /* Task k's next batch (orders and draws from *g) and the step t of the
     * model with the emitted adapter, gradients only; its loss. */
    int (*step)(void *self, vkl_app_hyper_run *r, int k, int t, uint64_t *g, float *loss, vkl_err *e);
    void (*free)(void *self);
} vkl_app_hyper_family;

typedef struct vkl_app_hyper_train_opts {
    const char *model, *out, *log;
    int rank, hidden, steps, batch, force;
    float alpha, lr, wd, max_grad_norm;
    unsigned long long seed;
} vkl_app_hyper_train_opts;

/* Runs the training and writes o->out and o->log; the exit status (0, 1, or 130 when a signal stopped it). */
int vkl_app_hyper_train_run(const vkl_app_hyper_family *f, const vkl_app_hyper_train_opts *o);

/* ---- the train|emit front ends ---- */

/* argv[1] as the subcommand: 1 train, 0 emit; -1 after printing the usage for
 * -h / --help (exit 0), -2 after refusing a missing or unknown one (exit 2). */
int vkl_app_hyper_subcommand(const char *cmd, int argc, char **argv, void (*usage)(FILE *));
/* The default log: out's name without its extension, with _log.csv; -1 when too long for buf. */
int vkl_app_hyper_log_name(const char *out, char *buf, size_t cap);
/* 0, or the exit status after the refusal printed as "vklora CMD: ...":
 * 1 when the tasks file is not a readable file, 2 when the description is blank. */
int vkl_app_hyper_check_tasks(const char *cmd, const char *tasks);
int vkl_app_hyper_check_description(const char *cmd, const char *description);

#endif
