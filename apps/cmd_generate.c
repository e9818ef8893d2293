/* vklora generate: txt2img and img2img with a Stable Diffusion checkpoint. */
#include "app.h"
#include "quant.h"
#include "gen_image.h"
#include "gen_lora.h"
#include "lora_args.h"
#include "sd/sd_source.h"
#include "grid.h"
#include "progress.h"

#include "io/image.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "sd/gen_params.h"
#include "sd/pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *usage_text =
    "usage: vklora generate --model PATH --prompt TEXT [options]\n"
    "  --model PATH           single-file .safetensors checkpoint or diffusers folder\n"
    "                         (default: $VKLORA_MODEL, else vklora's own model, assets/vklora-emoji)\n"
    "  --prompt TEXT          prompt (AUTOMATIC1111 emphasis syntax: (word:1.2), [word])\n"
    "  --negative TEXT        negative prompt (none: the empty prompt; SDXL: zero conditioning, as diffusers)\n"
    "  --steps N              sampling steps (20)\n"
    "  --cfg X                guidance scale (7)\n"
    "  --sampler NAME         euler (default) | euler_a | ddim | dpmpp_2m | heun | lms | dpmpp_2m_sde | dpmpp_sde,\n"
    "                         or A1111 names: Euler, \"Euler a\", DDIM, \"DPM++ 2M\", Heun, LMS, \"DPM++ 2M SDE\",\n"
    "                         \"DPM++ SDE\" (a schedule may follow: \"DPM++ 2M SDE Karras\", dpmpp_sde_karras)\n"
    "                         heun and dpmpp_sde evaluate the UNet twice per step; the SDE samplers are a1111 only\n"
    "  --schedule NAME        normal (default) | karras | exponential | sgm_uniform (the last two: a1111 only)\n"
    "  --sampler-convention C a1111 (default) | diffusers\n"
    "  --seed N               seed (default or -1: random, printed and stored in the PNG)\n"
    "  --width W --height H   image size, multiples of 8 (default: the model's native size)\n"
    "  --batch N              images per run (1)\n"
    "  --init-image FILE      img2img input; --strength X (0.75) how much to change it\n"
    "  --clip-skip N          1 = last text-encoder layer (default), 2 = penultimate (SDXL: 1 = the\n"
    "                         penultimate layers it is conditioned on, 2 = one earlier)\n"
    "  --original-size WxH    SDXL size conditioning: original size (default: the image size),\n"
    "  --target-size WxH      target size (the image size), --crop-left N --crop-top N (0)\n"
    "  --model-config FILE    the original yaml of a single-file checkpoint (default: <name>.yaml beside it)\n"
    "  --tokenizer PATH       CLIP vocabulary (needed by single-file checkpoints; or $VKLORA_CLIP_VOCAB)\n"
    "  --weights f16|f32|nf4|nf4dq  storage of the model's matrices on the device (f16; also --base-dtype);\n"
    "                         nf4 quantises the UNet's linear layers to 4-bit NormalFloat (QLoRA), nf4dq\n"
    "                         their block scales too (double quantisation)\n"
    "  --init-noise FILE      initial noise from tensor 'latents' (and 'step_noise') of a .safetensors\n"
    "  --save-latents FILE    write the final latents (tensor 'latents') to a .safetensors\n"
    "  -o, --output FILE      output PNG (numbered for batches: out.png, out-1.png, ...)\n"
    "  --lora FILE[:W[:W_TE]] apply an adapter (repeatable; W for the UNet, W_TE for the text encoder)\n"
    "  --lora-dir DIR         where <lora:NAME:W> in the prompt finds NAME.safetensors\n"
    "  --lowvram              keep only the network in use on the device (text encoder, UNet, VAE in turn),\n"
    "                         re-reading each from the model file when its turn comes (slower per image)\n"
    "  --vae-tiling MODE      auto (default: tiles when the decode would not fit comfortably) | on | off\n"
    "  --vae-tile N           tile side in latent pixels (64 = 512 image pixels); --vae-tile-overlap N (16)\n"
    "                         tiles see only their part of the image: results differ slightly from untiled\n"
    "  --merge-lora           fold the adapters into the weights (fastest steps) instead of run-time\n"
    "  --rank-at-inference R  cut every adapter to its first R rank rows (a DyLoRA file serves every rank\n"
    "                         that is a multiple of its unit; alpha kept, so the scale is alpha/R)\n"
    "  --lora-sweep FILE:W1,W2,...  render the same seed at each weight of FILE into one labelled grid\n"
    "  --quiet                no progress output\n";

