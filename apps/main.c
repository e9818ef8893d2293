/* vklora command-line entry: global options, then one subcommand. */
#include "app.h"
#include "dist_app.h"
#include "vkl.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"generate", vkl_cmd_generate, "txt2img / img2img with a Stable Diffusion checkpoint (generate --help)"},
    {"train", vkl_cmd_train, "train a style LoRA from an image folder (train --help)"},
    {"train-vae", vkl_cmd_train_vae, "train an SD-architecture VAE (diffusers AutoencoderKL) from an image folder (train-vae --help)"},
    {"init-model", vkl_cmd_init_model, "write a checkpoint with random weights: init-model --family sd1.5 --random -o FILE"},
    {"devices", vkl_cmd_devices, "list Vulkan devices with their limits and features (--json)"},
    {"bench", vkl_cmd_bench, "benchmarks: bench gemm|unet|train-step|attention|conv2d|linear-lora|group-norm ..."},
    {"info", vkl_cmd_info, "describe a .safetensors file or an image (--json)"},
    {"convert", vkl_cmd_convert, "rewrite a LoRA adapter as kohya or PEFT: convert IN -o OUT --to kohya|peft"},
    {"lm", vkl_cmd_lm, "LLaMA-family text: lm generate --model DIR|FILE.gguf --prompt TEXT [--lora DIR[:W]]; lm train --model DIR --data FILE -o DIR; lm merge --model DIR --lora DIR -o DIR; lm convert --model DIR -o FILE.gguf --quant TYPE; lm lorahub --model DIR --adapters A,B --data FEW.jsonl -o DIR"},
    {"dataset", vkl_cmd_dataset, "make a training image folder: dataset emoji [--font FILE | --png-dir DIR] -o OUTDIR (dataset --help)"},
    {"tokenizer", vkl_cmd_tokenizer, "build a word-level tokenizer from captions: tokenizer build --captions DIR -o OUTDIR (tokenizer --help)"},
    {"grid", vkl_cmd_grid, "lay out images of one size in a grid: grid --columns N --scale S -o OUT.png IMAGE..."},
    {"plot", vkl_cmd_plot, "the loss curve of a training log: plot LOG.csv -o CURVE.png"},
    {"serve", vkl_cmd_serve, "an HTTP server with AUTOMATIC1111's API and a web page: serve --model M [--lora-dir D] (serve --help)"},
    {"lorahub", vkl_cmd_lorahub, "learn the mix of K image adapters on a few images: lorahub --model M --adapters A,B --images DIR -o OUT"},
    {"hyperlora", vkl_cmd_hyperlora, "research: a network that emits image adapters from a task description: hyperlora train|emit (hyperlora --help)"},
    {"merge", vkl_cmd_merge, "combine adapters: merge --lora A:0.7 --lora B:0.3 -o OUT [--rank R]; bake them: merge --model M --lora A -o OUT"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vklora [--device N|cpu|gpu|NAME] [--profile P] [--quiet] [--version] COMMAND [options]\n\n"
               "commands (each has --help):\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nenvironment: VKLORA_DEVICE, VKLORA_PROFILE (default, portable, nosubgroup, staging,\n"
               "binding=BYTES, alloc=BYTES, memory=BYTES), VKLORA_VALIDATION=1 (Khronos validation layer)\n"
               "data-parallel training: mpirun -np N vklora train|lm train ... (each rank one device: round-robin\n"
               "over the GPUs, or --device A,B,... one per local rank); VKLORA_DIST_TIMEOUT=SECONDS (1800)\n");
}

/* One error prefix for every command: the library's errors and warnings
 * read like the commands' own ("vklora merge: ..."), not "error: ...". */
static void app_log(vkl_log_level level, const char *message, void *user)
{
    const char *cmd = user;
    if (level == VKL_LOG_ERROR) fprintf(stderr, "vklora %s: %s\n", cmd, message);
    else if (level == VKL_LOG_WARN) fprintf(stderr, "vklora %s: warning: %s\n", cmd, message);
    else if (level == VKL_LOG_DEBUG) fprintf(stderr, "debug: %s\n", message);
    else fprintf(stderr, "%s\n", message);
}

int main(int argc, char **argv)
{
    int i = 1;
    const char *device = NULL;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) {
            device = argv[++i];
            /* "0,1": one entry per local rank under mpirun (vkl_app_dist_init) */
            char why[512];
            if (vkl_app_device_list_check(device, why, sizeof why)) {
                fprintf(stderr, "vklora: %s\n", why);
                return 2;
            }
            if (!strchr(device, ',')) vkl_ctx_default_device(device, "--device ");
        } else if (!strcmp(argv[i], "--profile") && i + 1 < argc) {
            setenv("VKLORA_PROFILE", argv[++i], 1);
        } else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q")) {
            vkl_log_set_level(VKL_LOG_WARN);
            vkl_app_quiet = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V")) {
            printf("vklora %s\n", vkl_version());
            return 0;
        } else {
            fprintf(stderr, "vklora: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t k = 0; k < sizeof commands / sizeof *commands; k++)
        if (!strcmp(argv[i], commands[k].name)) {
            vkl_log_set(app_log, (void *)commands[k].name);
            /* under mpirun every rank runs the command; the trainers share the work */
            if (vkl_app_dist_init(&argc, &argv, device)) return 1;
            int status = commands[k].run(argc - i, argv + i);
            vkl_app_dist_finish(status);
            return status;
        }
    fprintf(stderr, "vklora: unknown command '%s'\n", argv[i]);
    usage(stderr);
    return 2;
}
