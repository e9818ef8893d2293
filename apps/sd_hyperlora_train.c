/* vklora hyperlora train (research option): trains a HyperLoRA network
 * (lora/hyperlora.h) that emits Stable Diffusion LoRA adapters from a task
 * description. Each task is a description and an image folder. The images'
 * latents and their captions' text states are computed once. Each step
 * picks a task (every task once per round, the rounds' orders drawn from
 * --seed), emits its adapter from the description's condition, runs the SD
 * LoRA training step on a batch of the task's images with gradients only
 * (random timesteps and noise from --seed), and takes the gradient of the
 * loss with respect to the emitted factors back through the network (AdamW
 * on W1, b1, W2, b2). */
#include "sd_hyperlora_cmd.h"

#include "app.h"
#include "out_folder.h"
#include "lm_hyperlora.h"
#include "progress.h"
#include "stop_signal.h"

#include "io/dir.h"
#include "lora/hyperlora.h"
#include "lora/lora_apply.h"
#include "lora/lora_init.h"
#include "rng.h"
#include "sd/pipeline.h"
#include "sd/schedule.h"
#include "sd/sd_condition.h"
#include "train/dataset.h"
#include "train/sd_train_step.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* its own Philox stream for the training noise */
enum { STREAM_HYPER_NOISE = 0x4879 };

typedef struct task_data {
    vkl_dataset *ds;
    float *x0;   /* [n, per] latents */
    float *text; /* [n, T, D] caption text states */
    int *order, pos;
} task_data;

typedef struct run {
    vkl_ctx *c;
    vkl_sd_model *m;
    vkl_app_hyper_task tasks[VKL_APP_HYPER_MAX_TASKS];
    int nt;
    task_data td[VKL_APP_HYPER_MAX_TASKS];
    float *cond; /* [nt, D] */
    vkl_lora tmpl;
    vkl_lora_set *set;
    vkl_sd_train_step *st;
    vkl_hyperlora *hy;
    vkl_noise_table table;
    int64_t *goff;
    float *dout, *noisy, *target, *ctx, *tt;
    size_t per;
    int T, D, lh, lw;
    FILE *log;
} run;

int vkl_app_sd_hyper_template(const vkl_sd_model *m, int rank, float alpha, uint64_t seed, vkl_lora *l, vkl_err *e)
{
    if (vkl_lora_init_sd(m->cfg, vkl_lora_select_unet_attention, NULL, rank, alpha, seed, 0, l, e))
        return vkl_err_prefix(e, "the adapter template: "), -1;
    return 0;
}

static void run_free(run *r)
{
    if (r->log) fclose(r->log);
    free(r->goff);
    free(r->dout);
    free(r->noisy);
    free(r->target);
    free(r->ctx);
    free(r->tt);
    vkl_hyperlora_free(r->hy);
    vkl_sd_train_step_free(r->st);
    if (r->m) r->m->unet.lora = NULL;
    vkl_lora_set_free(r->set);
    vkl_lora_free(&r->tmpl);
    free(r->cond);
    for (int i = 0; i < r->nt; i++) {
        vkl_dataset_free(r->td[i].ds);
        free(r->td[i].x0);
        free(r->td[i].text);
        free(r->td[i].order);
    }
    vkl_noise_table_free(&r->table);
    vkl_app_hyper_tasks_free(r->tasks, r->nt);
    vkl_sd_model_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}

/* Task k's images (square crops of --resolution), latents and caption states. */
static int load_task(run *r, const vkl_app_sd_hyper_args *a, int k, vkl_err *e)
{
    task_data *d = &r->td[k];
    vkl_dataset_opts o;
    vkl_dataset_opts_default(&o);
    o.images_dir = r->tasks[k].data;
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

/* Where each tensor the SD step differentiates ("<module>.down" / ".up") sits in the network's output. */
static int map_grads(run *r, vkl_err *e)
{
    int np = vkl_sd_train_step_param_count(r->st);
    r->goff = malloc(sizeof(int64_t) * (size_t)np);
    r->dout = malloc(sizeof(float) * (size_t)vkl_hyperlora_outputs(r->hy));
    if (!r->goff || !r->dout) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < np; i++) {
        const char *key = vkl_sd_train_step_param_name(r->st, i);
        r->goff[i] = -1;
        for (int k = 0; k < r->tmpl.n && r->goff[i] < 0; k++)
            for (int role = VKL_LORA_DOWN; role <= VKL_LORA_UP; role++) {
                char want[1024];
                snprintf(want, sizeof want, "%s.%s", r->tmpl.m[k].name, role == VKL_LORA_DOWN ? "down" : "up");
                if (!strcmp(key, want) && vkl_tensor_nelem(vkl_sd_train_step_param(r->st, i)) ==
                                              (int64_t)vkl_lora_tensor_nelem(&r->tmpl.m[k].t[role]))
                    r->goff[i] = vkl_hyperlora_offset(r->hy, k, role);
            }
        if (r->goff[i] < 0) return vkl_fail(e, "trained tensor %s has no place in the hypernetwork's output", key);
    }
    return 0;
}

