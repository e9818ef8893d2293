/* vklora train: a style LoRA from an image folder. */
#include "app.h"
#include "args.h"
#include "dist_app.h"
#include "loss_plot.h"
#include "progress.h"

#include "train/sd_trainer.h"

#include <cjson/cJSON.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: vklora train --model PATH --images DIR -o ADAPTER.safetensors [options]\n"
    "  --resolution N (512; SDXL 1024)   --rank R (16)   --alpha A (16)   --lr X (1e-4)   --batch N (1)\n"
    "  --max-steps N | --epochs N (default: 1 epoch)   --seed N (0)   --network lora|locon|loha|lokr|dora|full   --train-ff\n"
    "  --network full: every UNet weight (and the text encoder's with --train-te) trained in f32 from a\n"
    "    diffusers folder (e.g. vklora init-model --configs); -o names the output model folder;\n"
    "    --ema-decay D (0: none) writes the weights' moving average; --save-precision fp16|float\n"
    "  --network-conv (loha, lokr, dora, dylora: also the resnet 3x3 convolutions, as locon)   --lokr-factor N (-1)\n"
    "  --network dylora: DyLoRA (kohya's networks/dylora.py): each step draws one rank b, a multiple of\n"
    "    --dylora-unit U (1) up to --rank (also --network-dim); every module runs its first b rank rows at scale alpha/b\n"
    "    and trains the last U of them; the file at the full rank serves every such rank (generate\n"
    "    --rank-at-inference R; merge --lora FILE --rank-at-inference R -o OUT writes the cut file)\n"
    "  --grad-accum N (micro-batches per optimiser step; steps count optimiser steps)\n"
    "  --train-te (adapters on the text encoder too, lora_te_ names)   --te-lr X (default: --lr)\n"
    "  --lr-schedule constant (default)|linear|cosine|cosine_with_restarts  --warmup N (0)  --cycles N\n"
    "  --loraplus-ratio X (1)   --weight-decay X (0.01)   --max-grad-norm X (1)   --min-snr-gamma G (0: off)\n"
    "  --noise-offset X (0)\n"
    "  --optimizer adamw|adamw8bit (8-bit blockwise moments, as bitsandbytes' AdamW8bit; also --optimizer-type)\n"
    "  --caption TEXT (for images without a caption file)   --caption-ext .txt   --trigger WORD\n"
    "  --shuffle-caption   --keep-tokens N   --caption-dropout-rate P   --caption-tag-dropout-rate P\n"
    "  --flip   --no-bucket   --bucket-upscale   --checkpointing   --clip-skip N   --tokenizer PATH\n"
    "  --model-config FILE.yaml (the original yaml of a single-file model; default <name>.yaml beside it)\n"
    "  --mixed-precision no|fp16 (fp16: f16 activations and dynamic loss scaling where the device has\n"
    "    fp16 arithmetic; f32 elsewhere)   --weights f16|f32|nf4|nf4dq (frozen weights, f16; nf4: QLoRA's\n"
    "    4-bit UNet linear layers and convolutions; nf4dq: with double-quantised scales)\n"
    "  --cache-latents-to-disk (keep VAE latents beside the images, keyed by content; default: memory only)\n"
    "  --cache-text-embeddings-to-disk (SDXL, frozen text encoders, fixed captions: keep each image's caption\n"
    "    states beside it, keyed by the encoders' weights and the caption; also\n"
    "    --cache-text-encoder-outputs-to-disk, and kohya's cache_text_encoder_outputs_to_disk in --config)\n"
    "  --save-every N   --keep-last K   --sample-prompts FILE --sample-every N   --resume STATE_DIR\n"
    "  --force (replace an earlier run's ADAPTER, log and state folder; without it they are kept)\n"
    "  --config FILE (JSON or TOML with the same names, without dashes)   --quiet\n"
    "Writes ADAPTER (kohya format; LyCORIS keys and lycoris.kohya metadata for loha, lokr, dora)\n"
    "and beside it, named after it without .safetensors: NAME.json (settings), NAME.csv (loss per\n"
    "step), NAME.png (loss curve), NAME.state/ (for --resume), NAME-stepN.safetensors (--save-every),\n"
    "NAME.samples/. Ctrl-C saves the state and stops. --resume continues the run of that state: settings\n"
    "that define it (model, images, network, rank, batch, seed, ...) must match; others (lr, schedule,\n"
    "max-steps, ...) may change and are recorded in NAME.json. Relative paths in a --config file count\n"
    "from the file's folder.\n"
    "Several devices or machines: mpirun -np N vklora train ... (one device per rank; each optimiser step\n"
    "takes N x --batch x --grad-accum samples of one global order; rank 0 writes every file; a state\n"
    "resumes on another N when N x --grad-accum is the same; Ctrl-C or SIGTERM on any rank stops all).\n";

