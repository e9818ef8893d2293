/* vklora train-vae: an SD-architecture VAE (diffusers AutoencoderKL) from an
 * image folder. */
#include "app.h"
#include "args.h"
#include "progress.h"

#include "train/vae_trainer.h"

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

static int read_loss(const char *cmd, const char *opt, const char *v, void *dest)
{
    if (!vkl_vae_loss_parse(v, dest)) return 0;
    fprintf(stderr, "vklora %s: %s '%s': expected l1 or mse\n", cmd, opt, v);
    return 1;
}

int vkl_cmd_train_vae(int argc, char **argv)
{
    vkl_vae_train_config c;
    vkl_vae_train_config_default(&c);
    int quiet = 0, dti = c.dtype == VKL_F16;
    unsigned long long seed = c.seed;
    const float most = 1e30f; /* a float option's bound: any size a float holds well */
    const vkl_arg opts[] = {
        {"--images", NULL, VKL_ARG_STR, VKL_AS_STR(&c.images), .help = "DIR"},
        {"--init", NULL, VKL_ARG_STR, VKL_AS_STR(&c.init), .help = "VAE_DIR"},
        {"--config", NULL, VKL_ARG_STR, VKL_AS_STR(&c.config), .help = "CONFIG.json"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&c.output), .help = "OUT_DIR"},
        {"--size", NULL, VKL_ARG_INT, VKL_AS_INT(&c.size), 1, 1000000000, .help = "N"},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&c.batch), 1, 1000000000, .help = "N"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&c.steps), 1, 1000000000, .help = "N"},
        {"--warmup", NULL, VKL_ARG_INT, VKL_AS_INT(&c.warmup), 0, 1000000000, .help = "N"},
        {"--save-every", NULL, VKL_ARG_INT, VKL_AS_INT(&c.save_every), 0, 1000000000, .help = "N"},
        {"--lr", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&c.lr), 0, most, .help = "X"},
        {"--kl-weight", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&c.kl_weight), 0, most, .help = "X"},
        {"--weight-decay", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&c.weight_decay), 0, most, .help = "X"},
        {"--max-grad-norm", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&c.max_grad_norm), 0, most, .help = "X"},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&seed), .help = "S"},
        {"--loss", NULL, VKL_ARG_CALL, &c.loss, .call = read_loss, .help = "l1|mse"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f32|f16", .help = "T"},
        {"--resume", NULL, VKL_ARG_FLAG, VKL_AS_INT(&c.resume), .help = " continue OUT_DIR/state"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&c.force), .help = " start over in an existing OUT_DIR"},
        {"--quiet", "-q", VKL_ARG_FLAG, VKL_AS_INT(&quiet), .help = " no progress"},
    };
    int prc = vkl_args_parse("train-vae", opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (prc) {
        fputs(usage_text, prc == VKL_ARGS_HELP ? stdout : stderr);
        return prc == VKL_ARGS_HELP ? 0 : prc;
    }
    c.dtype = dti ? VKL_F16 : VKL_F32;
    c.seed = seed;
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
