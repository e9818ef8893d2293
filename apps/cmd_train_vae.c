/* vklora train-vae: an SD-architecture VAE (diffusers AutoencoderKL) from an
 * image folder. */
#include "app.h"
#include "progress.h"

#include "train/vae_trainer.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: vklora train-vae --images DIR (--init VAE_DIR | --config CONFIG.json) -o OUT_DIR [options]\n"
    "  --size N (32)          images are resized (area) and centre-cropped to N x N\n"
    "  --batch N (16)         --steps N (1000)   --lr X (1e-3, AdamW, constant)   --warmup N (0)\n"
    "  --loss l1|mse (l1)     reconstruction loss, mean over pixels and channels\n"
    "  --kl-weight W (1e-6)   weight of KL(N(mean, var) || N(0, 1)), mean over latent elements\n"
    "  --weight-decay X (0)   --max-grad-norm X (1; 0: no clipping)\n"
    "  --seed S (0)           initial weights (--config), batch order, flips and posterior noise\n"
    "  --save-every N (0)     write OUT_DIR and the state every N steps (the state also on Ctrl-C)\n"
    "  --resume               continue the training saved in OUT_DIR/state exactly\n"
    "  --dtype f32|f16 (f32)  of the written weights     --force: start over in an existing OUT_DIR\n"
    "  --quiet\n"
    "--init starts from a diffusers VAE folder; --config is a diffusers AutoencoderKL config.json\n"
    "giving the architecture, initialised at random from the seed. Images are flipped horizontally\n"
    "at random. Writes OUT_DIR as a diffusers VAE folder (config.json with scaling_factor = 1/std of\n"
    "the posterior means over the image set, diffusion_pytorch_model.safetensors), train_log.csv\n"
    "(step, loss, rec, kl, lr, seconds) and state/ (for --resume). Prints the reconstruction PSNR.\n";

static void on_sigint(int sig)
{
    (void)sig;
    vkl_vae_train_request_stop();
}

static void on_step(void *user, const vkl_vae_train_report *r)
{
    vkl_progress *bar = user;
    char extra[160];
    /* the bar's rate counts this session's steps only */
    bar->total = r->total - r->first_step;
    snprintf(extra, sizeof extra, "step %d/%d loss %.5f rec %.5f kl %.3f lr %.2e%s", r->step, r->total, r->losses.loss,
             r->losses.rec, r->losses.kl, r->lr, r->skipped ? " SKIPPED" : "");
    vkl_progress_update(bar, r->step - r->first_step, extra);
}