static void on_sigint(int sig)
{
    (void)sig;
    vkl_train_request_stop();
}

typedef struct {
    vkl_progress bar;
} run_state;

static void on_step(void *user, const vkl_train_report *r)
{
    run_state *s = user;
    s->bar.total = r->total;
    char extra[160];
    snprintf(extra, sizeof extra, "epoch %d loss %.4f (avg %.4f) lr %.2e mem %.0f MiB%s", r->epoch, r->loss, r->loss_avg,
             r->lr, r->device_bytes / 1048576.0, r->skipped ? " SKIPPED" : "");
    vkl_progress_update(&s->bar, r->step, extra);
}

/* After a failure (a lost device, a full disk, a diverged run): where the
 * run can go on from, when a state was saved. */
static void say_saved_state(const char *output)
{
    char stem[1100], path[1200], latest[64] = "";
    snprintf(stem, sizeof stem, "%s", output);
    size_t len = strlen(stem);
    if (len > 12 && !strcmp(stem + len - 12, ".safetensors")) stem[len - 12] = 0;
    snprintf(path, sizeof path, "%s.state/latest", stem);
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(latest, sizeof latest, f)) {
        latest[strcspn(latest, "\n")] = 0;
        fprintf(stderr, "vklora train: the last saved state is %s.state/%s: continue with --resume %s.state\n", stem,
                latest, stem);
    }
    fclose(f);
}

/* A setting of the run, by the option's name without its dashes: the same
 * names and checks a --config file has (vkl_train_config_set). */
static int set_setting(const char *cmd, const char *opt, const char *value, void *dest)
{
    vkl_err e = {{0}};
    if (!vkl_train_config_set(dest, opt + 2, value, &e)) return 0;
    fprintf(stderr, "vklora %s: %s '%s': %s\n", cmd, opt, value, e.msg);
    return 1;
}

static int read_config_file(const char *cmd, const char *opt, const char *value, void *dest)
{
    vkl_err e = {{0}};
    if (!vkl_train_config_read(dest, value, &e)) return 0;
    fprintf(stderr, "vklora %s: %s '%s': %s\n", cmd, opt, value, e.msg);
    return 1;
}

/* Flags that switch a setting on; --no-bucket and --bucket-upscale switch
 * one off, so they are read into flags of their own and applied after. */
#define SETTING(name) {name, NULL, VKL_ARG_CALL, c, .call = set_setting}
#define SWITCH(name, field) {name, NULL, VKL_ARG_FLAG, VKL_AS_INT(field), .help = NULL}