typedef struct gen_args {
    const char *loras[VKL_GEN_MAX_LORAS];
    int nloras, merge_lora;
    const char *lora_dir, *sweep;
    const char *model, *prompt, *negative, *sampler, *schedule, *convention, *init_image, *tokenizer, *init_noise,
        *save_latents, *output, *weights, *vae_tiling, *model_config;
    int lowvram, vae_tile, vae_tile_overlap, rank_at;
    int steps, width, height, batch, clip_skip, quiet, have_seed;
    int orig_w, orig_h, target_w, target_h, crop_left, crop_top; /* SDXL size conditioning, 0: the image's */
    float cfg, strength;
    uint64_t seed;
} gen_args;

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !*s || *end || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* "WxH" with both in [1, 65536] */
static int parse_size(const char *s, int *w, int *h)
{
    char buf[64];
    const char *x = strchr(s, 'x');
    if (!x || x == s || (size_t)(x - s) >= sizeof buf) return -1;
    snprintf(buf, sizeof buf, "%.*s", (int)(x - s), s);
    return parse_int(buf, 1, 65536, w) || parse_int(x + 1, 1, 65536, h) ? -1 : 0;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (!*s || *end || !isfinite(v)) return -1;
    *out = (float)v;
    return 0;
}

/* What can be checked before the model is loaded (which can take minutes):
 * the output's folder and format, the other files named, value ranges. */
static int precheck(const gen_args *a)
{
    const char *dot = strrchr(a->output, '.'), *slash = strrchr(a->output, '/');
    if (!dot || (slash && dot < slash) || strcasecmp(dot, ".png")) {
        fprintf(stderr, "vklora generate: -o %s: vklora writes PNG images (the format that carries the generation "
                        "parameters); name the output *.png\n", a->output);
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - a->output) + (slash == a->output) : 1,
             slash ? a->output : ".");
    struct stat st;
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "vklora generate: -o %s: the folder %s does not exist\n", a->output, dir);
        return 1;
    }
    if (access(dir, W_OK)) {
        fprintf(stderr, "vklora generate: -o %s: the folder %s is not writable\n", a->output, dir);
        return 1;
    }
    if (!stat(a->output, &st) && S_ISDIR(st.st_mode)) {
        fprintf(stderr, "vklora generate: -o %s is a folder; name a .png file\n", a->output);
        return 2;
    }
    const char *files[][2] = {{"--model", a->model},           {"--init-image", a->init_image},
                              {"--tokenizer", a->tokenizer},   {"--init-noise", a->init_noise},
                              {"--model-config", a->model_config},
                              {"--lora-dir", a->lora_dir}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (files[i][1] && stat(files[i][1], &st)) {
            fprintf(stderr, "vklora generate: %s %s: %s\n", files[i][0], files[i][1], strerror(errno));
            return 1;
        }
    if (a->cfg < 0 || a->cfg > 100) {
        fprintf(stderr, "vklora generate: --cfg %g is outside [0, 100]\n", a->cfg);
        return 2;
    }
    if (a->strength < 0 || a->strength > 1) {
        fprintf(stderr, "vklora generate: --strength %g is outside [0, 1]\n", a->strength);
        return 2;
    }
    return 0;
}

