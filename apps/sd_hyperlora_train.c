/* vklora hyperlora train (research option): trains a HyperLoRA network
 * (lora/hyperlora.h) that emits Stable Diffusion LoRA adapters from a task
 * description, through the shared loop of hyperlora_runner.c. Each task is a
 * description and an image folder. The family's part: the images' latents
 * and their captions' text states are computed once; a description's
 * condition is the text encoder's final hidden states averaged over its
 * tokens (sd_condition.h); a step is the SD LoRA
 * training step on a batch of the task's images with gradients only (random
 * timesteps and noise from --seed). */
#include "sd_hyperlora_cmd.h"

#include "hyperlora_runner.h"

#include "lora/lora_apply.h"
#include "lora/lora_init.h"
#include "rng.h"
#include "sd/pipeline.h"
#include "sd/schedule.h"
#include "sd/sd_condition.h"
#include "train/dataset.h"
#include "train/sd_train_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* its own Philox stream for the training noise */
enum { STREAM_HYPER_NOISE = 0x4879 };

typedef struct task_data {
    vkl_dataset *ds;
    float *x0;   /* [n, per] latents */
    float *text; /* [n, T, D] caption text states */
    int *order, pos;
} task_data;

typedef struct sd_run {
    const vkl_app_sd_hyper_args *a;
    vkl_sd_model *m;
    int nt;
    task_data td[VKL_APP_HYPER_MAX_TASKS];
    vkl_sd_train_step *st;
    vkl_noise_table table;
    float *noisy, *target, *ctx, *tt;
    size_t per;
    int T, D, lh, lw;
} sd_run;

int vkl_app_sd_hyper_template(const vkl_sd_model *m, int rank, float alpha, uint64_t seed, vkl_lora *l, vkl_err *e)
{
    if (vkl_lora_init_sd(m->cfg, vkl_lora_select_unet_attention, NULL, rank, alpha, seed, 0, l, e))
        return vkl_err_prefix(e, "the adapter template: "), -1;
    return 0;
}

static void sd_free(void *self)
{
    sd_run *r = self;
    free(r->noisy);
    free(r->target);
    free(r->ctx);
    free(r->tt);
    vkl_sd_train_step_free(r->st);
    if (r->m) r->m->unet.lora = NULL;
    for (int i = 0; i < r->nt; i++) {
        vkl_dataset_free(r->td[i].ds);
        free(r->td[i].x0);
        free(r->td[i].text);
        free(r->td[i].order);
    }
    vkl_noise_table_free(&r->table);
    vkl_sd_model_free(r->m);
}

/* Task k's images (square crops of --resolution), latents and caption states. */
static int load_task(sd_run *r, const char *images, int k, vkl_err *e)
{
    const vkl_app_sd_hyper_args *a = r->a;
    task_data *d = &r->td[k];
    vkl_dataset_opts o;
    vkl_dataset_opts_default(&o);
    o.images_dir = images;
    o.resolution = a->resolution;
    o.bucket = 0; /* one square size: one planned training graph */
    o.seed = a->seed;
    if (vkl_dataset_open(&o, &d->ds, e)) return -1;
    if (d->ds->nimages < 1) return vkl_fail(e, "no image");
    int f = 1 << (r->m->cfg->vae.n_levels - 1), w = d->ds->buckets[0].reso.w, h = d->ds->buckets[0].reso.h;
    if (w % f || h % f) return vkl_fail(e, "images of %dx%d are not a multiple of the VAE's factor %d", w, h, f);
    if (!k) r->lh = h / f, r->lw = w / f;
    else if (h / f != r->lh || w / f != r->lw)
        return vkl_fail(e, "images of %dx%d, not the first task's size %dx%d", w, h, r->lw * f, r->lh * f);
    r->per = (size_t)r->m->cfg->unet.in_channels * r->lh * r->lw;
    int n = d->ds->nimages;
    size_t row = (size_t)r->T * r->D;
    d->x0 = malloc(sizeof(float) * r->per * n);
    d->text = malloc(sizeof(float) * row * n);
    d->order = malloc(sizeof(int) * n);
    if (!d->x0 || !d->text || !d->order) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < n; i++) {
        float *chw = NULL, *states = NULL;
        int iw = 0, ih = 0, chunks = 0;
        int rc = vkl_dataset_load_image(d->ds, i, 0, &chw, &iw, &ih, e);
        if (!rc) rc = vkl_sd_encode_image(r->m, chw, 1, ih, iw, d->x0 + r->per * i, e);
        free(chw);
        if (!rc) rc = vkl_sd_encode_prompt(r->m, d->ds->images[i].caption, 1, 1, 1, &states, &chunks, e);
        if (!rc) memcpy(d->text + row * i, states, sizeof(float) * row); /* the first 77 tokens, as training reads them */
        free(states);
        if (rc) return vkl_err_prefix(e, "%s: ", d->ds->images[i].rel), -1;
        d->order[i] = i;
    }
    d->pos = n; /* shuffled before the first batch */
    return 0;
}

static int sd_param_count(void *self)
{
    return vkl_sd_train_step_param_count(((sd_run *)self)->st);
}

/* keys "<module>.down" / ".up" */
static void sd_param(void *self, int i, const char **name, const vkl_tensor **value, const vkl_tensor **grad)
{
    const vkl_sd_train_step *st = ((sd_run *)self)->st;
    *name = vkl_sd_train_step_param_name(st, i);
    *value = vkl_sd_train_step_param(st, i);
    *grad = vkl_sd_train_step_grad(st, i);
}

/* B images of task k (a seeded order, reshuffled after each pass), each at a
 * random timestep with fresh noise: `vklora train`'s noisy latents and
 * targets; then the step. */
