#include "train/vae_trainer_internal.h"
#include "train/train_resume.h"

#include "io/dir.h"
#include "rng.h"
#include "sd/sd_random.h"
#include "sd/vae_folder.h"
#include "train/dataset.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t vkl_vae_train_interrupt;

void vkl_vae_train_request_stop(void)
{
    vkl_vae_train_interrupt = 1;
}

/* eps of step k (0-based) is stream STREAM_EPS + k of the seed: a function of
 * (seed, k) alone, so nothing but the step count has to be saved for it */
#define STREAM_EPS 0x7ae0000000ull

void vkl_vae_train_config_default(vkl_vae_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->size = 32;
    c->batch = 16;
    c->steps = 1000;
    c->lr = 1e-3f;
    c->max_grad_norm = 1.0f;
    c->loss = VKL_VAE_LOSS_L1;
    c->kl_weight = 1e-6f;
    c->dtype = VKL_F32;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int dir_empty(const char *p)
{
    DIR *d = opendir(p);
    if (!d) return 1;
    struct dirent *x;
    int empty = 1;
    while (empty && (x = readdir(d)))
        if (strcmp(x->d_name, ".") && strcmp(x->d_name, "..")) empty = 0;
    closedir(d);
    return empty;
}



static int same_arch(const vkl_sd_vae_config *a, const vkl_sd_vae_config *b)
{
    if (a->n_levels != b->n_levels || a->layers_per_block != b->layers_per_block ||
        a->latent_channels != b->latent_channels || a->norm_num_groups != b->norm_num_groups ||
        a->in_channels != b->in_channels || a->out_channels != b->out_channels)
        return 0;
    for (int i = 0; i < a->n_levels; i++)
        if (a->block_out_channels[i] != b->block_out_channels[i]) return 0;
    return 1;
}

/* ---- measuring: scaling factor and PSNR ---- */

int vkl_vae_measure(vkl_ctx *ctx, const vkl_vae *vae, const float *images, int n, int size, int batch,
                    float *scaling_factor, double *psnr, vkl_err *e)
{
    const vkl_sd_vae_config *cfg = vae->cfg;
    int f = 1 << (cfg->n_levels - 1), C = cfg->in_channels;
    size_t per = (size_t)C * size * size, lat = (size_t)cfg->latent_channels * (size / f) * (size / f);
    if (batch > n) batch = n;
    float *in = malloc(sizeof(float) * per * batch), *rec = malloc(sizeof(float) * per * batch);
    float *mean = malloc(sizeof(float) * lat * batch);
    vkl_vae_recon *r = NULL;
    int rc = -1;
    if (!in || !rec || !mean) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    if (vkl_vae_recon_new(ctx, vae, batch, size, size, &r, e)) goto done;
    double s1 = 0, s2 = 0, se = 0;
    for (int i0 = 0; i0 < n; i0 += batch) {
        int cnt = n - i0 < batch ? n - i0 : batch;
        for (int b = 0; b < batch; b++) memcpy(in + per * b, images + per * (size_t)(i0 + (b < cnt ? b : 0)), sizeof(float) * per);
        if (vkl_vae_recon_run(r, in, mean, rec, e)) goto done;
        for (size_t k = 0; k < lat * cnt; k++) {
            s1 += mean[k];
            s2 += (double)mean[k] * mean[k];
        }
        for (size_t k = 0; k < per * cnt; k++) {
            double y = rec[k] < -1 ? -1 : rec[k] > 1 ? 1 : rec[k];
            double d = 0.5 * (y - in[k]);
            se += d * d;
        }
    }
    double nl = (double)lat * n, var = s2 / nl - (s1 / nl) * (s1 / nl);
    double mse = se / ((double)per * n);
    if (scaling_factor) *scaling_factor = var > 0 ? (float)(1.0 / sqrt(var)) : 1.0f;
    if (psnr) *psnr = mse > 0 ? 10.0 * log10(1.0 / mse) : 99.0;
    rc = 0;
done:
    vkl_vae_recon_free(r);
    free(in);
    free(rec);
    free(mean);
    return rc;
}

/* ---- the run in parts ---- */

static int write_output(vkl_vae_trainer *t, vkl_vae_train_result *res, vkl_err *e)
{
    float sf;
    double psnr;
    if (vkl_vae_measure(t->ctx, &t->vae, t->images, t->ds->nimages, t->c->size, t->c->batch, &sf, &psnr, e))
        return -1;
    vkl_sd_vae_config out = t->cfg;
    out.scaling_factor = sf;
    out.sample_size = t->c->size;
    if (vkl_vae_folder_save(t->ctx, t->c->output, &out, t->w, t->c->dtype, e)) return -1;
    if (res) {
        res->psnr = psnr;
        res->scaling_factor = sf;
    }
    vkl_log(VKL_LOG_INFO, "wrote %s: reconstruction PSNR %.2f dB over %d images, scaling_factor %.6g", t->c->output,
            psnr, t->ds->nimages, sf);
    return 0;
}

static int load_images(vkl_vae_trainer *t, vkl_err *e)
{
    int S = t->c->size, n = t->ds->nimages;
    size_t per = (size_t)3 * S * S;
    t->images = malloc(sizeof(float) * per * (size_t)n);
    if (!t->images) return vkl_fail(e, "out of host memory for %d images of %dx%d", n, S, S);
    for (int i = 0; i < n; i++) {
        float *chw;
        int w, h;
        if (vkl_dataset_load_image(t->ds, i, 0, &chw, &w, &h, e)) return -1;
        if (w != S || h != S) {
            free(chw);
            return vkl_fail(e, "%s: prepared as %dx%d, not %dx%d", t->ds->images[i].path, w, h, S, S);
        }
        memcpy(t->images + per * i, chw, sizeof(float) * per);
        free(chw);
    }
    return 0;
}

static int open_model(vkl_vae_trainer *t, const char *resume_dir, vkl_err *e)
{
    const vkl_vae_train_config *c = t->c;
    t->w = vkl_weights_new();
    if (!t->w) return vkl_fail(e, "out of host memory");
    if (resume_dir) {
        if (vkl_vae_folder_load(t->ctx, resume_dir, VKL_F32, &t->cfg, t->w, e)) return -1;
        vkl_sd_vae_config want;
        int have = 0;
        if (c->init) {
            char path[1100];
            snprintf(path, sizeof path, "%.1000s/config.json", c->init);
            if (vkl_vae_config_read(path, &want, e)) return -1;
            have = 1;
        } else if (c->config) {
            if (vkl_vae_config_read(c->config, &want, e)) return -1;
            have = 1;
        }
        if (have && !same_arch(&want, &t->cfg))
            return vkl_fail(e, "%s: the saved VAE's architecture differs from %s", resume_dir,
                            c->init ? c->init : c->config);
        return 0;
    }
    if (c->init) return vkl_vae_folder_load(t->ctx, c->init, VKL_F32, &t->cfg, t->w, e);
    if (vkl_vae_config_read(c->config, &t->cfg, e)) return -1;
    return vkl_vae_random_weights(t->ctx, &t->cfg, VKL_F32, c->seed, t->w, e);
}

double vkl_vae_trainer_seconds(const vkl_vae_trainer *t)
{
    return t->seconds0 + now_s() - t->t0;
}

/* The settings, the output folder (refused when it holds an earlier run,
 * unless force or resume) and the state to resume from, if any. */
static int check_config(vkl_vae_trainer *t, char *resume_dir, size_t n, const char *log_path, vkl_err *e)
{
    const vkl_vae_train_config *c = t->c;
    if (!c->images || !c->output) return vkl_fail(e, "train-vae needs --images DIR and -o OUT_DIR");
    if (!c->resume && !!c->init == !!c->config)
        return vkl_fail(e, "give one of --init VAE_DIR (start from a VAE) or --config CONFIG.json (random weights)");
    if (c->init && c->config) return vkl_fail(e, "--init and --config exclude each other");
    if (c->size < 1 || c->batch < 1 || c->steps < 0)
        return vkl_fail(e, "--size %d, --batch %d and --steps %d must be positive", c->size, c->batch, c->steps);
    if (!(c->lr >= 0) || !(c->kl_weight >= 0) || c->save_every < 0)
        return vkl_fail(e, "--lr, --kl-weight and --save-every must not be negative");
    if (c->dtype != VKL_F32 && c->dtype != VKL_F16) return vkl_fail(e, "--dtype must be f32 or f16");
    if (!is_dir(c->images)) return vkl_fail(e, "--images %s: no such folder", c->images);
    int exists = is_dir(c->output);
    if (!exists && access(c->output, F_OK) == 0) return vkl_fail(e, "-o %s exists and is not a folder", c->output);
    if (c->resume) {
        if (vkl_vae_state_latest(t, resume_dir, n))
            return vkl_fail(e, "--resume: %s holds no training state (%s/latest)", c->output, t->state_dir);
    } else if (exists && !dir_empty(c->output)) {
        if (!c->force)
            return vkl_fail(e, "%s exists; --force starts over in it, --resume continues its training", c->output);
        vkl_err e2;
        vkl_dir_remove(t->state_dir, &e2);
        unlink(log_path);
    }
    if (vkl_mkdir_p(c->output)) return vkl_fail(e, "cannot create %s: %s", c->output, strerror(errno));
    return 0;
}

/* The images (all in memory, square at --size) and their order */
static int open_data(vkl_vae_trainer *t, vkl_err *e)
{
    const vkl_vae_train_config *c = t->c;
    vkl_dataset_opts dopt;
    vkl_dataset_opts_default(&dopt);
    dopt.images_dir = c->images;
    dopt.resolution = c->size;
    dopt.bucket = 0;
    dopt.batch_size = c->batch;
    dopt.flip = 1;
    dopt.seed = c->seed;
    dopt.default_caption = "";
    if (vkl_dataset_open(&dopt, &t->ds, e)) return -1;
    if (t->ds->samples_per_epoch < c->batch)
        return vkl_fail(e, "%s: %d images (with repeats) are fewer than one batch of %d; lower --batch", c->images,
                        t->ds->samples_per_epoch, c->batch);
    return load_images(t, e);
}

/* train_log.csv: a resumed run's rows after its state's step are dropped
 * (they are done again), a new run's file starts with its header. */
static int open_log(vkl_vae_trainer *t, const char *log_path, vkl_err *e)
{
    double logged_seconds; /* the VAE log restarts its seconds per session */
    if (t->step && vkl_train_log_cut(log_path, t->step, &logged_seconds, e)) return -1;
    t->csv = fopen(log_path, t->step ? "a" : "w");
    if (!t->csv) return vkl_fail(e, "cannot write %s: %s", log_path, strerror(errno));
    if (!t->step) fprintf(t->csv, "step,loss,rec,kl,lr,seconds\n");
    fflush(t->csv);
    return 0;
}

int vkl_vae_trainer_open(vkl_ctx *ctx, const vkl_vae_train_config *c, vkl_vae_trainer **out, vkl_err *e)
{
    *out = NULL;
    vkl_vae_trainer *t = calloc(1, sizeof *t);
    if (!t) return vkl_fail(e, "out of host memory");
    t->ctx = ctx;
    t->c = c;
    t->saved_step = -1;
    snprintf(t->state_dir, sizeof t->state_dir, "%.1000s/state", c->output ? c->output : "");
    char log_path[1100], resume_dir[1200];
    snprintf(log_path, sizeof log_path, "%.1000s/train_log.csv", c->output ? c->output : "");
    if (check_config(t, resume_dir, sizeof resume_dir, log_path, e) ||
        open_model(t, c->resume ? resume_dir : NULL, e))
        goto fail;
    t->vae.cfg = &t->cfg;
    t->vae.w = t->w;
    int f = 1 << (t->cfg.n_levels - 1);
    if (c->size % f) {
        vkl_fail(e, "--size %d is not a multiple of the VAE's down-sampling factor %d (%d levels)", c->size, f,
                 t->cfg.n_levels);
        goto fail;
    }
    if (open_data(t, e) || vkl_vae_train_params(&t->vae, &t->params, &t->np, e)) goto fail;
    vkl_adamw_opts ao;
    vkl_adamw_opts_default(&ao);
    ao.lr = c->lr;
    ao.weight_decay = c->weight_decay;
    ao.max_grad_norm = c->max_grad_norm;
    if (!(t->opt = vkl_adamw_new(ctx, t->params, t->np, NULL, &ao, e))) goto fail;
    if (vkl_ds_iter_init(&t->it, t->ds, e)) goto fail;
    if (c->resume && vkl_vae_state_load(t, resume_dir, e)) goto fail;
    vkl_vae_train_opts so = {c->loss, c->kl_weight, t->opt};
    if (vkl_vae_train_step_new(ctx, &t->vae, c->batch, c->size, c->size, &so, &t->s, e)) goto fail;
    t->per = (size_t)3 * c->size * c->size;
    t->neps = vkl_vae_train_step_eps_count(t->s);
    t->batch = malloc(sizeof(float) * t->per * c->batch);
    t->eps = malloc(sizeof(float) * t->neps);
    if (!t->batch || !t->eps) {
        vkl_fail(e, "out of host memory");
        goto fail;
    }
    if (open_log(t, log_path, e)) goto fail;
    t->sched = (vkl_lr_schedule){VKL_LR_CONSTANT, c->lr, c->warmup, c->steps, 0};
    t->first = t->step;
    t->t0 = now_s();
    *out = t;
    return 0;
fail:
    vkl_vae_trainer_close(t);
    return -1;
}

void vkl_vae_trainer_position(const vkl_vae_trainer *t, int *step, int *total)
{
    *step = t->step;
    *total = t->c->steps;
}

const char *vkl_vae_trainer_state_dir(const vkl_vae_trainer *t)
{
    return t->state_dir;
}

/* The next whole batch of the order into t->batch (flipped where it says);
 * the short tail of an epoch is dropped, as in `vklora train`. */
static int next_batch(vkl_vae_trainer *t, vkl_err *e)
{
    const vkl_ds_sample *smp;
    int cnt, bucket;
    uint32_t epoch;
    do {
        if (vkl_ds_iter_next(&t->it, &smp, &cnt, &bucket, &epoch, e)) return -1;
    } while (cnt != t->c->batch);
    int S = t->c->size;
    for (int b = 0; b < cnt; b++) {
        const float *src = t->images + t->per * (size_t)smp[b].image;
        float *dst = t->batch + t->per * b;
        if (!smp[b].flip) {
            memcpy(dst, src, sizeof(float) * t->per);
            continue;
        }
        for (size_t row = 0; row < (size_t)3 * S; row++)
            for (int x = 0; x < S; x++) dst[row * S + x] = src[row * S + S - 1 - x];
    }
    return 0;
}

/* One row of train_log.csv per step, flushed: a killed run keeps its rows. */
static void log_step(vkl_vae_trainer *t, const vkl_vae_losses *L, float lr)
{
    fprintf(t->csv, "%d,%.7g,%.7g,%.7g,%.7g,%.3f\n", t->step, L->loss, L->rec, L->kl, lr, vkl_vae_trainer_seconds(t));
    fflush(t->csv);
}

int vkl_vae_trainer_step(vkl_vae_trainer *t, vkl_vae_train_report *r, vkl_err *e)
{
    const vkl_vae_train_config *c = t->c;
    if (t->step >= c->steps) return vkl_fail(e, "train-vae: step %d is past the last (%d)", t->step + 1, c->steps);
    if (next_batch(t, e)) return -1;
    vkl_rng rng;
    vkl_rng_init(&rng, c->seed, STREAM_EPS + (uint64_t)t->step);
    vkl_rng_normal(&rng, t->eps, t->neps);
    float lr = vkl_lr_at(&t->sched, t->step), gn = 0;
    vkl_vae_losses L;
    int skipped = 0;
    if (vkl_vae_train_step_run(t->s, t->batch, t->eps, t->step + 1, lr, &L, e) ||
        vkl_adamw_result(t->opt, &gn, &skipped, e))
        return -1;
    t->step++;
    if (skipped) {
        vkl_log(VKL_LOG_WARN, "step %d: the gradient was not finite; the update was skipped", t->step);
        if (++t->bad_run >= 10)
            return vkl_fail(e, "10 steps in a row had non-finite gradients; stopping (try a lower --lr)");
    } else {
        t->bad_run = 0;
    }
    log_step(t, &L, lr);
    *r = (vkl_vae_train_report){.step = t->step, .first_step = t->first, .total = c->steps, .losses = L, .lr = lr,
                                .grad_norm = gn, .skipped = skipped, .seconds = now_s() - t->t0};
    r->save_due = c->save_every && t->step % c->save_every == 0 && t->step < c->steps;
    return 0;
}

int vkl_vae_trainer_checkpoint(vkl_vae_trainer *t, vkl_err *e)
{
    if (t->saved_step == t->step) return 0;
    if (vkl_vae_state_save(t, e)) return -1;
    t->saved_step = t->step;
    const vkl_vae_train_config *c = t->c;
    int due = c->save_every && t->step % c->save_every == 0 && t->step < c->steps;
    return due ? write_output(t, NULL, e) : 0;
}

/* What the run did so far (psnr and scaling_factor: write_output's) */
static void fill_result(const vkl_vae_trainer *t, vkl_vae_train_result *res)
{
    double el = now_s() - t->t0;
    res->steps = t->step;
    res->images = t->ds->nimages;
    res->seconds_per_step = t->step > t->first ? el / (t->step - t->first) : 0;
}

int vkl_vae_trainer_finish(vkl_vae_trainer *t, vkl_vae_train_result *res, vkl_err *e)
{
    if (t->step < t->c->steps) return vkl_fail(e, "train-vae: finished at step %d of %d", t->step, t->c->steps);
    if (res) fill_result(t, res);
    if (t->saved_step != t->step && vkl_vae_state_save(t, e)) return -1;
    t->saved_step = t->step;
    return write_output(t, res, e);
}

void vkl_vae_trainer_close(vkl_vae_trainer *t)
{
    if (!t) return;
    if (t->csv) fclose(t->csv);
    free(t->batch);
    free(t->eps);
    vkl_vae_train_step_free(t->s);
    vkl_ds_iter_free(&t->it);
    vkl_adamw_free(t->opt);
    free(t->params);
    free(t->images);
    vkl_dataset_free(t->ds);
    vkl_weights_free(t->w);
    free(t);
}

int vkl_vae_train_run(vkl_ctx *ctx, const vkl_vae_train_config *c, vkl_vae_train_progress_fn progress, void *user,
                      vkl_vae_train_result *res, vkl_err *e)
{
    if (res) memset(res, 0, sizeof *res);
    vkl_vae_trainer *t = NULL;
    if (vkl_vae_trainer_open(ctx, c, &t, e)) return -1;
    int rc = 0;
    while (!rc && t->step < c->steps && !vkl_vae_train_interrupt) {
        vkl_vae_train_report r;
        rc = vkl_vae_trainer_step(t, &r, e);
        if (!rc && progress) progress(user, &r);
        if (!rc && r.save_due) rc = vkl_vae_trainer_checkpoint(t, e);
        /* tests stand in for Ctrl-C at an exact step */
        if (!rc && c->interrupt_at == t->step) vkl_vae_train_interrupt = 1;
    }
    if (!rc && t->step < c->steps) { /* interrupted: the state, for --resume */
        if (res) fill_result(t, res);
        rc = vkl_vae_trainer_checkpoint(t, e);
        if (!rc) {
            vkl_fail(e, "interrupted at step %d; the state is in %s (continue with --resume)", t->step, t->state_dir);
            rc = 1;
        }
    } else if (!rc) {
        rc = vkl_vae_trainer_finish(t, res, e);
    }
    vkl_vae_trainer_close(t);
    return rc;
}