static int parse_args(int argc, char **argv, gen_args *a)
{
    memset(a, 0, sizeof *a);
    a->steps = 20;
    a->width = a->height = 0; /* the model's native size */
    a->batch = 1;
    a->clip_skip = 1;
    a->cfg = 7.0f;
    a->strength = 0.75f;
    a->output = "out.png";
    a->negative = NULL; /* none: "" for SD 1.x/2.x, zeros for SDXL (force_zeros_for_empty_prompt) */
    a->model = getenv("VKLORA_MODEL");
    a->vae_tile = 64;
    a->vae_tile_overlap = 16;
    a->quiet = vkl_app_quiet;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--quiet") || !strcmp(k, "-q")) {
            a->quiet = 1;
            continue;
        }
        if (!strcmp(k, "--merge-lora")) {
            a->merge_lora = 1;
            continue;
        }
        if (!strcmp(k, "--lowvram")) {
            a->lowvram = 1;
            continue;
        }
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            fputs(usage_text, stdout);
            exit(0);
        }
        if (!v) {
            fprintf(stderr, "vklora generate: %s needs a value\n", k);
            return -1;
        }
        int bad = 0;
        i++;
        if (!strcmp(k, "--model")) a->model = v;
        else if (!strcmp(k, "--prompt")) a->prompt = v;
        else if (!strcmp(k, "--negative") || !strcmp(k, "--negative-prompt")) a->negative = v;
        else if (!strcmp(k, "--sampler")) a->sampler = v;
        else if (!strcmp(k, "--schedule")) a->schedule = v;
        else if (!strcmp(k, "--sampler-convention")) a->convention = v;
        else if (!strcmp(k, "--init-image")) a->init_image = v;
        else if (!strcmp(k, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(k, "--model-config")) a->model_config = v;
        else if (!strcmp(k, "--init-noise")) a->init_noise = v;
        else if (!strcmp(k, "--save-latents")) a->save_latents = v;
        else if (!strcmp(k, "--weights") || !strcmp(k, "--base-dtype")) a->weights = v;
        else if (!strcmp(k, "--lora-dir")) a->lora_dir = v;
        else if (!strcmp(k, "--lora-sweep")) a->sweep = v;
        else if (!strcmp(k, "--vae-tiling")) {
            a->vae_tiling = v;
            bad = strcmp(v, "auto") && strcmp(v, "on") && strcmp(v, "off");
        }
        else if (!strcmp(k, "--rank-at-inference")) bad = parse_int(v, 1, 100000, &a->rank_at);
        else if (!strcmp(k, "--vae-tile")) bad = parse_int(v, 1, 4096, &a->vae_tile);
        else if (!strcmp(k, "--vae-tile-overlap")) bad = parse_int(v, 0, 4095, &a->vae_tile_overlap);
        else if (!strcmp(k, "--lora")) {
            if (a->nloras == VKL_GEN_MAX_LORAS) {
                fprintf(stderr, "vklora generate: at most %d --lora options\n", VKL_GEN_MAX_LORAS);
                return -1;
            }
            a->loras[a->nloras++] = v;
        }
        else if (!strcmp(k, "-o") || !strcmp(k, "--output")) a->output = v;
        else if (!strcmp(k, "--steps")) bad = parse_int(v, 1, 1000, &a->steps);
        else if (!strcmp(k, "--width")) bad = parse_int(v, 8, 16384, &a->width);
        else if (!strcmp(k, "--height")) bad = parse_int(v, 8, 16384, &a->height);
        else if (!strcmp(k, "--batch")) bad = parse_int(v, 1, 64, &a->batch);
        else if (!strcmp(k, "--clip-skip")) bad = parse_int(v, 1, 12, &a->clip_skip);
        else if (!strcmp(k, "--original-size")) bad = parse_size(v, &a->orig_w, &a->orig_h);
        else if (!strcmp(k, "--target-size")) bad = parse_size(v, &a->target_w, &a->target_h);
        else if (!strcmp(k, "--crop-left")) bad = parse_int(v, 0, 65536, &a->crop_left);
        else if (!strcmp(k, "--crop-top")) bad = parse_int(v, 0, 65536, &a->crop_top);
        else if (!strcmp(k, "--cfg")) bad = parse_float(v, &a->cfg);
        else if (!strcmp(k, "--strength")) bad = parse_float(v, &a->strength);
        else if (!strcmp(k, "--seed")) {
            /* -1 asks for a random seed, as AUTOMATIC1111's */
            char *end;
            errno = 0;
            unsigned long long s = strtoull(v, &end, 10);
            bad = errno || !*v || *end || v[0] == '-' || v[0] == '+';
            if (!strcmp(v, "-1")) bad = 0;
            else a->seed = s, a->have_seed = 1;
        } else {
            fprintf(stderr, "vklora generate: unknown option '%s'\n%s", k, usage_text);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "vklora generate: bad value '%s' for %s\n", v, k);
            return -1;
        }
    }
    if (!a->model) a->model = vkl_default_model_path();
    if (!a->model) {
        fprintf(stderr, "vklora generate: no model given and vklora's own model (assets/vklora-emoji) was not found. "
                        "Pass --model PATH (a single-file .safetensors SD 1.x/2.x checkpoint or a diffusers folder) "
                        "or set VKLORA_MODEL.\n");
        return -1;
    }
    if (!a->prompt) {
        fprintf(stderr, "vklora generate: --prompt is required\n");
        return -1;
    }
    if (a->vae_tile_overlap >= a->vae_tile) {
        fprintf(stderr, "vklora generate: --vae-tile-overlap (%d) must be below --vae-tile (%d)\n", a->vae_tile_overlap,
                a->vae_tile);
        return -1;
    }
    return 0;
}

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

/* --lora-sweep FILE:W1,W2,...: one image per weight, same seed, one grid. The
 * model is loaded once; only the adapter's per-rank scales change between images. */