static int sd_step(void *self, vkl_app_hyper_run *hr, int k, int t, uint64_t *g, float *loss, vkl_err *e)
{
    (void)hr;
    sd_run *r = self;
    task_data *d = &r->td[k];
    int B = r->a->batch, n = d->ds->nimages, v_pred = r->m->cfg->sched.prediction == VKL_SD_PRED_V;
    uint64_t seed = r->a->seed;
    size_t row = (size_t)r->T * r->D;
    for (int b = 0; b < B; b++) {
        if (d->pos == n) {
            vkl_shuffle_ints(d->order, n, g);
            d->pos = 0;
        }
        int s = d->order[d->pos++], ts = (int)(vkl_splitmix64(g) % (uint64_t)r->table.n);
        r->tt[b] = (float)ts;
        double acp = r->table.alphas_cumprod[ts], sa = sqrt(acp), sb = sqrt(1 - acp);
        const float *x0 = d->x0 + r->per * s;
        for (size_t i = 0; i < r->per; i++) {
            double eps = vkl_rng_normal_at(seed, STREAM_HYPER_NOISE, ((uint64_t)t * B + b) * r->per + i);
            r->noisy[r->per * b + i] = (float)(sa * x0[i] + sb * eps);
            r->target[r->per * b + i] = v_pred ? (float)(sa * eps - sb * x0[i]) : (float)eps;
        }
        memcpy(r->ctx + row * b, d->text + row * s, sizeof(float) * row);
    }
    return vkl_sd_train_step_run(r->st, r->noisy, r->tt, r->ctx, r->target, NULL, t, 0.0f, loss, e);
}

static int sd_setup(void *self, vkl_app_hyper_run *hr, vkl_err *e)
{
    sd_run *r = self;
    const vkl_app_sd_hyper_args *a = r->a;
    if (vkl_app_hyper_tasks_load_ex(a->tasks, "images", 1, hr->tasks, VKL_APP_HYPER_MAX_TASKS, &hr->nt, e)) return -1;
    r->nt = hr->nt; /* what sd_free releases: entries not reached yet are zero */
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.yaml = a->model_config;
    if (vkl_ctx_create(&co, &hr->c, e) || vkl_sd_model_load(hr->c, a->model, &mo, &r->m, e)) return -1;
    if (r->m->cfg->n_text_encoders != 1)
        return vkl_fail(e, "%s is an SDXL model: vklora hyperlora trains on SD 1.x / 2.x models", a->model);
    vkl_beta_params bp;
    if (vkl_beta_params_from_sd(&r->m->cfg->sched, &bp, e) || vkl_noise_table_init(&r->table, &bp, VKL_ACP_F32, e))
        return -1;
    r->T = vkl_sd_text_tokens(r->m);
    hr->D = r->D = r->m->cfg->unet.cross_attention_dim;
    if (!(hr->cond = malloc(sizeof(float) * (size_t)hr->nt * r->D))) return vkl_fail(e, "out of host memory");
    for (int k = 0; k < hr->nt; k++) {
        if (load_task(r, hr->tasks[k].data, k, e))
            return vkl_err_prefix(e, "task %d (%s): ", k + 1, hr->tasks[k].data), -1;
        if (vkl_sd_text_condition(r->m, hr->tasks[k].description, hr->cond + (size_t)k * r->D, e))
            return vkl_err_prefix(e, "task %d: ", k + 1), -1;
    }
    int B = a->batch;
    vkl_sd_train_shape sh = {B, r->m->cfg->unet.in_channels, r->lh, r->lw, r->T, r->D, 0};
    if (vkl_app_sd_hyper_template(r->m, a->rank, a->alpha, a->seed, &hr->tmpl, e) ||
        vkl_lora_set_build_train(hr->c, &hr->tmpl, &hr->set, e))
        return -1;
    r->m->unet.lora = hr->set;
    if (vkl_sd_train_step_new(hr->c, &r->m->unet, &sh, 0, NULL, &r->st, e)) return -1;
    r->noisy = malloc(sizeof(float) * r->per * B);
    r->target = malloc(sizeof(float) * r->per * B);
    r->ctx = malloc(sizeof(float) * (size_t)r->T * r->D * B);
    r->tt = malloc(sizeof(float) * (size_t)B);
    if (!r->noisy || !r->target || !r->ctx || !r->tt) return vkl_fail(e, "out of host memory");
    snprintf(hr->shape, sizeof hr->shape, " at %dx%d", r->td[0].ds->buckets[0].reso.w, r->td[0].ds->buckets[0].reso.h);
    return 0;
}

int vkl_app_sd_hyper_train(const vkl_app_sd_hyper_args *a)
{
    sd_run r;
    memset(&r, 0, sizeof r);
    r.a = a;
    const vkl_app_hyper_family f = {
        .cmd = "hyperlora train",
        .targets = VKL_APP_SD_HYPER_TARGETS,
        .key_prefix = "",
        .key_suffix = {".down", ".up"},
        .self = &r,
        .setup = sd_setup,
        .param_count = sd_param_count,
        .param = sd_param,
        .step = sd_step,
        .free = sd_free,
    };
    const vkl_app_hyper_train_opts o = {
        .model = a->model, .out = a->out, .log = a->log, .rank = a->rank, .hidden = a->hidden, .steps = a->steps,
        .batch = a->batch, .force = a->force, .alpha = a->alpha, .lr = a->lr, .wd = a->wd,
        .max_grad_norm = a->max_grad_norm, .seed = a->seed,
    };
    return vkl_app_hyper_train_run(&f, &o);
}
