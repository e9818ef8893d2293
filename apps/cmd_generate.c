/* vklora generate: txt2img and img2img with a Stable Diffusion checkpoint. */
#include "app.h"
#include "gen_args.h"
#include "gen_image.h"
#include "gen_lora.h"
#include "gen_sweep.h"
#include "sd/sd_source.h"
#include "progress.h"

#include "io/image.h"
#include "io/safetensors.h"
#include "sd/gen_params.h"
#include "sd/pipeline.h"

#include <stdlib.h>
#include <string.h>

static int progress_cb(void *user, int step, int steps)
{
    (void)steps;
    vkl_progress_update(user, step, NULL);
    return 0;
}

/* out.png -> out-1.png for the i-th image of a batch */
static void numbered(const char *path, int i, char *buf, size_t n)
{
    if (i == 0) {
        snprintf(buf, n, "%s", path);
        return;
    }
    const char *dot = strrchr(path, '.'), *slash = strrchr(path, '/');
    if (!dot || (slash && dot < slash)) snprintf(buf, n, "%s-%d", path, i);
    else snprintf(buf, n, "%.*s-%d%s", (int)(dot - path), path, i, dot);
}

static float *read_noise(const char *path, const char *name, size_t want, int required, vkl_err *e)
{
    vkl_st_file *f = NULL;
    if (vkl_st_open(path, &f, e)) return NULL;
    const vkl_st_tensor *t = vkl_st_find(f, name);
    float *x = NULL;
    if (!t) {
        if (required) vkl_fail(e, "%s has no tensor '%s'", path, name);
    } else if (t->nelem != want) {
        vkl_fail(e, "%s: tensor '%s' has %llu elements, this run needs %zu", path, name, (unsigned long long)t->nelem,
                 want);
    } else if ((x = malloc(sizeof(float) * want)) && vkl_st_read(f, t, VKL_F32, x, e)) {
        free(x);
        x = NULL;
    }
    vkl_st_close(f);
    return x;
}

/* The image size against the model's VAE factor, from its configuration
 * alone (the weights are not read). */
static int size_check(const vkl_app_gen_args *a, vkl_err *e)
{
    if (!a->width && !a->height) return 0;
    vkl_sd_source *src = NULL;
    vkl_sd_source_opts so = {a->model_config, 0};
    if (vkl_sd_source_open(a->model, &so, &src, e)) return -1;
    int f = 1 << (vkl_sd_source_config(src)->vae.n_levels - 1);
    vkl_sd_source_close(src);
    if (a->width % f) return vkl_fail(e, "--width %d: this model's VAE needs a multiple of %d", a->width, f);
    if (a->height % f) return vkl_fail(e, "--height %d: this model's VAE needs a multiple of %d", a->height, f);
    return 0;
}