/* "W1,W2,...": up to 64 finite weights into w (may be NULL), their count into *n. */
static int sweep_list(const char *weights, float *w, int *n, vkl_err *e)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", weights);
    int k = 0;
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        float x;
        if (vkl_app_parse_weight(p, &x))
            return vkl_fail(e, "--lora-sweep: '%s' in '%s' is not a weight (a finite number)", p, weights);
        if (k == 64) return vkl_fail(e, "--lora-sweep: at most 64 weights");
        if (w) w[k] = x;
        k++;
    }
    if (!k) return vkl_fail(e, "--lora-sweep: '%s' is not a list of weights", weights);
    if (n) *n = k;
    return 0;
}

static int sweep(vkl_sd_model *m, vkl_gen_lora *gl, int idx, const char *weights, vkl_gen_opts *o, const char *out,
                 int quiet, vkl_err *e)
{
    float w[64];
    const char *lab[64];
    char labbuf[64][32];
    int n = 0;
    if (sweep_list(weights, w, &n, e)) return -1;
    for (int i = 0; i < n; i++) {
        snprintf(labbuf[i], sizeof labbuf[i], "%g", w[i]);
        lab[i] = labbuf[i];
    }
    vkl_image imgs[64];
    int made = 0, rc = 0;
    double sampling = 0, switching = 0, peak = 0;
    vkl_progress *bar = o->progress_user;
    for (int i = 0; i < n && !rc; i++) {
        double t0 = vkl_progress_now();
        rc = vkl_gen_lora_set_weight(gl, idx, w[i], w[i], e);
        double sw = vkl_progress_now() - t0;
        vkl_gen_result r;
        /* each cell is a run of its own: its own bar, rate and ETA */
        char label[48];
        snprintf(label, sizeof label, "weight %g (%d/%d)", w[i], i + 1, n);
        vkl_progress_begin(bar, label, bar->total, quiet);
        if (!rc) rc = vkl_sd_generate(m, o, &r, e);
        vkl_progress_end(bar);
        if (!rc) {
            rc = vkl_gen_image_u8(r.images, 0, r.width, r.height, &imgs[made], e);
            if (!rc) made++;
            sampling += r.seconds_sampling;
            switching += sw;
            if (r.peak_device_bytes > peak) peak = (double)r.peak_device_bytes;
            vkl_gen_result_free(&r);
        }
    }
    if (!rc && !quiet)
        fprintf(stderr, "seed %llu; %d weights: switching %.4f s in all, sampling %.2f s (%.2f s per image); peak "
                "device memory %.1f MiB\n", (unsigned long long)o->seed, made, switching, sampling,
                made ? sampling / made : 0, peak / 1048576.0);
    vkl_image grid;
    if (!rc) rc = vkl_grid_row(imgs, lab, made, &grid, e);
    for (int i = 0; i < made; i++) vkl_image_free(&imgs[i]);
    if (rc) return -1;
    char text[1024];
    snprintf(text, sizeof text, "%s\nLoRA sweep: %s at %s, seed %llu", o->prompt, gl->name[idx], weights,
             (unsigned long long)o->seed);
    vkl_png_text t = {"parameters", text};
    rc = vkl_png_write(out, &grid, &t, 1, e);
    vkl_image_free(&grid);
    if (!rc && !quiet) printf("wrote %s\n", out);
    return rc;
}

/* The image size against the model's VAE factor, from its configuration
 * alone (the weights are not read). */
static int size_check(const gen_args *a, vkl_err *e)
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
    gen_args a;
    if (parse_args(argc, argv, &a)) return 2;
    int pre = precheck(&a);
    if (pre) return pre;
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
    if (a.vae_tiling)
        o.vae_tiling.mode = !strcmp(a.vae_tiling, "on")    ? VKL_VAE_TILING_ON
                            : !strcmp(a.vae_tiling, "off") ? VKL_VAE_TILING_OFF
                                                           : VKL_VAE_TILING_AUTO;
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
    for (int i = 0; i < a.nloras; i++)
        if (vkl_gen_lora_add_spec(&gl, a.loras[i], &e)) goto done;
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
    if (sweep_weights && sweep_list(sweep_weights, NULL, NULL, &e)) goto done;
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
    if (a.weights) {
        if (vkl_app_base_dtype(a.weights, &mo.weight_dtype)) {
            vkl_fail(&e, "--weights takes f16, f32, nf4 or nf4dq, not '%s'", a.weights);
            goto done;
        }
        if (vkl_dtype_is_quant(mo.weight_dtype) && a.merge_lora) {
            vkl_fail(&e, "--merge-lora needs f16 or f32 weights: adapters are not merged into an NF4 base");
            goto done;
        }
    }
    /* merged adapters must not be rounded to half precision with the weights */
    if (a.merge_lora && !a.weights) mo.weight_dtype = VKL_F32;
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
        rc = sweep(m, &gl, sweep_idx, sweep_weights, &o, a.output, a.quiet, &e) ? 1 : 0;
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