static int parse_int(const char *opt, const char *v, int lo, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > 1000000000L) {
        fprintf(stderr, "vklora train-vae: %s needs an integer of at least %d, got '%s'\n", opt, lo, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int parse_float(const char *opt, const char *v, float *out)
{
    char *end;
    errno = 0;
    float x = strtof(v, &end);
    if (errno || end == v || *end || !(x >= 0) || x > 1e30f) {
        fprintf(stderr, "vklora train-vae: %s needs a number of at least 0, got '%s'\n", opt, v);
        return -1;
    }
    *out = x;
    return 0;
}

int vkl_cmd_train_vae(int argc, char **argv)
{
    vkl_vae_train_config c;
    vkl_vae_train_config_default(&c);
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(k, "--resume")) c.resume = 1;
        else if (!strcmp(k, "--force")) c.force = 1;
        else if (!strcmp(k, "--quiet") || !strcmp(k, "-q")) quiet = 1;
        else {
            static const char *valued[] = {"--images", "--init", "--config", "-o", "--output", "--size", "--batch",
                                           "--steps", "--lr", "--warmup", "--loss", "--kl-weight", "--weight-decay",
                                           "--max-grad-norm", "--seed", "--save-every", "--dtype"};
            int known = 0;
            for (size_t n = 0; n < sizeof valued / sizeof *valued; n++) known |= !strcmp(k, valued[n]);
            if (!known) {
                fprintf(stderr, "vklora train-vae: unknown option '%s'\n%s", k, usage_text);
                return 2;
            }
            if (i + 1 >= argc) {
                fprintf(stderr, "vklora train-vae: %s needs a value\n", k);
                return 2;
            }
            const char *v = argv[++i];
            int bad = 0;
            if (!strcmp(k, "--images")) c.images = v;
            else if (!strcmp(k, "--init")) c.init = v;
            else if (!strcmp(k, "--config")) c.config = v;
            else if (!strcmp(k, "-o") || !strcmp(k, "--output")) c.output = v;
            else if (!strcmp(k, "--size")) bad = parse_int(k, v, 1, &c.size);
            else if (!strcmp(k, "--batch")) bad = parse_int(k, v, 1, &c.batch);
            else if (!strcmp(k, "--steps")) bad = parse_int(k, v, 1, &c.steps);
            else if (!strcmp(k, "--warmup")) bad = parse_int(k, v, 0, &c.warmup);
            else if (!strcmp(k, "--save-every")) bad = parse_int(k, v, 0, &c.save_every);
            else if (!strcmp(k, "--lr")) bad = parse_float(k, v, &c.lr);
            else if (!strcmp(k, "--kl-weight")) bad = parse_float(k, v, &c.kl_weight);
            else if (!strcmp(k, "--weight-decay")) bad = parse_float(k, v, &c.weight_decay);
            else if (!strcmp(k, "--max-grad-norm")) bad = parse_float(k, v, &c.max_grad_norm);
            else if (!strcmp(k, "--seed")) {
                char *end;
                errno = 0;
                unsigned long long s = strtoull(v, &end, 10);
                if (errno || end == v || *end || v[0] == '-') {
                    fprintf(stderr, "vklora train-vae: --seed needs a non-negative integer, got '%s'\n", v);
                    bad = 1;
                }
                c.seed = s;
            } else if (!strcmp(k, "--loss")) {
                if (vkl_vae_loss_parse(v, &c.loss)) {
                    fprintf(stderr, "vklora train-vae: --loss must be l1 or mse, got '%s'\n", v);
                    bad = 1;
                }
            } else if (!strcmp(k, "--dtype")) {
                if (!strcmp(v, "f32")) c.dtype = VKL_F32;
                else if (!strcmp(v, "f16")) c.dtype = VKL_F16;
                else {
                    fprintf(stderr, "vklora train-vae: --dtype must be f32 or f16, got '%s'\n", v);
                    bad = 1;
                }
            }
            if (bad) return 2;
        }
    }
    if (!c.images || !c.output) {
        fprintf(stderr, "vklora train-vae: --images and -o are required\n%s", usage_text);
        return 2;
    }
    if (!c.resume && !c.init == !c.config) {
        fprintf(stderr, "vklora train-vae: give exactly one of --init VAE_DIR and --config CONFIG.json\n");
        return 2;
    }
    if (c.init && c.config) {
        fprintf(stderr, "vklora train-vae: --init and --config exclude each other\n");
        return 2;
    }
    /* the tests' stand-in for Ctrl-C at an exact step */
    const char *at = getenv("VKLORA_TRAIN_INTERRUPT_AT");
    if (at) c.interrupt_at = atoi(at);
    if (c.resume && c.force) {
        fprintf(stderr, "vklora train-vae: --resume and --force exclude each other\n");
        return 2;
    }
    if (quiet) vkl_log_set_level(VKL_LOG_WARN);
    vkl_err e = {{0}};
    vkl_ctx *ctx = NULL;
    if (vkl_ctx_create(NULL, &ctx, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    signal(SIGINT, on_sigint);
    vkl_progress bar;
    vkl_progress_begin(&bar, "train-vae", c.steps, quiet);
    vkl_vae_train_result res;
    int rc = vkl_vae_train_run(ctx, &c, on_step, &bar, &res, &e);
    vkl_progress_end(&bar);
    int status = 0;
    if (rc < 0) {
        vkl_app_print_error("train-vae", e.msg);
        status = 1;
    } else if (rc == 1) {
        fprintf(stderr, "vklora train-vae: %s\n", e.msg);
        status = 130;
    } else {
        printf("reconstruction PSNR %.2f dB over %d images at %dx%d; scaling_factor %.6g\n", res.psnr, res.images,
               c.size, c.size, res.scaling_factor);
        if (res.seconds_per_step > 0) printf("%d steps, %.2f s per step\n", res.steps, res.seconds_per_step);
        if (!quiet) printf("wrote %s (config.json, diffusion_pytorch_model.safetensors, train_log.csv)\n", c.output);
    }
    vkl_ctx_destroy(ctx);
    return status;
}