static int upload_adapter(run *r, vkl_err *e)
{
    for (int k = 0; k < r->tmpl.n; k++) {
        const vkl_lora_slot *sl = vkl_lora_set_find(r->set, r->tmpl.m[k].name);
        if (!sl) return vkl_fail(e, "module %s has no place in the adapter set", r->tmpl.m[k].name);
        if (vkl_lora_slot_upload(r->c, sl, &r->tmpl.m[k], e)) return -1;
    }
    return 0;
}

/* B images of task k (a seeded order, reshuffled after each pass), each at a
 * random timestep with fresh noise: `vklora train`'s noisy latents and targets. */
static void next_batch(run *r, int k, int B, int t, uint64_t seed, uint64_t *g)
{
    task_data *d = &r->td[k];
    int n = d->ds->nimages, v_pred = r->m->cfg->sched.prediction == VKL_SD_PRED_V;
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
}

static char *tasks_json(const run *r)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < r->nt; i++) cJSON_AddItemToArray(a, cJSON_CreateString(r->tasks[i].description));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    return s;
}

static int setup(const vkl_app_sd_hyper_args *a, run *r, vkl_err *e)
{
    if (vkl_app_hyper_tasks_load_ex(a->tasks, "images", 1, r->tasks, VKL_APP_HYPER_MAX_TASKS, &r->nt, e)) return -1;
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.yaml = a->model_config;
    if (vkl_ctx_create(&co, &r->c, e) || vkl_sd_model_load(r->c, a->model, &mo, &r->m, e)) return -1;
    if (r->m->cfg->n_text_encoders != 1)
        return vkl_fail(e, "%s is an SDXL model: vklora hyperlora trains on SD 1.x / 2.x models", a->model);
    vkl_beta_params bp;
    if (vkl_beta_params_from_sd(&r->m->cfg->sched, &bp, e) || vkl_noise_table_init(&r->table, &bp, VKL_ACP_F32, e))
        return -1;
    r->T = vkl_sd_text_tokens(r->m);
    r->D = r->m->cfg->unet.cross_attention_dim;
    if (!(r->cond = malloc(sizeof(float) * (size_t)r->nt * r->D))) return vkl_fail(e, "out of host memory");
    for (int k = 0; k < r->nt; k++) {
        if (load_task(r, a, k, e)) return vkl_err_prefix(e, "task %d (%s): ", k + 1, r->tasks[k].data), -1;
        if (vkl_sd_text_condition(r->m, r->tasks[k].description, r->cond + (size_t)k * r->D, e))
            return vkl_err_prefix(e, "task %d: ", k + 1), -1;
    }
    int B = a->batch;
    vkl_sd_train_shape sh = {B, r->m->cfg->unet.in_channels, r->lh, r->lw, r->T, r->D, 0};
    if (vkl_app_sd_hyper_template(r->m, a->rank, a->alpha, a->seed, &r->tmpl, e) ||
        vkl_lora_set_build_train(r->c, &r->tmpl, &r->set, e))
        return -1;
    r->m->unet.lora = r->set;
    if (vkl_sd_train_step_new(r->c, &r->m->unet, &sh, 0, NULL, &r->st, e) ||
        vkl_hyperlora_new(r->c, &r->tmpl, r->D, a->hidden, a->seed, &r->hy, e))
        return -1;
    float *mean = malloc(sizeof(float) * (size_t)r->D), scale;
    if (!mean) return vkl_fail(e, "out of host memory");
    vkl_hyperlora_centre_of(r->cond, r->nt, r->D, mean, &scale);
    int rc = vkl_hyperlora_set_centre(r->hy, mean, scale, e);
    free(mean);
    vkl_adamw_opts ho;
    vkl_adamw_opts_default(&ho);
    ho.lr = a->lr;
    ho.weight_decay = a->wd;
    ho.max_grad_norm = a->max_grad_norm;
    if (rc || vkl_hyperlora_train_begin(r->hy, &ho, e) || map_grads(r, e)) return -1;
    r->noisy = malloc(sizeof(float) * r->per * B);
    r->target = malloc(sizeof(float) * r->per * B);
    r->ctx = malloc(sizeof(float) * (size_t)r->T * r->D * B);
    r->tt = malloc(sizeof(float) * (size_t)B);
    if (!r->noisy || !r->target || !r->ctx || !r->tt) return vkl_fail(e, "out of host memory");
    return 0;
}

