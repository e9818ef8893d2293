#include "gen_args.h"

#include "progress.h"
#include "quant.h"
#include "sd/vae_decode.h"

#include <errno.h>
#include <stdio.h>
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
    "                         nf4 quantises the UNet's linear layers and convolutions to 4-bit NormalFloat\n"
    "                         (QLoRA; conv_in stays f16), nf4dq\n"
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

/* --seed N, or -1: a random seed, as AUTOMATIC1111's */
static int read_seed(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_app_gen_args *a = dest;
    if (!strcmp(v, "-1")) {
        a->have_seed = 0;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long seed = strtoull(v, &end, 10);
    if (!*v || *end || errno || v[0] == '-' || v[0] == '+' || v[0] == ' ') {
        fprintf(stderr, "vklora %s: %s '%s': expected an integer >= 0, or -1 (a random seed)\n", cmd, opt, v);
        return 1;
    }
    a->seed = seed;
    a->have_seed = 1;
    return 0;
}

/* "WxH" with both in [1, 65536], into the int[2] at dest */
static int read_size(const char *cmd, const char *opt, const char *v, void *dest)
{
    int *wh = dest;
    char *end;
    errno = 0;
    long w = strtol(v, &end, 10), h = 0;
    int ok = end != v && *end == 'x' && v[0] != '-' && v[0] != '+' && !errno;
    if (ok) {
        const char *hs = end + 1;
        h = strtol(hs, &end, 10);
        ok = end != hs && !*end && hs[0] != '-' && hs[0] != '+' && !errno;
    }
    if (!ok || w < 1 || w > 65536 || h < 1 || h > 65536) {
        fprintf(stderr, "vklora %s: %s '%s': expected WxH with both in [1, 65536]\n", cmd, opt, v);
        return 1;
    }
    wh[0] = (int)w;
    wh[1] = (int)h;
    return 0;
}

/* What can be checked before the model is loaded (which can take minutes):
 * the output's folder and format, the other files named, value ranges. */
static int precheck(const vkl_app_gen_args *a)
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
    return 0;
}

#define STR(name, field) {name, NULL, VKL_ARG_STR, VKL_AS_STR(field), .help = NULL}
#define INT(name, field, lo_, hi_) {name, NULL, VKL_ARG_INT, VKL_AS_INT(field), .lo = lo_, .hi = hi_}
#define FLAG(name, alias, field) {name, alias, VKL_ARG_FLAG, VKL_AS_INT(field), .help = NULL}

int vkl_app_gen_args_parse(int argc, char **argv, vkl_app_gen_args *a)
{
    memset(a, 0, sizeof *a);
    a->loras = (vkl_arg_list){a->lora_v, VKL_GEN_MAX_LORAS, 0};
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
    int tiling = 0, original[2] = {0, 0}, target[2] = {0, 0};
    const vkl_arg table[] = {
        STR("--model", &a->model), STR("--prompt", &a->prompt),
        {"--negative", "--negative-prompt", VKL_ARG_STR, VKL_AS_STR(&a->negative), .help = NULL},
        STR("--sampler", &a->sampler), STR("--schedule", &a->schedule), STR("--sampler-convention", &a->convention),
        STR("--init-image", &a->init_image), STR("--tokenizer", &a->tokenizer), STR("--model-config", &a->model_config),
        STR("--init-noise", &a->init_noise), STR("--save-latents", &a->save_latents), STR("--lora-dir", &a->lora_dir),
        STR("--lora-sweep", &a->sweep),
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->output), .help = NULL},
        {"--lora", NULL, VKL_ARG_LIST, VKL_AS_LIST(&a->loras), .help = NULL},
        /* two entries, so that a refusal names the spelling given */
        {"--weights", NULL, VKL_ARG_CALL, &a->weights, .call = vkl_app_arg_base_dtype},
        {"--base-dtype", NULL, VKL_ARG_CALL, &a->weights, .call = vkl_app_arg_base_dtype},
        {"--vae-tiling", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&tiling), .choices = "auto|on|off"},
        INT("--rank-at-inference", &a->rank_at, 1, 100000), INT("--vae-tile", &a->vae_tile, 1, 4096),
        INT("--vae-tile-overlap", &a->vae_tile_overlap, 0, 4095), INT("--steps", &a->steps, 1, 1000),
        INT("--width", &a->width, 8, 16384), INT("--height", &a->height, 8, 16384), INT("--batch", &a->batch, 1, 64),
        INT("--clip-skip", &a->clip_skip, 1, 12), INT("--crop-left", &a->crop_left, 0, 65536),
        INT("--crop-top", &a->crop_top, 0, 65536),
        {"--original-size", NULL, VKL_ARG_CALL, original, .call = read_size},
        {"--target-size", NULL, VKL_ARG_CALL, target, .call = read_size},
        {"--cfg", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->cfg), .lo = 0, .hi = 100},
        {"--strength", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->strength), .lo = 0, .hi = 1},
        {"--seed", NULL, VKL_ARG_CALL, a, .call = read_seed},
        FLAG("--quiet", "-q", &a->quiet), FLAG("--merge-lora", NULL, &a->merge_lora),
        FLAG("--lowvram", NULL, &a->lowvram),
    };
    int parsed = vkl_args_parse("generate", table, (int)(sizeof table / sizeof *table), argc, argv, NULL);
    if (parsed == VKL_ARGS_HELP) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (parsed) return 2;
    a->vae_tiling = tiling == 1 ? VKL_VAE_TILING_ON : tiling == 2 ? VKL_VAE_TILING_OFF : VKL_VAE_TILING_AUTO;
    a->orig_w = original[0], a->orig_h = original[1];
    a->target_w = target[0], a->target_h = target[1];
    if (!a->model) a->model = vkl_default_model_path();
    if (!a->model) {
        fprintf(stderr, "vklora generate: no model given and vklora's own model (assets/vklora-emoji) was not found. "
                        "Pass --model PATH (a single-file .safetensors SD 1.x/2.x checkpoint or a diffusers folder) "
                        "or set VKLORA_MODEL.\n");
        return 2;
    }
    if (!a->prompt) {
        fprintf(stderr, "vklora generate: --prompt is required\n");
        return 2;
    }
    if (a->vae_tile_overlap >= a->vae_tile) {
        fprintf(stderr, "vklora generate: --vae-tile-overlap (%d) must be below --vae-tile (%d)\n", a->vae_tile_overlap,
                a->vae_tile);
        return 2;
    }
    if (a->weights.given && vkl_dtype_is_quant(a->weights.dt) && a->merge_lora) {
        fprintf(stderr, "vklora generate: --merge-lora needs f16 or f32 weights: adapters are not merged into an NF4 "
                        "base\n");
        return 2;
    }
    int pre = precheck(a);
    return pre ? pre : -1;
}
