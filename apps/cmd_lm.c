/* vklora lm generate: greedy text generation with a LLaMA-family model
 * (HF directory: config.json, model.safetensors, tokenizer.model, or a
 * llama2.c tokenizer given with --tokenizer), optionally with PEFT adapters
 * (LoRA, DoRA, IA3) applied at run time. Prints the continuation of the prompt. */
#include "app.h"

#include "llama/llama_generate.h"
#include "llama/llama_gguf.h"
#include "llama/llama_lora_gguf.h"
#include "llama/llama_lora_init.h"
#include "lora_args.h"
#include "lm_tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LORA 8

typedef vkl_app_lm_tok lm_tok;

static void usage(FILE *f)
{
    fprintf(f, "usage: vklora lm generate --model DIR|FILE.gguf --prompt TEXT [--max-tokens N] [--lora ADAPTER_DIR[:W]]...\n"
               "                          [--tokenizer tokenizer.model|tok.bin] [--weights f16|f32 (f32)] [--device N|cpu|gpu|NAME]\n"
               "Greedy decoding with a KV cache; prints the continuation. The tokenizer is DIR/tokenizer.model\n"
               "(SentencePiece) unless --tokenizer names one (a .bin file is read as llama2.c's format); a GGUF\n"
               "model (llama.cpp's format, any of F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K) carries its own.\n"
               "Adapters: PEFT folders (adapter_model.safetensors + adapter_config.json) of LoRA, DoRA or IA3,\n"
               "or GGUF LoRA adapters (llama.cpp's layout, e.g. lm train --format gguf's adapter_model.gguf);\n"
               "W scales LoRA's product, and IA3's vectors as 1 + W (l - 1) (1 = as PEFT).\n"
               "       vklora lm train --model DIR --data FILE -o ADAPTER_DIR ... (lm train --help)\n"
               "       vklora lm convert --model DIR -o FILE.gguf [--quant TYPE] ... (lm convert --help)\n");
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

typedef struct printer {
    const lm_tok *tok;
    int32_t *all; /* prompt + new ids */
    int n;
    size_t printed; /* bytes of the SentencePiece decode already printed */
} printer;

/* Streams the text as tokens come: llama2.c pieces directly; SentencePiece
 * by decoding everything and printing what is new (pieces that merge into
 * one character print once complete). */
static int on_token(void *user, int32_t id)
{
    printer *p = user;
    int prev = p->all[p->n - 1];
    p->all[p->n++] = id;
    if (p->tok->l2c) {
        char piece[256];
        if (id != 1) fputs((vkl_l2c_tok_decode(p->tok->l2c, prev, id, piece, sizeof piece), piece), stdout);
    } else {
        char *s = vkl_app_lm_tok_decode(p->tok, p->all, p->n);
        if (s) {
            size_t len = strlen(s);
            if (len > p->printed) fputs(s + p->printed, stdout);
            p->printed = len > p->printed ? len : p->printed;
            free(s);
        }
    }
    fflush(stdout);
    return 0;
}

static int generate(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *tok_path = NULL;
    static char lora[MAX_LORA][4096];
    float lora_w[MAX_LORA];
    int nlora = 0, max_new = 64;
    vkl_dtype dt = VKL_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--model") && v) model = argv[++i];
        else if (!strcmp(a, "--prompt") && v) prompt = argv[++i];
        else if (!strcmp(a, "--tokenizer") && v) tok_path = argv[++i];
        else if (!strcmp(a, "--max-tokens") && v) {
            char *end;
            long x = strtol(argv[++i], &end, 10);
            if (*end || x < 1 || x > 1000000) {
                fprintf(stderr, "vklora lm generate: --max-tokens %s is not a positive count\n", argv[i]);
                return 2;
            }
            max_new = (int)x;
        } else if (!strcmp(a, "--device") && v) vkl_ctx_default_device(argv[++i], "--device ");
        else if (!strcmp(a, "--f16")) dt = VKL_F16; /* the older spelling of --weights f16 */
        else if (!strcmp(a, "--weights") && v) {
            i++;
            if (!strcmp(v, "f16")) dt = VKL_F16;
            else if (!strcmp(v, "f32")) dt = VKL_F32;
            else {
                fprintf(stderr, "vklora lm generate: --weights f16 or f32, not '%s'\n", v);
                return 2;
            }
        }
        else if (!strcmp(a, "--lora") && v) {
            if (nlora == MAX_LORA) {
                fprintf(stderr, "vklora lm generate: at most %d adapters\n", MAX_LORA);
                return 2;
            }
            vkl_err pe;
            int nw;
            lora_w[nlora] = 1.0f;
            if (vkl_app_lora_spec(argv[++i], lora[nlora], sizeof lora[nlora], &lora_w[nlora], 1, &nw, &pe)) {
                fprintf(stderr, "vklora lm generate: --lora %s\n", pe.msg);
                return 2;
            }
            if (!exists(lora[nlora])) {
                fprintf(stderr, "vklora lm generate: adapter %s not found\n", lora[nlora]);
                return 1;
            }
            nlora++;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "vklora lm generate: unknown or incomplete argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model || !prompt) {
        usage(stderr);
        return 2;
    }
    vkl_err e = {{0}};
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_ctx *c = NULL;
    vkl_llama *m = NULL;
    lm_tok tok = {0};
    vkl_lora ls[MAX_LORA];
    vkl_lora_use uses[MAX_LORA];
    int nloaded = 0, rc = 0;
    vkl_lora_set *set = NULL;
    vkl_llama_dora *dora = NULL;
    vkl_llama_ia3 *ia3 = NULL;
    int32_t *ids = NULL, *out = NULL;
    int np = 0, nout = 0;
    printer pr = {0};
    if (vkl_ctx_create(&co, &c, &e) || vkl_llama_load(c, model, dt, &m, &e) ||
        vkl_app_lm_tok_open(model, tok_path, m->cfg.vocab, &tok, &e))
        rc = -1;
    for (int i = 0; !rc && i < nlora; i++) {
        const char *dir = lora[i];
        float w = lora_w[i];
        char path[4200];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        if (!exists(path)) snprintf(path, sizeof path, "%s", dir);
        if (vkl_llama_is_gguf(path) ? vkl_llama_lora_load_gguf(path, &m->cfg, &ls[nloaded], &e)
                                    : vkl_lora_load(path, NULL, &ls[nloaded], &e)) {
            rc = -1;
            break;
        }
        if (vkl_llama_lora_check(m, &ls[nloaded], dir, &e)) {
            vkl_lora_free(&ls[nloaded]);
            rc = -1;
            break;
        }
        uses[nloaded] = (vkl_lora_use){&ls[nloaded], w, w};
        nloaded++;
    }
    /* IA3 adapters go to the IA3 vectors (they wrap the others' layers), the rest to DoRA or the LoRA set */
    int is_dora = 0, nia3 = 0, nother = 0;
    vkl_lora_use ia3_uses[MAX_LORA], other[MAX_LORA];
    for (int i = 0; i < nloaded; i++) {
        int ia3 = ls[i].n > 0 && ls[i].m[0].kind == VKL_LORA_KIND_IA3;
        for (int k = 0; k < ls[i].n; k++) is_dora |= ls[i].m[k].kind == VKL_LORA_KIND_DORA;
        if (ia3) ia3_uses[nia3++] = uses[i];
        else other[nother++] = uses[i];
    }
    if (!rc && is_dora && nother > 1) rc = vkl_fail(&e, "a DoRA adapter cannot be combined with other adapters");
    if (!rc && nia3) rc = vkl_llama_ia3_build(m, ia3_uses, nia3, &ia3, &e);
    if (!rc && is_dora) rc = vkl_llama_dora_build(m, other[0].lora, other[0].unet_mult, &dora, &e);
    else if (!rc && nother) rc = vkl_lora_set_build(c, other, nother, &set, &e);
    if (!rc) {
        rc = vkl_app_lm_tok_encode(&tok, prompt, m->cfg.bos, &ids, &np, &e);
    }
    if (!rc && np + max_new > m->cfg.max_pos)
        rc = vkl_fail(&e, "prompt (%d tokens) + %d new tokens exceed the model's %d positions", np, max_new,
                      m->cfg.max_pos);
    if (!rc) {
        out = malloc(sizeof(int32_t) * (size_t)max_new);
        pr.tok = &tok;
        pr.all = malloc(sizeof(int32_t) * (size_t)(np + max_new));
        if (!out || !pr.all) rc = vkl_fail(&e, "out of host memory");
    }
    if (!rc) {
        memcpy(pr.all, ids, sizeof(int32_t) * (size_t)np);
        pr.n = np;
        if (!tok.l2c) {
            char *s = vkl_app_lm_tok_decode(&tok, ids, np);
            pr.printed = s ? strlen(s) : 0;
            free(s);
        }
        vkl_llama_gen_opts o = {.lora = set, .dora = dora, .ia3 = ia3, .max_new = max_new,
                                .stop_id = tok.l2c ? 1 : m->cfg.eos, .on_token = on_token, .user = &pr};
        rc = vkl_llama_generate(m, ids, np, &o, out, &nout, &e);
        fputc('\n', stdout);
    }
    if (rc) fprintf(stderr, "vklora lm generate: %s\n", e.msg);
    free(pr.all);
    free(out);
    free(ids);
    vkl_lora_set_free(set);
    vkl_llama_dora_free(dora);
    vkl_llama_ia3_free(ia3);
    for (int i = 0; i < nloaded; i++) vkl_lora_free(&ls[i]);
    vkl_app_lm_tok_free(&tok);
    vkl_llama_free(m);
    if (c) vkl_ctx_destroy(c);
    return rc ? 1 : 0;
}

int vkl_cmd_lm(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "generate")) return generate(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "train")) return vkl_cmd_lm_train(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "convert")) return vkl_cmd_lm_convert(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2) fprintf(stderr, "vklora lm: missing subcommand (generate, train, convert)\n");
    else fprintf(stderr, "vklora lm: unknown subcommand or option '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