static int train(const vkl_app_sd_hyper_args *a, const char *tmp_log, const char *tmp_out, run *r, vkl_err *e)
{
    if (setup(a, r, e)) return -1;
    if (!(r->log = fopen(tmp_log, "w"))) return vkl_fail(e, "cannot create %s: %s", tmp_log, strerror(errno));
    fprintf(r->log, "step,task,loss,lr,seconds\n");
    if (!vkl_app_quiet)
        fprintf(stderr, "hyperlora train: %d tasks, %d adapter modules (%lld numbers emitted), hidden %d, %d steps of batch %d at %dx%d\n",
                r->nt, r->tmpl.n, (long long)vkl_hyperlora_outputs(r->hy), a->hidden, a->steps, a->batch,
                r->td[0].ds->buckets[0].reso.w, r->td[0].ds->buckets[0].reso.h);
    uint64_t g = a->seed ^ 0x68797065726c6full;
    int round[VKL_APP_HYPER_MAX_TASKS], cnt[VKL_APP_HYPER_MAX_TASKS] = {0};
    double sum[VKL_APP_HYPER_MAX_TASKS] = {0};
    int np = vkl_sd_train_step_param_count(r->st), every = a->steps >= 20 ? a->steps / 10 : 1;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int t = 1; t <= a->steps; t++) {
        int j = (t - 1) % r->nt;
        if (!j) {
            for (int i = 0; i < r->nt; i++) round[i] = i;
            vkl_shuffle_ints(round, r->nt, &g);
        }
        int k = round[j];
        const float *cond = r->cond + (size_t)k * r->D;
        if (vkl_app_stop_check(e)) return -1;
        next_batch(r, k, a->batch, t, a->seed, &g);
        float loss;
        if (vkl_hyperlora_emit(r->hy, cond, NULL, &r->tmpl, e) || upload_adapter(r, e) ||
            vkl_sd_train_step_run(r->st, r->noisy, r->tt, r->ctx, r->target, NULL, t, 0.0f, &loss, e))
            return vkl_err_prefix(e, "step %d: ", t), -1;
        for (int i = 0; i < np; i++)
            if (vkl_tensor_download(r->c, vkl_sd_train_step_grad(r->st, i), r->dout + r->goff[i], VKL_F32, e)) return -1;
        if (vkl_hyperlora_train_step(r->hy, cond, r->dout, t, a->lr, e)) return vkl_err_prefix(e, "step %d: ", t), -1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double sec = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        fprintf(r->log, "%d,%d,%.6f,%g,%.3f\n", t, k + 1, (double)loss, (double)a->lr, sec);
        sum[k] += loss;
        cnt[k]++;
        if (!vkl_app_quiet && (t % every == 0 || t == a->steps)) {
            fprintf(stderr, "step %d/%d  mean loss per task since last report:", t, a->steps);
            for (int i = 0; i < r->nt; i++) {
                if (cnt[i]) fprintf(stderr, " %d: %.4f", i + 1, sum[i] / cnt[i]);
                sum[i] = 0;
                cnt[i] = 0;
            }
            fprintf(stderr, "  (%.2f s/step)\n", sec / t);
        }
    }
    int bad = fclose(r->log);
    r->log = NULL;
    if (bad) return vkl_fail(e, "cannot write %s", tmp_log);
    vkl_hyperlora_meta meta = {.rank = a->rank, .alpha = a->alpha, .hidden = a->hidden, .cond_dim = r->D};
    snprintf(meta.targets, sizeof meta.targets, "%s", VKL_APP_SD_HYPER_TARGETS);
    snprintf(meta.base, sizeof meta.base, "%s", a->model);
    char *tj = tasks_json(r);
    if (!tj) return vkl_fail(e, "out of host memory");
    int rc = vkl_hyperlora_save(r->hy, &meta, "tasks", tj, tmp_out, e);
    free(tj);
    return rc;
}

int vkl_app_sd_hyper_train(const vkl_app_sd_hyper_args *a)
{
    if (vkl_app_out_file_refuse("hyperlora train", a->out, a->force)) return 1;
    vkl_err e = {{0}};
    char tmp_out[4300], tmp_log[4300];
    snprintf(tmp_out, sizeof tmp_out, "%s.tmp-%ld", a->out, (long)getpid());
    snprintf(tmp_log, sizeof tmp_log, "%s.tmp-%ld", a->log, (long)getpid());
    run r;
    memset(&r, 0, sizeof r);
    vkl_app_stop_catch(); /* a signal stops the run after its step, leaving nothing behind */
    int rc = train(a, tmp_log, tmp_out, &r, &e);
    vkl_app_stop_restore();
    run_free(&r);
    if (!rc && (vkl_rename_durable(tmp_log, a->log) || vkl_rename_durable(tmp_out, a->out)))
        rc = vkl_fail(&e, "cannot rename the outputs into place (%s, %s): %s", a->out, a->log, strerror(errno));
    if (rc) {
        unlink(tmp_out);
        unlink(tmp_log);
        vkl_app_print_error("hyperlora train", e.msg);
        return vkl_app_stop_requested() ? 130 : 1;
    }
    if (!vkl_app_quiet) fprintf(stderr, "hyperlora train: wrote %s and %s\n", a->out, a->log);
    return 0;
}
