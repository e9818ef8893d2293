/* vklora init-model --family sd1.5 --random -o FILE: a checkpoint with random
 * weights in the original single-file layout, for benchmarks that peers can
 * load too (no download needed).
 * vklora init-model --random --configs DIR [--tokenizer DIR] -o OUTDIR: a
 * diffusers folder with random weights for any architecture its config files
 * describe (the start of vklora's own model, trained from scratch). */
#include "app.h"
#include "args.h"

#include "sd/sd_folder_write.h"
#include "sd/sd_random.h"

#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: vklora init-model --family sd1.5|sd2.1|sdxl --random -o FILE [--seed N (0)] [--dtype f16|f32 (f16)]\n"
    "       vklora init-model --random --configs DIR [--tokenizer DIR] -o OUTDIR [--seed N (0)]\n"
    "                         [--dtype f16|f32 (f16)] [--force]\n"
    "  --configs: a folder of diffusers config files (model_index.json, scheduler/,\n"
    "  unet/, vae/, text_encoder/ config.json; SDXL-style: also text_encoder_2/ and\n"
    "  tokenizer_2/) for any SD 1.x/2.x/XL-style architecture; the output is a\n"
    "  diffusers folder with random weights\n";

int vkl_cmd_init_model(int argc, char **argv)
{
    const char *family = "sd1.5", *out = NULL, *configs = NULL, *tokenizer = NULL;
    int random = 0, force = 0;
    unsigned long long seed = 0;
    int dti = 0;
    static const vkl_dtype dtypes[] = {VKL_F16, VKL_F32};
    const vkl_arg opts[] = {
        {"--random", NULL, VKL_ARG_FLAG, VKL_AS_INT(&random), .help = " random weights"},
        {"--family", NULL, VKL_ARG_STR, VKL_AS_STR(&family), .help = "sd1.5|sd2.1|sdxl"},
        {"--configs", NULL, VKL_ARG_STR, VKL_AS_STR(&configs), .help = "DIR"},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&tokenizer), .help = "DIR"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "FILE|OUTDIR"},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&seed), .help = "N"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f16|f32", .help = "T"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&force), .help = " replace OUTDIR"},
    };
    int prc = vkl_args_parse("init-model", opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (prc) {
        fputs(usage_text, prc == VKL_ARGS_HELP ? stdout : stderr);
        return prc == VKL_ARGS_HELP ? 0 : prc;
    }
    vkl_dtype dt = dtypes[dti];
    if (!random || !out) {
        fprintf(stderr, "vklora init-model: only --random models can be made; give --random and -o FILE\n");
        return 2;
    }
    vkl_err e = {{0}};
    if (configs) {
        if (vkl_sd_write_random_folder(configs, tokenizer, out, dt, seed, force, &e)) {
            fprintf(stderr, "vklora init-model: %s\n", e.msg);
            return 1;
        }
        printf("wrote %s (diffusers folder, architecture of %s, random weights, seed %llu)\n", out, configs,
               (unsigned long long)seed);
        return 0;
    }
    vkl_sd_config cfg;
    if (vkl_sd_config_preset(family, &cfg, &e)) {
        fprintf(stderr, "vklora init-model: %s\n", e.msg);
        return 2;
    }
    if (vkl_sd_write_random_checkpoint(&cfg, out, dt, seed, &e)) {
        fprintf(stderr, "vklora init-model: %s\n", e.msg);
        return 1;
    }
    printf("wrote %s (%s, random weights, seed %llu)\n", out, family, (unsigned long long)seed);
    return 0;
}
