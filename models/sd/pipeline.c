#include "sd/pipeline.h"

#include "ops.h"
#include "rng.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

void vkl_gen_opts_default(vkl_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->prompt = "";
    o->negative = "";
    o->width = o->height = 512;
    o->batch = 1;
    o->cfg = 7.0f;
    o->clip_skip = 1;
    o->strength = 0.75f;
    vkl_vae_tiling_default(&o->vae_tiling);
    vkl_sampler_config_default(&o->sampler);
}

void vkl_gen_time_ids(const vkl_gen_opts *o, float ids[6])
{
    ids[0] = (float)(o->original_height > 0 ? o->original_height : o->height);
    ids[1] = (float)(o->original_width > 0 ? o->original_width : o->width);
    ids[2] = (float)o->crop_top;
    ids[3] = (float)o->crop_left;
    ids[4] = (float)(o->target_height > 0 ? o->target_height : o->height);
    ids[5] = (float)(o->target_width > 0 ? o->target_width : o->width);
}

void vkl_gen_result_free(vkl_gen_result *r)
{
    free(r->latents);
    free(r->images);
    memset(r, 0, sizeof *r);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int vae_factor(const vkl_sd_model *m) { return 1 << (m->cfg->vae.n_levels - 1); }

int vkl_sd_encode_image(vkl_sd_model *m, const float *images, int batch, int H, int W, float *latents, vkl_err *e)
{
    const vkl_sd_vae_config *vc = &m->cfg->vae;
    int f = vae_factor(m), C = vc->latent_channels, h = H / f, w = W / f;
    if (vkl_sd_model_acquire(m, VKL_SD_PART_VAE, e)) return -1;
    int rc = -1;
    vkl_graph *g = vkl_graph_new(m->ctx);
    vkl_tensor *ti = vkl_tensor_new(m->ctx, VKL_F32, 4, (int64_t[]){batch, vc->in_channels, H, W}, e);
    float *mom = malloc(sizeof(float) * (size_t)batch * 2 * C * h * w);
    if (!ti || !mom || vkl_tensor_upload(m->ctx, ti, images, VKL_F32, e)) goto done;
    vkl_tensor *t = vkl_vae_encode(g, &m->vae, ti);
    vkl_graph_keep(g, t);
    if (vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(m->ctx, t, mom, VKL_F32, e)) goto done;
    /* moments are [mean; logvar] along channels: keep the mean */
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < C * h * w; i++)
            latents[(size_t)b * C * h * w + i] = mom[(size_t)b * 2 * C * h * w + i] * vc->scaling_factor;
    rc = 0;
done:
    if (rc) vkl_err_prefix(e, "VAE encoder: ");
    free(mom);
    vkl_graph_free(g);
    vkl_tensor_free(ti);
    return rc;
}

/* The UNet for one step: inputs uploaded, graph replayed, outputs read back. */
typedef struct unet_runner {
    vkl_sd_model *m;
    vkl_graph *g;
    vkl_tensor *sample, *t, *ctx, *out;
    vkl_tensor *text_embeds, *time_ids; /* SDXL added conditioning, NULL otherwise */
    int rows; /* UNet batch: 2*batch with guidance, batch without */
    size_t per; /* floats per latent image */
    float *x2, *t2;
} unet_runner;

static void runner_free(unet_runner *u)
{
    vkl_graph_free(u->g);
    vkl_tensor_free(u->sample);
    vkl_tensor_free(u->t);
    vkl_tensor_free(u->ctx);
    vkl_tensor_free(u->text_embeds);
    vkl_tensor_free(u->time_ids);
    free(u->x2);
    free(u->t2);
}

/* pooled [rows, P] and time_ids [rows, 6] are used when the UNet has added
 * conditioning (SDXL) */
