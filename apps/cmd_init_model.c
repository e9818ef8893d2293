/* vklora init-model --family sd1.5 --random -o FILE: a checkpoint with random
 * weights in the original single-file layout, for benchmarks that peers can
 * load too (no download needed).
 * vklora init-model --random --configs DIR [--tokenizer DIR] -o OUTDIR: a
 * diffusers folder with random weights for any architecture its config files
 * describe (the start of vklora's own model, trained from scratch). */
#include "app.h"

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
    uint64_t seed = 0;
    vkl_dtype dt = VKL_F16;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--random")) random = 1;
        else if (!strcmp(k, "--family") && v) family = v, i++;
        else if (!strcmp(k, "--configs") && v) configs = v, i++;
        else if (!strcmp(k, "--tokenizer") && v) tokenizer = v, i++;
        else if (!strcmp(k, "--force")) force = 1;
        else if ((!strcmp(k, "-o") || !strcmp(k, "--output")) && v) out = v, i++;
        else if (!strcmp(k, "--seed") && v) {
            char *end;
            seed = strtoull(v, &end, 10);
            if (!*v || *end || v[0] == '-') {
                fprintf(stderr, "vklora init-model: --seed %s is not a number\n", v);
                return 2;
            }
            i++;
        }
        else if (!strcmp(k, "--dtype") && v) {
            if (vkl_dtype_parse(v, &dt) || (dt != VKL_F16 && dt != VKL_F32)) {
                fprintf(stderr, "vklora init-model: --dtype f16 or f32\n");
                return 2;
            }
            i++;
        } else if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else {
            fprintf(stderr, "vklora init-model: %s %s\n%s", k, v ? "is not an option" : "needs a value", usage_text);
            return 2;
        }
    }
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
