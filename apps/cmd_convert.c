/* `vklora convert IN -o OUT --to kohya|peft|gguf [--model M]`: rewrites an
 * adapter in another layout, keeping alpha (PEFT: adapter_config.json beside
 * OUT) and metadata. Kohya names need the model (--model) to become module
 * paths; LLaMA LoRA adapters go between PEFT and GGUF (llama.cpp's layout)
 * with the LLaMA model (--model) giving the heads whose rows GGUF reorders. */
#include "app.h"
#include "out_folder.h"
#include "args.h"
#include "lora_args.h"

#include "llama/llama_gguf.h"
#include "llama/llama_lora_gguf.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int usage(FILE *f)
{
    fprintf(f,
            "usage: vklora convert IN -o OUT --to kohya|peft|gguf [--model MODEL] [--config adapter_config.json] [--force]\n"
            "  Reads a kohya / LyCORIS / diffusers / PEFT adapter and writes it as\n"
            "  kohya (lora_unet_..., .alpha, ss_* metadata) or PEFT (<module>.lora_A/B.weight\n"
            "  + adapter_config.json in OUT's folder with r and lora_alpha).\n"
            "  --model   SD model (file or diffusers folder) or checkpoint whose weight names\n"
            "            resolve kohya names; also checks every shape. Needed for kohya names in the\n"
            "            original LDM numbering (input_blocks_...); those in diffusers' numbering\n"
            "            (lora_unet_down_blocks_...) map without it\n"
            "            For GGUF (IN a .gguf LoRA adapter, or --to gguf: llama.cpp's adapter layout) MODEL is the\n"
            "            LLaMA model (HF folder or GGUF file) the adapter belongs to\n"
            "  --config  PEFT config of IN (default: adapter_config.json next to IN)\n"
            "  --force   replace an existing OUT (and, for peft, adapter_config.json beside it)\n");
    return 2;
}

/* LLaMA LoRA adapters between PEFT and GGUF. */
static int convert_gguf(const char *in, const char *out, const char *to, const char *model, const char *config, int force)
{
    vkl_err e = {{0}};
    vkl_llama_config c;
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", model);
    if (vkl_llama_is_gguf(model) ? vkl_llama_gguf_config(model, &c, &e) : vkl_llama_config_read(cfg, &c, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_lora l;
    int in_gguf = vkl_llama_is_gguf(in);
    if (in_gguf ? vkl_llama_lora_load_gguf(in, &c, &l, &e) : vkl_app_lora_load(in, NULL, config, &l) ? -1 : 0) {
        if (in_gguf) vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    int rc = 0;
    if (!strcmp(to, "gguf")) {
        rc = vkl_llama_lora_save_gguf(&c, &l, out, &e);
        if (rc) vkl_log(VKL_LOG_ERROR, "%s", e.msg);
    } else {
        rc = vkl_app_lora_save(&l, to, out, force);
    }
    if (!rc) vkl_log(VKL_LOG_INFO, "%s: %d modules -> %s (%s)", in, l.n, out, to);
    vkl_lora_free(&l);
    return rc ? 1 : 0;
}

int vkl_cmd_convert(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *to = NULL, *model = NULL, *config = NULL;
    int force = 0;
    const vkl_arg opts[] = {
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "OUT"},
        {"--to", NULL, VKL_ARG_STR, VKL_AS_STR(&to), .help = "kohya|peft|gguf"},
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&model), .help = "MODEL"},
        {"--config", NULL, VKL_ARG_STR, VKL_AS_STR(&config), .help = "adapter_config.json"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&force), .help = " replace OUT"},
    };
    vkl_args_rest input = {&in, 1, 0};
    int prc = vkl_args_parse("convert", opts, (int)(sizeof opts / sizeof *opts), argc, argv, &input);
    if (prc) return usage(prc == VKL_ARGS_HELP ? stdout : stderr), prc == VKL_ARGS_HELP ? 0 : prc;
    if (!in || !out || !to) return usage(stderr);
    if (strcmp(to, "kohya") && strcmp(to, "peft") && strcmp(to, "gguf")) {
        fprintf(stderr, "vklora convert: --to must be kohya, peft or gguf, not %s\n", to);
        return 2;
    }
    if (vkl_app_out_file_refuse("convert", out, force)) return 1;
    if (!strcmp(to, "gguf") || vkl_llama_is_gguf(in)) {
        if (!model) {
            fprintf(stderr, "vklora convert: GGUF adapters need --model, the LLaMA model they belong to\n");
            return 2;
        }
        return convert_gguf(in, out, to, model, config, force);
    }
    vkl_lora_targets t;
    vkl_err e;
    if (model && vkl_lora_targets_open(model, &t, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_lora l;
    int rc = vkl_app_lora_load(in, model ? &t : NULL, config, &l);
    /* without a model, kohya names in diffusers' numbering still map to
     * module paths; others (the LDM numbering) need --model */
    for (int i = 0; !rc && !model && !strcmp(to, "peft") && i < l.n; i++) {
        vkl_lora_module *m = &l.m[i];
        char name[512];
        if (m->name || !m->kname) continue;
        if (vkl_lora_kohya_guess_internal(m->kname, name, sizeof name)) {
            vkl_log(VKL_LOG_ERROR, "%s: %s names no module vklora can place without the model (the original LDM "
                    "numbering, input_blocks_..., depends on the model's layout): give --model", in, m->kname);
            rc = 1;
        } else if (!(m->name = strdup(name))) {
            rc = 1;
        }
    }
    if (!rc) {
        rc = vkl_app_lora_save(&l, to, out, force);
        if (!rc)
            vkl_log(VKL_LOG_INFO, "%s: %d modules (%s) -> %s (%s)", in, l.n, vkl_lora_format_name(l.format), out, to);
        vkl_lora_free(&l);
    }
    if (model) vkl_lora_targets_free(&t);
    return rc ? 1 : 0;
}