static int runner_init(unet_runner *u, vkl_sd_model *m, int rows, int h, int w, const float *ctx, int L,
                       const float *pooled, const float *time_ids, vkl_err *e)
{
    memset(u, 0, sizeof *u);
    u->m = m;
    u->rows = rows;
    const vkl_sd_unet_config *uc = &m->cfg->unet;
    u->per = (size_t)uc->in_channels * h * w;
    int D = uc->cross_attention_dim, P = vkl_sd_pooled_width(m);
    u->sample = vkl_tensor_new(m->ctx, VKL_F32, 4, (int64_t[]){rows, uc->in_channels, h, w}, e);
    u->t = u->sample ? vkl_tensor_new(m->ctx, VKL_F32, 1, (int64_t[]){rows}, e) : NULL;
    u->ctx = u->t ? vkl_tensor_new(m->ctx, VKL_F32, 3, (int64_t[]){rows, L, D}, e) : NULL;
    u->x2 = malloc(sizeof(float) * u->per * rows);
    u->t2 = malloc(sizeof(float) * rows);
    if (!u->ctx || !u->x2 || !u->t2) return -1;
    if (vkl_tensor_upload(m->ctx, u->ctx, ctx, VKL_F32, e)) return -1;
    vkl_unet_added add = {NULL, NULL};
    if (uc->add_text_time) {
        u->text_embeds = vkl_tensor_new(m->ctx, VKL_F32, 2, (int64_t[]){rows, P}, e);
        u->time_ids = u->text_embeds ? vkl_tensor_new(m->ctx, VKL_F32, 2, (int64_t[]){rows, 6}, e) : NULL;
        if (!u->time_ids || vkl_tensor_upload(m->ctx, u->text_embeds, pooled, VKL_F32, e) ||
            vkl_tensor_upload(m->ctx, u->time_ids, time_ids, VKL_F32, e))
            return -1;
        add = (vkl_unet_added){u->text_embeds, u->time_ids};
    }
    u->g = vkl_graph_new(m->ctx);
    u->out = vkl_unet_forward_added(u->g, &m->unet, 0, u->sample, u->t, u->ctx, &add, NULL);
    vkl_graph_keep(u->g, u->out);
    if (vkl_graph_plan(u->g, e)) {
        vkl_err_prefix(e, "UNet: ");
        return -1;
    }
    return 0;
}

/* x_in for every row (the same latents for the uncond and cond halves) -> model output. */
static int runner_run(unet_runner *u, const float *x_in, float timestep, float *out, vkl_err *e)
{
    for (int r = 0; r < u->rows; r++) u->t2[r] = timestep;
    if (vkl_tensor_upload(u->m->ctx, u->sample, x_in, VKL_F32, e) || vkl_tensor_upload(u->m->ctx, u->t, u->t2, VKL_F32, e) ||
        vkl_graph_run(u->g, e) || vkl_tensor_download(u->m->ctx, u->out, out, VKL_F32, e)) {
        vkl_err_prefix(e, "UNet: ");
        return -1;
    }
    return 0;
}

