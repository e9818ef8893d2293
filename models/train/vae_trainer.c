#include "train/vae_trainer.h"
#include "io/text.h"
#include "train/train_resume.h"

#include "io/dir.h"
#include "io/safetensors.h"
#include "rng.h"
#include "sd/sd_random.h"
#include "sd/vae_folder.h"
#include "train/dataset.h"

#include <cjson/cJSON.h>
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

/* ---- the run ---- */

typedef struct run {
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
} run;

static int write_output(run *t, vkl_vae_train_result *res, vkl_err *e)
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

typedef struct state_job {
    run *t;
    int step;
    double seconds;
    const vkl_ds_iter *it;
} state_job;

/* The state's files into dir: the weights as a VAE folder of their own
 * (f32, exact), the moments, the position in the data. */
static int write_state(void *user, const char *dir, vkl_err *e)
{
    state_job *sj = user;
    run *t = sj->t;
    char path[1300];
    if (vkl_vae_folder_save(t->ctx, dir, &t->cfg, t->w, VKL_F32, e)) return -1;
    snprintf(path, sizeof path, "%.1200s/optimizer.safetensors", dir);
    if (vkl_adamw_state_save(t->opt, t->ctx, t->np, path, e)) return -1;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "vklora-vae-train-state");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", sj->step);
    cJSON_AddNumberToObject(j, "seconds", sj->seconds);
    cJSON_AddNumberToObject(j, "params", t->np);
    cJSON_AddNumberToObject(j, "size", t->c->size);
    cJSON_AddNumberToObject(j, "batch", t->c->batch);
    cJSON_AddStringToObject(j, "loss", vkl_vae_loss_name(t->c->loss));
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->c->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    return vkl_train_state_json_save(dir, j, sj->it, e);
}

/* Whole or not at all, latest moved only once it is (vkl_train_state_commit). */
static int save_state(run *t, int step, double seconds, const vkl_ds_iter *it, vkl_err *e)
{
    state_job j = {t, step, seconds, it};
    return vkl_train_state_commit(t->state_dir, step, write_state, &j, e);
}

/* The newest state folder's path into dir; -1 (no message) when there is none. */
static int latest_state(const run *t, char *dir, size_t n)
{
    char path[1200], name[64] = "";
    snprintf(path, sizeof path, "%.1100s/latest", t->state_dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(name, sizeof name, f)) name[0] = 0;
    fclose(f);
    name[strcspn(name, "\n")] = 0;
    if (!name[0] || strchr(name, '/')) return -1;
    snprintf(dir, n, "%.1100s/%.60s", t->state_dir, name);
    return 0;
}

/* state.json of dir: step, seconds and the data iterator; checks that the
 * run is the same one (image size, batch, seed, loss). */
static int load_state_json(run *t, const char *dir, int *step, double *seconds, vkl_ds_iter *it, vkl_err *e)
{
    char path[1300];
    snprintf(path, sizeof path, "%.1200s/state.json", dir);
    char *text = NULL;
    if (vkl_read_text_file(path, 1 << 20, &text, NULL, e)) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *fmt = cJSON_GetObjectItem(j, "format"), *st = cJSON_GetObjectItem(j, "step");
    const cJSON *np = cJSON_GetObjectItem(j, "params"), *data = cJSON_GetObjectItem(j, "data");
    const cJSON *sz = cJSON_GetObjectItem(j, "size"), *bt = cJSON_GetObjectItem(j, "batch");
    const cJSON *ls = cJSON_GetObjectItem(j, "loss"), *sd = cJSON_GetObjectItem(j, "seed");
    const cJSON *sec = cJSON_GetObjectItem(j, "seconds");
    int rc = 0;
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->c->seed);
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "vklora-vae-train-state") || !cJSON_IsNumber(st) ||
        !cJSON_IsNumber(np) || !cJSON_IsObject(data) || !cJSON_IsNumber(sz) || !cJSON_IsNumber(bt) ||
        !cJSON_IsString(ls) || !cJSON_IsString(sd))
        rc = vkl_fail(e, "%s is not a vklora VAE training state", path);
    else if (np->valueint != t->np)
        rc = vkl_fail(e, "%s holds %d tensors, this VAE has %d", path, np->valueint, t->np);
    else if (sz->valueint != t->c->size || bt->valueint != t->c->batch || strcmp(ls->valuestring, vkl_vae_loss_name(t->c->loss)) ||
             strcmp(sd->valuestring, seed))
        rc = vkl_fail(e, "%s was saved with --size %d --batch %d --loss %s --seed %s; resume with the same values "
                         "(this run has --size %d --batch %d --loss %s --seed %s)",
                      path, sz->valueint, bt->valueint, ls->valuestring, sd->valuestring, t->c->size, t->c->batch,
                      vkl_vae_loss_name(t->c->loss), seed);
    if (!rc) {
        *step = st->valueint;
        *seconds = cJSON_IsNumber(sec) ? sec->valuedouble : 0;
        char *dj = cJSON_PrintUnformatted(data);
        rc = dj ? vkl_ds_iter_restore(it, dj, e) : vkl_fail(e, "out of host memory");
        free(dj);
        if (rc) vkl_err_prefix(e, "%s: ", path);
    }
    cJSON_Delete(j);
    return rc;
}

