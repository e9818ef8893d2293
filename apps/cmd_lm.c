/* vklora lm generate: text generation with a LLaMA-family model (HF
 * directory: config.json, model.safetensors, tokenizer.model or
 * tokenizer.json, or a llama2.c tokenizer given with --tokenizer), optionally
 * with PEFT adapters (LoRA, DoRA, IA3) applied at run time. Greedy, or
 * sampled on the host (lm_sample.h); streams the continuation of the prompt
 * and reports prefill and decode speed. */
#include "app.h"

#include "llama/llama_generate.h"
#include "llama/llama_gguf.h"
#include "llama/llama_lora_gguf.h"
#include "llama/llama_lora_init.h"
#include "args.h"
#include "lm_adapters.h"
#include "lm_gen_args.h"
#include "lm_stream.h"
#include "lm_prompts.h"
#include "lm_tok.h"
#include "lora_args.h"
#include "lora/lora_dylora.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_LORA 8

typedef vkl_app_lm_tok lm_tok;

static void usage(FILE *f)
{
    fprintf(f, "usage: vklora lm generate --model DIR|FILE.gguf --prompt TEXT [--max-tokens N] [--lora ADAPTER_DIR[:W]]...\n"
               "       vklora lm generate --model DIR --prompts FILE.jsonl [--max-tokens N] [sampling options]\n"
               "                          [--temperature T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
               "                          [--seed N] [--stop STRING]... [--json]\n"
               "                          [--chat] [--system TEXT] [--chat-template llama3|chatml|mistral]\n"
               "                          [--tokenizer tokenizer.model|tokenizer.json|tok.bin] [--base-dtype f32|f16|bf16|nf4|nf4dq]\n"
               "                          [--rank-at-inference R] [--device N|cpu|gpu|NAME]\n"
               "Decodes with a KV cache and streams the continuation. Greedy unless --temperature T > 0 (or a\n"
               "filter is given, which samples at temperature 1): then the repetition penalty, temperature,\n"
               "top-k, top-p and min-p apply in that order (as transformers) and the token is drawn on the host\n"
               "from --seed (the same draws on every device; without --seed one is picked and reported).\n"
               "--stop ends generation at the first occurrence of STRING (not printed; repeatable).\n"
               "--chat sends the prompt as a user turn (after --system's message) through the model's chat\n"
               "template (tokenizer_config.json, or --chat-template) with the assistant's turn opened.\n"
               "Weight matrices stay in the dtype of config.json's torch_dtype (f16, bf16; else f32) unless --base-dtype\n"
                "(also spelt --weights); nf4 quantises the layers' projections to 4-bit NormalFloat at load (QLoRA);\n"
               "nf4dq every matrix (embedding and lm_head too) with double-quantised scales (about 1/4 of f16).\n"
               "A FILE.gguf's projections and lm_head stay in the file's blocks (Q8_0, Q4_K, ...), dequantised inside\n"
               "the matmul shaders, its embedding in f16; --base-dtype f32|f16|bf16 dequantises every matrix at load.\n"
               "--prompts: one {\"prompt\": TEXT, \"lora\": [\"DIR[:W]\", ...]} per line, each with its own LoRA adapters\n"
               "(each read once) in one process; one JSON object per line.\n"
               "--json prints one object instead: prompt_ids, ids, text, finish (eos|length|stop), seed and speeds.\n"
               "Prefill and decode tokens/s go to stderr. The tokenizer is DIR/tokenizer.model (SentencePiece),\n"
               "else DIR/tokenizer.json (byte-level BPE: GPT-2, Llama 3, Qwen2 ...), unless --tokenizer names one\n"
               "(a .bin file is read as llama2.c's format); a GGUF model (llama.cpp's format, any of F32 F16 BF16\n"
               "Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K) carries its own.\n"
               "Adapters: PEFT folders (adapter_model.safetensors + adapter_config.json) of LoRA, DoRA or IA3,\n"
               "or GGUF LoRA adapters (llama.cpp's layout, e.g. lm train --format gguf's adapter_model.gguf);\n"
               "W scales LoRA's product, and IA3's vectors as 1 + W (l - 1) (1 = as PEFT).\n"
               "--rank-at-inference R cuts every LoRA adapter to its first R rank rows (a DyLoRA file serves every\n"
               "rank that is a multiple of its unit; alpha is kept, so the scale is alpha/R) before applying it.\n"
               "       vklora lm train --model DIR --data FILE -o ADAPTER_DIR ... (lm train --help)\n"
               "       vklora lm merge --model DIR --lora ADAPTER_DIR[:W] -o OUTDIR ... (lm merge --help)\n"
               "       vklora lm convert --model DIR -o FILE.gguf [--quant TYPE] ... (lm convert --help)\n"
               "       vklora lm lorahub --model DIR --adapters A,B,... --data FEW.jsonl -o DIR ... (lm lorahub --help)\n"
               "       vklora lm hyperlora train|emit ... (research option; lm hyperlora --help)\n");
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

typedef struct run_state {
    vkl_app_lm_stream st;
    double t_start, t_first, t_last;
    int failed;
    const vkl_llama_config *cfg; /* its eos_token_id list ends generation too */
} run_state;

static int on_token(void *user, int32_t id)
{
    run_state *r = user;
    r->t_last = vkl_progress_now();
    if (r->st.n == r->st.n_prompt) r->t_first = r->t_last;
    int rc = vkl_app_lm_stream_token(&r->st, id);
    if (rc < 0) r->failed = 1;
    return rc != 0 || vkl_llama_is_extra_eos(r->cfg, id);
}

static cJSON *id_array(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

/* Speeds: the prompt's pass until the first new token; each later token is one decode step. */
static void report(run_state *r, int np, int nout, const vkl_app_lm_gen_args *g, int stop_id, int json, vkl_dtype dt)
{
    double pre = r->t_first - r->t_start, dec = r->t_last - r->t_first;
    double pre_tps = pre > 0 ? np / pre : 0, dec_tps = nout > 1 && dec > 0 ? (nout - 1) / dec : 0;
    const int32_t *out = r->st.all + np;
    const char *finish = r->st.stopped                                                      ? "stop"
                         : nout && (out[nout - 1] == stop_id || vkl_llama_is_extra_eos(r->cfg, out[nout - 1])) ? "eos"
                                                                                                : "length";
    if (json) {
        cJSON *o = cJSON_CreateObject();
        char *text = vkl_app_lm_stream_text(&r->st);
        cJSON_AddItemToObject(o, "prompt_ids", id_array(r->st.all, np));
        cJSON_AddItemToObject(o, "ids", id_array(out, nout));
        cJSON_AddStringToObject(o, "text", text ? text : "");
        cJSON_AddStringToObject(o, "finish", finish);
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)g->s.seed);
        cJSON_AddStringToObject(o, "seed", g->s.temperature > 0 ? seed : "");
        cJSON_AddStringToObject(o, "weights", dt == VKL_LLAMA_AS_STORED ? "gguf" : vkl_dtype_name(dt));
        cJSON_AddNumberToObject(o, "prefill_tokens_per_s", pre_tps);
        cJSON_AddNumberToObject(o, "decode_tokens_per_s", dec_tps);
        char *s = cJSON_PrintUnformatted(o);
        if (s) puts(s);
        free(s);
        free(text);
        cJSON_Delete(o);
    } else {
        vkl_app_lm_stream_finish(&r->st);
        fputc('\n', stdout);
    }
    fflush(stdout);
    if (vkl_app_quiet) return; /* vklora --quiet: the text alone */
    fprintf(stderr, "vklora lm generate: prefill %d tokens in %.3f s (%.1f tokens/s); decode %d tokens in %.3f s "
                    "(%.1f tokens/s); finish %s",
            np, pre, pre_tps, nout > 1 ? nout - 1 : 0, dec, dec_tps, finish);
    if (g->s.temperature > 0) fprintf(stderr, "; seed %llu", (unsigned long long)g->s.seed);
    fputc('\n', stderr);
}