int vkl_cmd_train(int argc, char **argv)
{
    vkl_train_config config, *c = &config;
    vkl_train_config_default(c);
    c->quiet = vkl_app_quiet;
    vkl_err e = {{0}};
    int no_bucket = 0, bucket_upscale = 0;
    const vkl_arg table[] = {
        {"--output", "-o", VKL_ARG_CALL, c, .call = set_setting},
        {"--config", NULL, VKL_ARG_CALL, c, .call = read_config_file},
        SETTING("--model"), SETTING("--images"), SETTING("--tokenizer"), SETTING("--model-config"),
        SETTING("--caption-ext"), SETTING("--caption"), SETTING("--trigger"), SETTING("--lr-schedule"),
        SETTING("--sample-prompts"), SETTING("--resume"), SETTING("--network"), SETTING("--ema-decay"),
        SETTING("--save-precision"), SETTING("--lokr-factor"), SETTING("--resolution"), SETTING("--rank"),
        SETTING("--network-dim"), SETTING("--dylora-unit"), SETTING("--alpha"), SETTING("--lr"), SETTING("--te-lr"),
        SETTING("--grad-accum"), SETTING("--loraplus-ratio"), SETTING("--warmup"), SETTING("--cycles"),
        SETTING("--weight-decay"), SETTING("--max-grad-norm"), SETTING("--optimizer"), SETTING("--optimizer-type"),
        SETTING("--max-steps"), SETTING("--epochs"), SETTING("--batch"), SETTING("--seed"),
        SETTING("--min-snr-gamma"), SETTING("--noise-offset"), SETTING("--clip-skip"), SETTING("--save-every"),
        SETTING("--keep-last"), SETTING("--sample-every"), SETTING("--sample-steps"), SETTING("--keep-tokens"),
        SETTING("--caption-dropout-rate"), SETTING("--caption-tag-dropout-rate"), SETTING("--weights"),
        SETTING("--mixed-precision"),
        SWITCH("--shuffle-caption", &c->data.caption.shuffle), SWITCH("--flip", &c->data.flip),
        SWITCH("--checkpointing", &c->checkpointing), SWITCH("--train-ff", &c->train_ff),
        SWITCH("--train-te", &c->train_te), SWITCH("--network-conv", &c->network_conv),
        SWITCH("--cache-latents-to-disk", &c->cache_to_disk), SWITCH("--no-bucket", &no_bucket),
        SWITCH("--cache-text-embeddings-to-disk", &c->cache_te_to_disk),
        SWITCH("--cache-text-encoder-outputs-to-disk", &c->cache_te_to_disk),
        SWITCH("--bucket-upscale", &bucket_upscale), SWITCH("--force", &c->force),
        {"--quiet", "-q", VKL_ARG_FLAG, VKL_AS_INT(&c->quiet), .help = NULL},
    };
    int parsed = vkl_args_parse("train", table, (int)(sizeof table / sizeof *table), argc, argv, NULL);
    if (parsed == VKL_ARGS_HELP) {
        fputs(usage_text, stdout);
        vkl_train_config_free(c);
        return 0;
    }
    if (parsed) {
        vkl_train_config_free(c);
        return 2;
    }
    if (no_bucket) c->data.bucket = 0;
    if (bucket_upscale) c->data.bucket_no_upscale = 0;
    if (!c->model || !c->data.images_dir || !c->output) {
        fprintf(stderr, "vklora train: --model, --images and -o are required\n%s", usage_text);
        return 2;
    }
    if (c->quiet) vkl_log_set_level(VKL_LOG_WARN);
    c->dist = vkl_app_dist;
    int rank = vkl_app_dist ? vkl_app_dist->rank : 0;
    if (rank) c->quiet = 1; /* rank 0 reports for all */
    /* the tests' stand-ins for Ctrl-C and a kill at an exact step (under
     * mpirun on rank $VKLORA_TRAIN_HOOK_RANK only, default every rank) */
    const char *at = getenv("VKLORA_TRAIN_HOOK_RANK");
    int hooked = !at || atoi(at) == rank;
    if ((at = getenv("VKLORA_TRAIN_INTERRUPT_AT")) && hooked) c->interrupt_at = atoi(at);
    if ((at = getenv("VKLORA_TRAIN_KILL_AT")) && hooked) c->kill_at = atoi(at);
    vkl_ctx *ctx = NULL;
    if (vkl_ctx_create(NULL, &ctx, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    /* Ctrl-C, or a job scheduler's SIGTERM: on any rank, every rank stops
     * after the current step and rank 0 saves the state */
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    run_state s;
    memset(&s, 0, sizeof s);
    vkl_progress_begin(&s.bar, "training", c->max_steps, c->quiet);
    int rc = vkl_train_run(ctx, c, on_step, &s, &e);
    vkl_progress_end(&s.bar);
    int status = 0;
    if (rc < 0) {
        vkl_app_print_error("train", e.msg);
        if (!rank) say_saved_state(c->output);
        status = 1;
    } else if (rc == 1) {
        if (!rank) fprintf(stderr, "vklora train: %s\n", e.msg);
        status = 130;
    } else if (rc == 2) {
        if (!c->quiet && !rank) printf("%s is finished: nothing to do\n", c->output);
    } else if (!rank) {
        char stem[1100], plot[1120], csv[1120];
        snprintf(stem, sizeof stem, "%s", c->output);
        size_t len = strlen(stem);
        if (len > 12 && !strcmp(stem + len - 12, ".safetensors")) stem[len - 12] = 0;
        snprintf(plot, sizeof plot, "%s.png", stem);
        snprintf(csv, sizeof csv, "%s.csv", stem);
        if (vkl_loss_plot_csv(plot, csv, &e)) fprintf(stderr, "vklora train: %s\n", e.msg);
        if (!c->quiet) printf("wrote %s (loss log %s, curve %s)\n", c->output, csv, plot);
    }
    vkl_ctx_destroy(ctx);
    vkl_train_config_free(c);
    return status;
}