int vkl_sd_generate(vkl_sd_model *m, const vkl_gen_opts *o, vkl_gen_result *r, vkl_err *e)
{
    memset(r, 0, sizeof *r);
    int f = vae_factor(m);
    if (o->width <= 0 || o->height <= 0 || o->width % f || o->height % f)
        return vkl_fail(e, "width and height must be positive multiples of %d (got %dx%d)", f, o->width, o->height);
    int down = 1 << (m->cfg->unet.n_levels - 1);
    int h = o->height / f, w = o->width / f;
    if (h % down || w % down)
        return vkl_fail(e, "this model needs width and height that are multiples of %d (got %dx%d)", f * down, o->width,
                        o->height);
    if (o->batch < 1 || o->batch > 64) return vkl_fail(e, "batch must be 1 to 64, not %d", o->batch);
    if (o->init_image && !(o->strength > 0 && o->strength <= 1))
        return vkl_fail(e, "img2img strength must be in (0, 1], not %g", o->strength);
    vkl_mem_reset_peak(m->ctx);
    int B = o->batch, guide = o->cfg > 1.0f;
    int C = m->cfg->unet.in_channels;
    size_t per = (size_t)C * h * w, n = per * B;
    int D = vkl_sd_context_width(m), P = vkl_sd_pooled_width(m);
    if (D != m->cfg->unet.cross_attention_dim)
        return vkl_fail(e, "text encoder width %d differs from the UNet's context width %d", D,
                        m->cfg->unet.cross_attention_dim);
    if (m->cfg->unet.add_text_time && !P)
        return vkl_fail(e, "the UNet takes a pooled text embedding but the model has no second text encoder");
    double t0 = now_s();
    float *cond = NULL, *uncond = NULL, *ctx = NULL, *x = NULL, *x_in = NULL, *xin_rows = NULL, *out = NULL, *noise = NULL;
    float *pc = NULL, *pu = NULL, *pooled = NULL, *time_ids = NULL;
    int rc = -1, nc = 0, nu = 0;
    vkl_sampler *s = NULL;
    unet_runner u;
    memset(&u, 0, sizeof u);
    if (vkl_sd_encode_prompt_pooled(m, o->prompt, o->clip_skip, o->plain_prompt, 1, &cond, &pc, &nc, e)) goto done;
    int zero_uncond = guide && !o->negative && m->force_zeros_for_empty_prompt;
    if (guide && !zero_uncond) {
        if (vkl_sd_encode_prompt_pooled(m, o->negative ? o->negative : "", o->clip_skip, o->plain_prompt, nc, &uncond,
                                        &pu, &nu, e))
            goto done;
        if (nu > nc) { /* the negative prompt is longer: pad the prompt to match */
            free(cond);
            free(pc);
            pc = NULL;
            if (vkl_sd_encode_prompt_pooled(m, o->prompt, o->clip_skip, o->plain_prompt, nu, &cond, &pc, &nc, e))
                goto done;
        }
    } else if (zero_uncond) { /* force_zeros_for_empty_prompt: zeros, not the encoding of "" */
        uncond = calloc((size_t)vkl_sd_text_tokens(m) * nc * D, sizeof(float));
        pu = calloc(P ? (size_t)P : 1, sizeof(float));
        if (!uncond || !pu) goto oom;
    }
    int L = vkl_sd_text_tokens(m) * nc, rows = guide ? 2 * B : B;
    ctx = malloc(sizeof(float) * (size_t)rows * L * D);
    pooled = malloc(sizeof(float) * (size_t)rows * (P ? P : 1));
    time_ids = malloc(sizeof(float) * (size_t)rows * 6);
    if (!ctx || !pooled || !time_ids) goto oom;
    float tid[6];
    vkl_gen_time_ids(o, tid);
    for (int b = 0; b < B; b++) {
        if (guide) memcpy(ctx + (size_t)b * L * D, uncond, sizeof(float) * (size_t)L * D);
        memcpy(ctx + (size_t)((guide ? B : 0) + b) * L * D, cond, sizeof(float) * (size_t)L * D);
        if (P) {
            if (guide) memcpy(pooled + (size_t)b * P, pu, sizeof(float) * (size_t)P);
            memcpy(pooled + (size_t)((guide ? B : 0) + b) * P, pc, sizeof(float) * (size_t)P);
        }
    }
    for (int r = 0; r < rows; r++) memcpy(time_ids + (size_t)r * 6, tid, sizeof tid);
    vkl_sd_model_release(m, VKL_SD_PART_TE);
    r->seconds_text = now_s() - t0;
    t0 = now_s();

    vkl_sampler_config sc = o->sampler;
    if (vkl_beta_params_from_sd(&m->cfg->sched, &sc.betas, e)) goto done;
    sc.prediction = m->cfg->sched.prediction;
    sc.steps_offset = m->cfg->sched.steps_offset;
    /* the model's scheduler config chooses the spacing unless the caller did
     * (the values of vkl_timestep_spacing) */
    if (sc.spacing == VKL_SPACING_DEFAULT) sc.spacing = (vkl_timestep_spacing)m->cfg->sched.timestep_spacing;
    sc.set_alpha_to_one = m->cfg->sched.set_alpha_to_one;
    sc.noise_seed = o->seed; /* the SDE samplers' Brownian noise */
    if (vkl_sampler_create(&sc, n, &s, e)) goto done;

    x = malloc(sizeof(float) * n);
    x_in = malloc(sizeof(float) * n);
    xin_rows = malloc(sizeof(float) * per * rows);
    out = malloc(sizeof(float) * per * rows);
    noise = malloc(sizeof(float) * n);
    if (!x || !x_in || !xin_rows || !out || !noise) goto oom;
    vkl_rng rng_init, rng_step;
    vkl_rng_init(&rng_init, o->seed, VKL_RNG_STREAM_INIT);
    vkl_rng_init(&rng_step, o->seed, VKL_RNG_STREAM_STEP);
    if (o->init_noise) memcpy(x, o->init_noise, sizeof(float) * n);
    else vkl_rng_normal(&rng_init, x, n);
    if (o->init_image) {
        float *lat = malloc(sizeof(float) * n);
        if (!lat) goto oom;
        if (vkl_sd_encode_image(m, o->init_image, B, o->height, o->width, lat, e)) {
            free(lat);
            goto done;
        }
        vkl_sd_model_release(m, VKL_SD_PART_VAE);
        int skip = vkl_sampler_steps(s) - (int)(o->strength * vkl_sampler_steps(s) + 0.5f);
        if (skip >= vkl_sampler_steps(s)) skip = vkl_sampler_steps(s) - 1;
        if (vkl_sampler_start_from(s, skip, x, lat, e)) {
            free(lat);
            goto done;
        }
        free(lat);
    } else {
        vkl_sampler_init_noise(s, x);
    }
    if (vkl_sd_model_acquire(m, VKL_SD_PART_UNET, e) || runner_init(&u, m, rows, h, w, ctx, L, pooled, time_ids, e)) goto done;
    int steps = vkl_sampler_steps(s);
    while (!vkl_sampler_done(s)) {
        int k = vkl_sampler_step_index(s);
        float t, sigma;
        vkl_sampler_model_input(s, x, x_in, &t, &sigma);
        for (int half = 0; half < (guide ? 2 : 1); half++) memcpy(xin_rows + half * n, x_in, sizeof(float) * n);
        if (runner_run(&u, xin_rows, t, out, e)) goto done;
        if (vkl_sampler_needs_noise(s)) {
            if (o->step_noise) memcpy(noise, o->step_noise + (size_t)k * n, sizeof(float) * n);
            else vkl_rng_normal(&rng_step, noise, n);
        }
        int src = guide ? vkl_sampler_step_cfg(s, x, out, out + n, o->cfg, noise, e)
                        : vkl_sampler_step(s, x, out, noise, e);
        if (src) goto done;
        if (o->progress && vkl_sampler_step_index(s) > k && o->progress(o->progress_user, k + 1, steps)) {
            vkl_fail(e, "cancelled");
            goto done;
        }
        if (o->preview && vkl_sampler_step_index(s) > k &&
            o->preview(o->preview_user, k + 1, steps, vkl_sampler_denoised(s), B, C, h, w)) {
            vkl_fail(e, "cancelled");
            goto done;
        }
    }
    r->seconds_sampling = now_s() - t0;
    vkl_mem_stats ms;
    vkl_mem_get_stats(m->ctx, &ms);
    r->peak_device_bytes = ms.total_peak;
    runner_free(&u);
    memset(&u, 0, sizeof u);
    vkl_sd_model_release(m, VKL_SD_PART_UNET);
    t0 = now_s();
    r->images = malloc(sizeof(float) * (size_t)B * 3 * o->height * o->width);
    if (!r->images) goto oom;
    if (vkl_sd_decode_ex(m, x, B, h, w, &o->vae_tiling, r->images, &r->vae_tiles, e)) goto done;
    r->seconds_vae = now_s() - t0;
    vkl_mem_get_stats(m->ctx, &ms);
    if (ms.total_peak > r->peak_device_bytes) r->peak_device_bytes = ms.total_peak;
    r->latents = x;
    x = NULL;
    r->batch = B;
    r->width = o->width;
    r->height = o->height;
    rc = 0;
    goto done;
oom:
    vkl_fail(e, "out of host memory");
done:
    runner_free(&u);
    /* a lowvram model leaves nothing behind, whichever phase failed */
    vkl_sd_model_release(m, VKL_SD_PART_ALL);
    vkl_sampler_free(s);
    free(cond); free(uncond); free(ctx); free(x); free(x_in); free(xin_rows); free(out); free(noise);
    free(pc); free(pu); free(pooled); free(time_ids);
    if (rc) {
        free(r->images);
        r->images = NULL;
    }
    return rc;
}