typedef struct gen_cmd {
    const char *model, *prompt, *prompts, *tok_path, *system, *chat_name;
    int chat, max_new, rank_at, f16;
    vkl_app_dtype_arg dt;
    vkl_app_lora_list lora;
    vkl_app_lm_gen_args ga;
} gen_cmd;

/* The options of lm generate into g: -1 to run, else the exit status. */
static int parse_generate(int argc, char **argv, gen_cmd *g)
{
    memset(g, 0, sizeof *g);
    g->max_new = 64;
    g->lora.max = MAX_LORA;
    g->dt.dt = VKL_F32;
    vkl_app_lm_gen_args_default(&g->ga);
    const vkl_arg own[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&g->model), .help = NULL},
        {"--prompt", NULL, VKL_ARG_STR, VKL_AS_STR(&g->prompt), .help = NULL},
        {"--prompts", NULL, VKL_ARG_STR, VKL_AS_STR(&g->prompts), .help = NULL},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&g->tok_path), .help = NULL},
        {"--system", NULL, VKL_ARG_STR, VKL_AS_STR(&g->system), .help = NULL},
        {"--chat", NULL, VKL_ARG_FLAG, VKL_AS_INT(&g->chat), .help = NULL},
        {"--chat-template", NULL, VKL_ARG_CALL, &g->chat_name, .call = vkl_app_arg_chat_template},
        {"--max-tokens", NULL, VKL_ARG_INT, VKL_AS_INT(&g->max_new), .lo = 1, .hi = 1000000},
        {"--rank-at-inference", NULL, VKL_ARG_INT, VKL_AS_INT(&g->rank_at), .lo = 1, .hi = 1000000},
        {"--device", NULL, VKL_ARG_CALL, NULL, .call = vkl_app_arg_device},
        {"--f16", NULL, VKL_ARG_FLAG, VKL_AS_INT(&g->f16), .help = NULL}, /* the older spelling of --weights f16 */
        /* two entries, so that a refusal names the spelling given */
        {"--weights", NULL, VKL_ARG_CALL, &g->dt, .call = vkl_app_arg_base_dtype},
        {"--base-dtype", NULL, VKL_ARG_CALL, &g->dt, .call = vkl_app_arg_base_dtype},
        {"--lora", NULL, VKL_ARG_CALL, &g->lora, .call = vkl_app_arg_lora},
    };
    enum { n_own = sizeof own / sizeof *own };
    vkl_arg table[n_own + VKL_APP_LM_GEN_NARGS];
    memcpy(table, own, sizeof own);
    vkl_app_lm_gen_table(&g->ga, table + n_own);
    int parsed = vkl_args_parse("lm generate", table, n_own + VKL_APP_LM_GEN_NARGS, argc, argv, NULL);
    if (parsed == VKL_ARGS_HELP) {
        usage(stdout);
        return 0;
    }
    if (parsed) return 2;
    if (g->f16 && g->dt.given) {
        fprintf(stderr, "vklora lm generate: --f16 is the older spelling of --weights f16; give one of them\n");
        return 2;
    }
    if (g->f16) g->dt = (vkl_app_dtype_arg){VKL_F16, 1};
    g->chat |= g->system || g->chat_name;
    if (!g->model || !g->prompt == !g->prompts) {
        if (!g->model) fprintf(stderr, "vklora lm generate: --model is required\n");
        else fprintf(stderr, "vklora lm generate: give --prompt or --prompts%s\n", g->prompt ? ", not both" : "");
        usage(stderr);
        return 2;
    }
    if (g->rank_at && !g->lora.n) {
        fprintf(stderr, "vklora lm generate: --rank-at-inference cuts the --lora adapters; none is given\n");
        return 2;
    }
    if (g->prompts && (g->lora.n || g->chat)) {
        fprintf(stderr, "vklora lm generate: with --prompts the adapters come from each line (no --lora, --chat)\n");
        return 2;
    }
    for (int i = 0; i < g->lora.n; i++)
        if (!exists(g->lora.path[i])) {
            fprintf(stderr, "vklora lm generate: adapter %s not found\n", g->lora.path[i]);
            return 1;
        }
    vkl_app_lm_gen_args_finish(&g->ga);
    if (!g->dt.given) g->dt.dt = vkl_app_lm_model_dtype(g->model);
    return -1;
}