static int load_moments(run *t, const char *dir, vkl_err *e)
{
    char path[1300];
    snprintf(path, sizeof path, "%.1200s/optimizer.safetensors", dir);
    return vkl_adamw_state_load(t->opt, t->ctx, t->np, path, e);
}

static int load_images(run *t, vkl_err *e)
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

static int open_model(run *t, const char *resume_dir, vkl_err *e)
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

static void run_free(run *t)
{
    vkl_adamw_free(t->opt);
    free(t->params);
    free(t->images);
    vkl_dataset_free(t->ds);
    vkl_weights_free(t->w);
}

int vkl_vae_train_run(vkl_ctx *ctx, const vkl_vae_train_config *c, vkl_vae_train_progress_fn progress, void *user,
                      vkl_vae_train_result *res, vkl_err *e)
{
    run t;
    memset(&t, 0, sizeof t);
    t.ctx = ctx;
    t.c = c;
    vkl_ds_iter it;
    memset(&it, 0, sizeof it);
    vkl_vae_train_step *s = NULL;
    FILE *csv = NULL;
    float *batch = NULL, *eps = NULL;
    int rc = -1;
    if (res) memset(res, 0, sizeof *res);
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
    snprintf(t.state_dir, sizeof t.state_dir, "%.1000s/state", c->output);
    char log_path[1100], resume_dir[1200];
    snprintf(log_path, sizeof log_path, "%.1000s/train_log.csv", c->output);
    int exists = is_dir(c->output);
    if (!exists && access(c->output, F_OK) == 0) return vkl_fail(e, "-o %s exists and is not a folder", c->output);
    if (c->resume) {
        if (latest_state(&t, resume_dir, sizeof resume_dir))
            return vkl_fail(e, "--resume: %s holds no training state (%s/latest)", c->output, t.state_dir);
    } else if (exists && !dir_empty(c->output)) {
        if (!c->force)
            return vkl_fail(e, "%s exists; --force starts over in it, --resume continues its training", c->output);
        vkl_err e2;
        vkl_dir_remove(t.state_dir, &e2);
        unlink(log_path);
    }
    if (vkl_mkdir_p(c->output)) return vkl_fail(e, "cannot create %s: %s", c->output, strerror(errno));
    if (open_model(&t, c->resume ? resume_dir : NULL, e)) goto done;
    t.vae.cfg = &t.cfg;
    t.vae.w = t.w;
    int f = 1 << (t.cfg.n_levels - 1);
    if (c->size % f) {
        vkl_fail(e, "--size %d is not a multiple of the VAE's down-sampling factor %d (%d levels)", c->size, f,
                 t.cfg.n_levels);
        goto done;
    }
    vkl_dataset_opts dopt;
    vkl_dataset_opts_default(&dopt);
    dopt.images_dir = c->images;
    dopt.resolution = c->size;
    dopt.bucket = 0;
    dopt.batch_size = c->batch;
    dopt.flip = 1;
    dopt.seed = c->seed;
    dopt.default_caption = "";
    if (vkl_dataset_open(&dopt, &t.ds, e)) goto done;
    if (t.ds->samples_per_epoch < c->batch) {
        vkl_fail(e, "%s: %d images (with repeats) are fewer than one batch of %d; lower --batch", c->images,
                 t.ds->samples_per_epoch, c->batch);
        goto done;
    }
    if (load_images(&t, e) || vkl_vae_train_params(&t.vae, &t.params, &t.np, e)) goto done;
    vkl_adamw_opts ao;
    vkl_adamw_opts_default(&ao);
    ao.lr = c->lr;
    ao.weight_decay = c->weight_decay;
    ao.max_grad_norm = c->max_grad_norm;
    if (!(t.opt = vkl_adamw_new(ctx, t.params, t.np, NULL, &ao, e))) goto done;
    if (vkl_ds_iter_init(&it, t.ds, e)) goto done;
    int step = 0;
    double seconds0 = 0;
    if (c->resume && (load_state_json(&t, resume_dir, &step, &seconds0, &it, e) || load_moments(&t, resume_dir, e)))
        goto done;
    vkl_vae_train_opts so = {c->loss, c->kl_weight, t.opt};
    if (vkl_vae_train_step_new(ctx, &t.vae, c->batch, c->size, c->size, &so, &s, e)) goto done;
    size_t per = (size_t)3 * c->size * c->size, neps = vkl_vae_train_step_eps_count(s);
    batch = malloc(sizeof(float) * per * c->batch);
    eps = malloc(sizeof(float) * neps);
    if (!batch || !eps) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    double logged_seconds; /* the VAE log restarts its seconds per session */
    if (step && vkl_train_log_cut(log_path, step, &logged_seconds, e)) goto done;
    csv = fopen(log_path, step ? "a" : "w");
    if (!csv) {
        vkl_fail(e, "cannot write %s: %s", log_path, strerror(errno));
        goto done;
    }
    if (!step) fprintf(csv, "step,loss,rec,kl,lr,seconds\n");
    fflush(csv);
    vkl_lr_schedule sched = {VKL_LR_CONSTANT, c->lr, c->warmup, c->steps, 0};
    int first = step, bad_run = 0;
    double t0 = now_s();
    while (step < c->steps && !vkl_vae_train_interrupt) {
        const vkl_ds_sample *smp;
        int cnt, bucket;
        uint32_t epoch;
        if (vkl_ds_iter_next(&it, &smp, &cnt, &bucket, &epoch, e)) goto done;
        if (cnt != c->batch) continue; /* the short tail of an epoch is dropped, as in `vklora train` */
        int S = c->size;
        for (int b = 0; b < cnt; b++) {
            const float *src = t.images + per * (size_t)smp[b].image;
            float *dst = batch + per * b;
            if (!smp[b].flip) {
                memcpy(dst, src, sizeof(float) * per);
                continue;
            }
            for (size_t row = 0; row < (size_t)3 * S; row++)
                for (int x = 0; x < S; x++) dst[row * S + x] = src[row * S + S - 1 - x];
        }
        vkl_rng r;
        vkl_rng_init(&r, c->seed, STREAM_EPS + (uint64_t)step);
        vkl_rng_normal(&r, eps, neps);
        float lr = vkl_lr_at(&sched, step), gn = 0;
        vkl_vae_losses L;
        int skipped = 0;
        if (vkl_vae_train_step_run(s, batch, eps, step + 1, lr, &L, e) || vkl_adamw_result(t.opt, &gn, &skipped, e))
            goto done;
        step++;
        if (skipped) {
            vkl_log(VKL_LOG_WARN, "step %d: the gradient was not finite; the update was skipped", step);
            if (++bad_run >= 10) {
                vkl_fail(e, "10 steps in a row had non-finite gradients; stopping (try a lower --lr)");
                goto done;
            }
        } else {
            bad_run = 0;
        }
        double el = now_s() - t0;
        fprintf(csv, "%d,%.7g,%.7g,%.7g,%.7g,%.3f\n", step, L.loss, L.rec, L.kl, lr, seconds0 + el);
        fflush(csv);
        if (progress) {
            vkl_vae_train_report rep = {step, first, c->steps, L, lr, gn, skipped, el};
            progress(user, &rep);
        }
        if (c->save_every && step % c->save_every == 0 && step < c->steps) {
            if (save_state(&t, step, seconds0 + now_s() - t0, &it, e) || write_output(&t, NULL, e)) goto done;
        }
        /* tests stand in for Ctrl-C at an exact step */
        if (c->interrupt_at == step) vkl_vae_train_interrupt = 1;
    }
    double el = now_s() - t0;
    if (res) {
        res->steps = step;
        res->images = t.ds->nimages;
        res->seconds_per_step = step > first ? el / (step - first) : 0;
    }
    if (save_state(&t, step, seconds0 + el, &it, e)) goto done;
    if (vkl_vae_train_interrupt && step < c->steps) {
        vkl_fail(e, "interrupted at step %d; the state is in %s (continue with --resume)", step, t.state_dir);
        rc = 1;
        goto done;
    }
    if (write_output(&t, res, e)) goto done;
    rc = 0;
done:
    if (csv) fclose(csv);
    free(batch);
    free(eps);
    vkl_vae_train_step_free(s);
    vkl_ds_iter_free(&it);
    run_free(&t);
    return rc;
}