int vkl_cmd_generate(int argc, char **argv)
{
    vkl_app_gen_args a;
    int status = vkl_app_gen_args_parse(argc, argv, &a);
    if (status >= 0) return status;
    vkl_err e = {{0}};
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.prompt = a.prompt;
    o.negative = a.negative;
    o.width = a.width;
    o.height = a.height;
    o.batch = a.batch;
    o.cfg = a.cfg;
    o.clip_skip = a.clip_skip;
    o.original_width = a.orig_w;
    o.original_height = a.orig_h;
    o.target_width = a.target_w;
    o.target_height = a.target_h;
    o.crop_left = a.crop_left;
    o.crop_top = a.crop_top;
    o.strength = a.strength;
    o.sampler.steps = a.steps;
    o.vae_tiling.tile = a.vae_tile;
    o.vae_tiling.overlap = a.vae_tile_overlap;
    o.vae_tiling.mode = a.vae_tiling;
    if (!a.have_seed) {
        FILE *r = fopen("/dev/urandom", "rb");
        if (!r || fread(&a.seed, sizeof a.seed, 1, r) != 1) a.seed = (uint64_t)vkl_progress_now();
        if (r) fclose(r);
        a.seed %= 4294967296ull; /* A1111 shows 32-bit seeds */
    }
    o.seed = a.seed;
    if ((a.sampler && vkl_sampler_config_set_name(&o.sampler, a.sampler, &e)) ||
        (a.schedule && vkl_schedule_kind_parse(a.schedule, &o.sampler.schedule, &e)) ||
        (a.convention && vkl_convention_parse(a.convention, &o.sampler.convention, &e))) {
        fprintf(stderr, "vklora generate: %s\n", e.msg);
        return 2;
    }
    { /* sampler, schedule and convention together, before the model loads (one
       * step: the step count's limits depend on the model's noise schedule) */
        vkl_sampler_config pc = o.sampler;
        pc.steps = 1;
        vkl_sampler *probe = NULL;
        if (vkl_sampler_create(&pc, 1, &probe, &e)) {
            fprintf(stderr, "vklora generate: %s\n", e.msg);
            return 2;
        }
        vkl_sampler_free(probe);
    }
    vkl_ctx *c = NULL;
    vkl_sd_model *m = NULL;
    vkl_gen_result r;
    memset(&r, 0, sizeof r);
    float *init_noise = NULL, *step_noise = NULL, *init_image = NULL;
    char *clean_prompt = NULL;
    vkl_gen_lora gl;
    memset(&gl, 0, sizeof gl);
    int rc = 1;
    vkl_progress prog;
    /* adapters named on the command line and in the prompt: parsed, and their
     * files found, before anything is loaded */
    int sweep_idx = -1;
    char sweep_file[2048] = "";
    const char *sweep_weights = NULL;
    if (!(clean_prompt = vkl_gen_lora_from_prompt(&gl, a.prompt, a.lora_dir, &e))) goto done;
    o.prompt = clean_prompt;
    for (int i = 0; i < a.loras.n; i++)
        if (vkl_gen_lora_add_spec(&gl, a.loras.v[i], &e)) goto done;
    if (a.sweep) {
        snprintf(sweep_file, sizeof sweep_file, "%s", a.sweep);
        char *colon = strrchr(sweep_file, ':');
        if (!colon) {
            vkl_fail(&e, "--lora-sweep takes FILE:W1,W2,...");
            goto done;
        }
        *colon = 0;
        sweep_weights = a.sweep + (colon - sweep_file) + 1;
        sweep_idx = gl.n;
        if (vkl_gen_lora_add_spec(&gl, sweep_file, &e)) goto done;
    }
    if (sweep_weights && vkl_app_sweep_list(sweep_weights, NULL, NULL, &e)) goto done;
    if (a.rank_at && !gl.n) {
        vkl_fail(&e, "--rank-at-inference cuts the adapters; no --lora or <lora:...> is given");
        goto done;
    }
    gl.rank_at = a.rank_at;
    if (size_check(&a, &e)) goto done;
    if (vkl_ctx_create(NULL, &c, &e)) goto done;
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.tokenizer = a.tokenizer;
    mo.yaml = a.model_config;
    mo.lowvram = a.lowvram;
    if (a.weights.given) mo.weight_dtype = a.weights.dt;
    /* merged adapters must not be rounded to half precision with the weights */
    else if (a.merge_lora) mo.weight_dtype = VKL_F32;
    double t0 = vkl_progress_now();
    if (vkl_sd_model_load(c, a.model, &mo, &m, &e)) goto done;
    double load_s = vkl_progress_now() - t0;
    if (!a.quiet)
        fprintf(stderr, "loaded %s (%s) in %.1f s on %s\n", a.model, vkl_sd_family_name(m->cfg->family), load_s,
                vkl_ctx_caps(c)->name);
    {
        /* no size given: the model's native one (UNet sample size x VAE factor) */
        int native = m->cfg->unet.sample_size * (1 << (m->cfg->vae.n_levels - 1));
        if (!a.width) a.width = native > 0 ? native : 512;
        if (!a.height) a.height = native > 0 ? native : 512;
        o.width = a.width;
        o.height = a.height;
    }
    if (gl.n) {
        t0 = vkl_progress_now();
        if (vkl_gen_lora_apply(&gl, m, a.merge_lora && sweep_idx < 0, &e)) goto done;
        if (!a.quiet)
            fprintf(stderr, "%d adapter(s) %s in %.2f s\n", gl.n, gl.ad.merged ? "merged" : "applied at run time",
                    vkl_progress_now() - t0);
    }
    int f = 1 << (m->cfg->vae.n_levels - 1);
    size_t n = (size_t)a.batch * m->cfg->unet.in_channels * (a.height / f) * (a.width / f);
    if (a.init_noise) {
        if (!(init_noise = read_noise(a.init_noise, "latents", n, 1, &e))) goto done;
        step_noise = read_noise(a.init_noise, "step_noise", n * (size_t)a.steps, 0, &e);
        if (!step_noise && e.msg[0] && strstr(e.msg, "elements")) goto done;
        e.msg[0] = 0;
        o.init_noise = init_noise;
        o.step_noise = step_noise;
    }
    if (a.init_image) {
        vkl_image im, rs;
        memset(&rs, 0, sizeof rs);
        if (vkl_image_read_file(a.init_image, 3, VKL_PIX_F32, &im, NULL, &e)) goto done;
        int rcr = vkl_image_resize_cover(&im, a.width, a.height, VKL_RESIZE_LANCZOS3, &rs, &e);
        vkl_image_free(&im);
        if (rcr) goto done;
        size_t hw = (size_t)a.width * a.height;
        init_image = malloc(sizeof(float) * 3 * hw * a.batch);
        if (!init_image) {
            vkl_image_free(&rs);
            vkl_fail(&e, "out of host memory");
            goto done;
        }
        const float *px = vkl_image_f32(&rs);
        for (int b = 0; b < a.batch; b++)
            for (size_t i = 0; i < hw; i++)
                for (int ch = 0; ch < 3; ch++) init_image[(size_t)b * 3 * hw + ch * hw + i] = px[i * 3 + ch] * 2.0f - 1.0f;
        vkl_image_free(&rs);
        o.init_image = init_image;
    }
    vkl_progress_begin(&prog, "sampling", a.init_image ? (int)(a.strength * a.steps + 0.5f) : a.steps, a.quiet);
    o.progress = progress_cb;
    o.progress_user = &prog;
    if (sweep_idx >= 0) {
        rc = vkl_app_sweep(m, &gl, sweep_idx, sweep_weights, &o, a.output, a.quiet, &e) ? 1 : 0;
        goto done;
    }
    if (vkl_sd_generate(m, &o, &r, &e)) {
        vkl_progress_end(&prog);
        goto done;
    }
    vkl_progress_end(&prog);
    if (a.save_latents) {
        vkl_st_writer *w = vkl_st_writer_new();
        int64_t shape[4] = {a.batch, m->cfg->unet.in_channels, a.height / f, a.width / f};
        int bad = !w || vkl_st_writer_add(w, "latents", VKL_F32, 4, shape, r.latents, &e) ||
                  vkl_st_writer_meta(w, "prompt", a.prompt, &e) || vkl_st_writer_finish(w, a.save_latents, &e);
        vkl_st_writer_free(w);
        if (bad) goto done;
    }
    /* PNGs with the generation parameters as AUTOMATIC1111 writes them */
    char model_name[256];
    vkl_gen_model_name(a.model, model_name, sizeof model_name);
    for (int b = 0; b < a.batch; b++) {
        vkl_image im;
        if (vkl_gen_image_u8(r.images, b, a.width, a.height, &im, &e)) goto done;
        vkl_gen_settings gs = {0};
        gs.prompt = a.prompt; /* as given, <lora:...> included, as A1111 records it */
        gs.negative_prompt = a.negative ? a.negative : "";
        gs.steps = a.steps;
        gs.sampler = vkl_sampler_kind_a1111_name(o.sampler.kind);
        gs.schedule_type = vkl_schedule_kind_a1111_name(o.sampler.schedule);
        gs.cfg_scale = a.cfg;
        gs.seed = a.seed; /* one seed for the whole batch */
        gs.width = a.width;
        gs.height = a.height;
        gs.model = model_name;
        gs.denoising_strength = a.init_image ? a.strength : -1;
        gs.clip_skip = a.clip_skip;
        gs.version = "vklora";
        char *text = NULL;
        char path[1024];
        numbered(a.output, b, path, sizeof path);
        int bad = vkl_gen_infotext(&gs, &gl, &text, &e);
        if (!bad) {
            vkl_png_text t = {"parameters", text};
            bad = vkl_png_write(path, &im, &t, 1, &e);
        }
        free(text);
        vkl_image_free(&im);
        if (bad) goto done;
        if (!a.quiet) printf("wrote %s\n", path);
    }
    if (!a.quiet) {
        char tiles[32] = "";
        if (r.vae_tiles > 1) snprintf(tiles, sizeof tiles, " (%d tiles)", r.vae_tiles);
        fprintf(stderr, "seed %llu; text %.2f s, sampling %.2f s (%.2f s/step), VAE %.2f s%s; peak device memory %.1f MiB%s\n",
                (unsigned long long)a.seed, r.seconds_text, r.seconds_sampling, r.seconds_sampling / a.steps,
                r.seconds_vae, tiles, r.peak_device_bytes / 1048576.0, a.lowvram ? " (lowvram)" : "");
    }
    rc = 0;
done:
    if (rc) vkl_app_print_error("generate", e.msg);
    vkl_gen_result_free(&r);
    vkl_gen_lora_free(&gl, m);
    free(clean_prompt);
    free(init_noise);
    free(step_noise);
    free(init_image);
    vkl_sd_model_free(m);
    vkl_ctx_destroy(c);
    return rc;
}