static int generate(int argc, char **argv)
{
    static gen_cmd g; /* its adapter paths are 256 KiB */
    int status = parse_generate(argc, argv, &g);
    if (status >= 0) return status;
    vkl_err e = {{0}};
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_ctx *c = NULL;
    vkl_llama *m = NULL;
    lm_tok tok = {0};
    vkl_lora ls[MAX_LORA];
    vkl_lora_use uses[MAX_LORA];
    int nloaded = 0, rc = 0;
    int32_t *ids = NULL, *out = NULL;
    int np = 0, nout = 0;
    run_state rs = {0};
    if (vkl_ctx_create(&co, &c, &e) || vkl_llama_load(c, g.model, g.dt.dt, &m, &e) ||
        vkl_app_lm_tok_open(g.model, g.tok_path, m->cfg.vocab, &tok, &e))
        rc = -1;
    if (!rc && g.prompts) {
        rc = vkl_app_lm_prompts(m, &tok, g.prompts, &g.ga, g.max_new, &e);
        if (rc) fprintf(stderr, "vklora lm generate: %s\n", e.msg);
        vkl_app_lm_tok_free(&tok);
        vkl_llama_free(m);
        vkl_ctx_destroy(c);
        return rc ? 1 : 0;
    }
    for (int i = 0; !rc && i < g.lora.n; i++) {
        const char *dir = g.lora.path[i];
        float w = g.lora.w[i];
        char path[4200];
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        if (!exists(path)) snprintf(path, sizeof path, "%s", dir);
        if (vkl_llama_is_gguf(path) ? vkl_llama_lora_load_gguf(path, &m->cfg, &ls[nloaded], &e)
                                    : vkl_lora_load(path, NULL, &ls[nloaded], &e)) {
            rc = -1;
            break;
        }
        if (g.rank_at && vkl_dylora_cut(&ls[nloaded], g.rank_at, &e)) {
            vkl_err_prefix(&e, "%s: --rank-at-inference %d: ", dir, g.rank_at);
            vkl_lora_free(&ls[nloaded]);
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
    vkl_app_lm_adapters ad = {0};
    if (!rc) rc = vkl_app_lm_adapters_build(m, uses, nloaded, &ad, &e);
    if (!rc) {
        if (g.chat_name) rc = vkl_chat_from_name(g.chat_name, &tok.chat, &e);
        if (!rc && g.chat)
            rc = vkl_app_lm_tok_chat_prompt(&tok, g.system, g.prompt, m->cfg.bos, vkl_app_lm_tok_eos(&tok, m->cfg.eos), &ids,
                                            &np, &e);
        else if (!rc)
            rc = vkl_app_lm_tok_encode(&tok, g.prompt, m->cfg.bos, &ids, &np, &e);
    }
    if (!rc && np + g.max_new > m->cfg.max_pos)
        rc = vkl_fail(&e, "prompt (%d tokens) + %d new tokens exceed the model's %d positions", np, g.max_new,
                      m->cfg.max_pos);
    if (!rc) {
        out = malloc(sizeof(int32_t) * (size_t)g.max_new);
        if (!out) rc = vkl_fail(&e, "out of host memory");
    }
    if (!rc) rc = vkl_app_lm_stream_start(&rs.st, &tok, ids, np, g.max_new, g.ga.stops.v, g.ga.stops.n, g.ga.json ? NULL : stdout, &e);
    if (!rc) {
        int stop_id = vkl_app_lm_tok_eos(&tok, m->cfg.eos);
        vkl_llama_gen_opts o = {.lora = ad.set, .dora = ad.dora, .ia3 = ad.ia3, .max_new = g.max_new, .stop_id = stop_id,
                                .sampling = &g.ga.s, .on_token = on_token, .user = &rs};
        rs.cfg = &m->cfg;
        rs.t_start = vkl_progress_now();
        rc = vkl_llama_generate(m, ids, np, &o, out, &nout, &e);
        if (!rc && rs.failed) rc = vkl_fail(&e, "out of host memory");
        if (!rc) report(&rs, np, nout, &g.ga, stop_id, g.ga.json, g.dt.dt);
    }
    if (rc) vkl_app_print_error("lm generate", e.msg);
    vkl_app_lm_stream_free(&rs.st);
    free(out);
    free(ids);
    vkl_app_lm_adapters_free(&ad);
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
    if (argc >= 2 && !strcmp(argv[1], "merge")) return vkl_cmd_lm_merge(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "convert")) return vkl_cmd_lm_convert(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "lorahub")) return vkl_cmd_lm_lorahub(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "hyperlora")) return vkl_cmd_lm_hyperlora(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2) fprintf(stderr, "vklora lm: missing subcommand (generate, train, merge, convert, lorahub, hyperlora)\n");
    else fprintf(stderr, "vklora lm: unknown subcommand or option '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
