/* vklora lm convert: a LLaMA model (HF folder, llama2.c checkpoint or GGUF
 * file) written as a GGUF file in llama.cpp's layout, its matrices quantised
 * to one block type, with the tokenizer in the metadata. */
#include "app.h"
#include "out_folder.h"
#include "args.h"

#include "io/gguf.h"
#include "llama/llama_gguf.h"
#include "lm_tok.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: vklora lm convert --model DIR|FILE -o OUT.gguf [--quant TYPE (F32)] [--tokenizer tokenizer.model]\n"
               "                         [--name NAME] [--device N|cpu|gpu|NAME] [--force]\n"
               "Writes the model as GGUF (llama.cpp's names, q/k rows in its RoPE order, hyper-parameters and the\n"
               "SentencePiece tokenizer in the metadata). TYPE: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K.\n"
               "A matrix whose rows are not whole blocks of TYPE gets the next type that fits, as llama.cpp does\n"
               "(Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, then F16); norm weights stay F32.\n");
}

static int read_quant(const char *cmd, const char *opt, const char *v, void *dest)
{
    if (!vkl_gguf_type_parse(v, dest)) return 0;
    fprintf(stderr, "vklora %s: %s '%s': expected one of F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 Q4_K Q5_K Q6_K\n", cmd,
            opt, v);
    return 1;
}

int vkl_cmd_lm_convert(int argc, char **argv)
{
    const char *model = NULL, *out = NULL, *tok_path = NULL, *name = NULL;
    int type = VKL_GQ_F32, force = 0;
    const vkl_arg opts[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&model), .help = "DIR|FILE"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "OUT.gguf"},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&tok_path), .help = "tokenizer.model"},
        {"--name", NULL, VKL_ARG_STR, VKL_AS_STR(&name), .help = "NAME"},
        {"--quant", NULL, VKL_ARG_CALL, &type, .call = read_quant, .help = "TYPE"},
        {"--device", NULL, VKL_ARG_CALL, NULL, .call = vkl_app_arg_device, .help = "N|cpu|gpu|NAME"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&force), .help = " replace OUT"},
    };
    int prc = vkl_args_parse("lm convert", opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (prc) {
        usage(prc == VKL_ARGS_HELP ? stdout : stderr);
        return prc == VKL_ARGS_HELP ? 0 : prc;
    }
    if (!model || !out) {
        usage(stderr);
        return 2;
    }
    if (vkl_app_out_file_refuse("lm convert", out, force)) return 1;
    vkl_err e = {{0}};
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_ctx *c = NULL;
    vkl_llama *m = NULL;
    vkl_app_lm_tok tok = {0};
    int counts[32] = {0};
    int rc = vkl_ctx_create(&co, &c, &e) || vkl_llama_load(c, model, VKL_F32, &m, &e) ||
             vkl_app_lm_tok_open(model, tok_path, m->cfg.vocab, &tok, &e);
    if (!rc && !tok.sp) rc = vkl_fail(&e, "only SentencePiece tokenizers (tokenizer.model) go into GGUF files");
    if (!rc) rc = vkl_llama_save_gguf(m, tok.sp, type, name, out, counts, &e);
    if (rc) {
        fprintf(stderr, "vklora lm convert: %s\n", e.msg);
    } else {
        char summary[256] = "";
        for (int t = 0; t < 32; t++)
            if (counts[t])
                snprintf(summary + strlen(summary), sizeof summary - strlen(summary), "%s%d %s", summary[0] ? ", " : "",
                         counts[t], vkl_gguf_type_name(t));
        vkl_log(VKL_LOG_INFO, "%s -> %s: tensors %s", model, out, summary);
    }
    vkl_app_lm_tok_free(&tok);
    vkl_llama_free(m);
    if (c) vkl_ctx_destroy(c);
    return rc ? 1 : 0;
}
