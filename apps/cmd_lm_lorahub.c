/* vklora lm lorahub: LoRAHub for language models (models/lora/lorahub.h).
 * K PEFT LoRA adapters of one base are mixed with weights learnt, without
 * gradients, on a few examples (lm train's data formats); the loss of a
 * candidate is the mean token cross-entropy on the examples' answer tokens
 * (lm train's labels), computed by one planned evaluation graph whose
 * adapter factors are re-uploaded for each candidate: the model is loaded
 * once. The output folder is an ordinary PEFT adapter (`lm generate --lora`)
 * with the weights in its metadata and the search in lorahub_log.csv. */
#include "io/text.h"
#include "app.h"
#include "args.h"
#include "quant.h"
#include "io/dir.h"
#include "lm_data.h"
#include "lm_eval.h"
#include "lm_gen_args.h"
#include "lm_tok.h"
#include "lorahub_report.h"
#include "out_folder.h"
#include "progress.h"
#include "stop_signal.h"

#include "llama/llama_lora_init.h"
#include "lora/lora_apply.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "lm lorahub"
#define OUT_FILES 3
static const char *const OUT_NAMES[OUT_FILES] = {"adapter_model.safetensors", "adapter_config.json", "lorahub_log.csv"};

typedef struct args {
    const char *model, *data, *out, *tok, *chat;
    const char *adapters[VKL_LORAHUB_MAX];
    char list[8192];
    int k, seq_len, steps, force, weights_given;
    double l1, sigma;
    unsigned long long seed;
    vkl_dtype weights;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora lm lorahub --model DIR --adapters A,B[,C...] --data FEW.jsonl -o OUT_DIR\n"
            "                         [--steps 40] [--l1 0.05] [--seed 0] [--sigma 0.2] [--seq-len 128]\n"
            "                         [--tokenizer FILE] [--chat-template llama3|chatml|mistral]\n"
            "                         [--base-dtype f32|f16|bf16] [--force]\n"
            "LoRAHub (Huang et al. 2023): learns weights w_1..w_K of K LoRA adapters of this model (PEFT\n"
            "folders as lm train writes them: the same target modules and ranks) so that the composed adapter\n"
            "  A = sum_i w_i A_i, B = sum_i w_i B_i (per module, as the paper composes)\n"
            "minimises the loss on the few examples + l1 * sum_i |w_i|. The loss is the mean token\n"
            "cross-entropy on the answer tokens (lm train's data: {\"prompt\", \"completion\"}, {\"messages\"}\n"
            "or {\"text\"} lines, each cut or padded to --seq-len tokens). Gradient-free: first the K inputs\n"
            "alone and their plain average are evaluated; then CMA-ES, seeded by --seed, searches the box\n"
            "[-1.5, 1.5]^K for --steps evaluations from the best of them with step size --sigma. Prints the\n"
            "best loss per generation; the result is the search's best point. Writes OUT_DIR as a PEFT adapter\n"
            "(adapter_model.safetensors with the weights in its metadata, adapter_config.json) and\n"
            "lorahub_log.csv. An existing adapter in OUT_DIR is replaced only with --force.\n");
}

static int read_chat(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_chat probe;
    vkl_err pe;
    if (vkl_chat_from_name(v, &probe, &pe)) {
        fprintf(stderr, "vklora %s: %s '%s': %s\n", cmd, opt, v, pe.msg);
        return 1;
    }
    *(const char **)dest = v;
    return 0;
}

static int read_weights(const char *cmd, const char *opt, const char *v, void *dest)
{
    args *a = dest;
    if (vkl_app_arg_dense_dtype(cmd, opt, v, &a->weights)) return 1;
    a->weights_given = 1;
    return 0;
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->seq_len = 128;
    a->steps = 40;
    a->l1 = 0.05;
    a->sigma = 0.2;
    const char *list = NULL;
    const vkl_arg opts[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model), .help = "DIR"},
        {"--adapters", NULL, VKL_ARG_STR, VKL_AS_STR(&list), .help = "A,B[,C...]"},
        {"--data", NULL, VKL_ARG_STR, VKL_AS_STR(&a->data), .help = "FEW.jsonl"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->out), .help = "OUT_DIR"},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&a->tok), .help = "FILE"},
        {"--chat-template", NULL, VKL_ARG_CALL, &a->chat, .call = read_chat},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&a->steps), 1, 100000, .help = "N"},
        {"--seq-len", NULL, VKL_ARG_INT, VKL_AS_INT(&a->seq_len), 2, 1 << 20, .help = "N"},
        {"--l1", NULL, VKL_ARG_DOUBLE, VKL_AS_DOUBLE(&a->l1), 0, INFINITY, .help = "X  weight of sum |w_i|"},
        {"--sigma", NULL, VKL_ARG_DOUBLE, VKL_AS_DOUBLE(&a->sigma), 0, 3, .lo_open = 1, .help = "X  CMA-ES step size"},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&a->seed), .help = "S"},
        {"--base-dtype", "--weights", VKL_ARG_CALL, a, .call = read_weights},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->force), .help = "replace OUT_DIR's adapter"},
        {"--device", NULL, VKL_ARG_CALL, NULL, .call = vkl_app_arg_device},
    };
    int rc = vkl_args_parse(CMD, opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (rc == VKL_ARGS_HELP) usage(stdout);
    if (rc == VKL_ARGS_USAGE) usage(stderr);
    if (rc) return rc;
    if (!a->model || !list || !a->data || !a->out) {
        fprintf(stderr, "vklora " CMD ": --model, --adapters, --data and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (vkl_app_lorahub_split(CMD, list, a->list, sizeof a->list, a->adapters, &a->k)) return 2;
    return 0;
}

/* an adapter's config: NULL when absent or not a JSON object */
static cJSON *read_json(const char *path)
{
    return vkl_read_json_object(path, 1 << 20, NULL);
}

typedef struct run {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    vkl_app_lm_data data;
    vkl_lora in[VKL_LORAHUB_MAX];
    const vkl_lora *inp[VKL_LORAHUB_MAX];
    int nin;
    vkl_lora mix;
    vkl_lora_set *set;
    vkl_app_lm_eval *ev;
    char base[VKL_LORAHUB_MAX][PATH_MAX]; /* each adapter's base_model_name_or_path, resolved ("" if none) */
    int resolved[VKL_LORAHUB_MAX];        /* 1: base names a folder here (a real path), 0: kept as written */
} run;

static void run_free(run *r)
{
    vkl_app_lm_eval_free(r->ev);
    vkl_lora_set_free(r->set);
    vkl_lora_free(&r->mix);
    for (int i = 0; i < r->nin; i++) vkl_lora_free(&r->in[i]);
    vkl_app_lm_data_free(&r->data);
    vkl_app_lm_tok_free(&r->tok);
    vkl_llama_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}

/* One adapter folder (or its adapter_model.safetensors): read, checked
 * against the model, its recorded base remembered. */
static int load_adapter(run *r, const char *given, vkl_err *e)
{
    char path[4200], cfg[4200];
    struct stat st;
    if (stat(given, &st)) return vkl_fail(e, "adapter %s: %s", given, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", given);
        snprintf(cfg, sizeof cfg, "%s/adapter_config.json", given);
        if (stat(path, &st)) return vkl_fail(e, "adapter %s: the folder has no adapter_model.safetensors", given);
    } else {
        snprintf(path, sizeof path, "%s", given);
        const char *slash = strrchr(given, '/');
        snprintf(cfg, sizeof cfg, "%.*sadapter_config.json", slash ? (int)(slash - given + 1) : 0, given);
    }
    int i = r->nin;
    if (vkl_lora_load(path, NULL, &r->in[i], e)) {
        if (!strstr(e->msg, path)) vkl_err_prefix(e, "adapter %s: ", given);
        return -1;
    }
    r->nin++;
    r->inp[i] = &r->in[i];
    if (vkl_llama_lora_check(r->m, &r->in[i], given, e)) return -1;
    r->base[i][0] = 0;
    cJSON *j = read_json(cfg);
    const cJSON *b = j ? cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path") : NULL;
    if (cJSON_IsString(b) && b->valuestring[0]) {
        /* the same model may be named by other relative paths: compare resolved paths where they exist */
        r->resolved[i] = realpath(b->valuestring, r->base[i]) != NULL;
        if (!r->resolved[i]) snprintf(r->base[i], sizeof r->base[i], "%s", b->valuestring);
    }
    cJSON_Delete(j);
    return 0;
}

/* The recorded bases (where adapter_config.json names one) must agree: two
 * paths that exist here by their real paths, two names that do not (hub ids)
 * as written. A path that exists against one that does not (a relative path
 * recorded elsewhere) cannot be compared: a warning; the shapes were checked
 * against the model anyway. */
static int check_bases(const run *r, const args *a, vkl_err *e)
{
    for (int i = 0; i < r->nin; i++)
        for (int j = i + 1; j < r->nin; j++) {
            if (!r->base[i][0] || !r->base[j][0] || !strcmp(r->base[i], r->base[j])) continue;
            if (r->resolved[i] == r->resolved[j])
                return vkl_fail(e, "%s was trained on %s but %s on %s: LoRAHub mixes adapters of one base model",
                                a->adapters[i], r->base[i], a->adapters[j], r->base[j]);
            if (!vkl_app_quiet)
                fprintf(stderr, "vklora " CMD ": warning: %s names its base %s and %s names %s; vklora cannot tell "
                                "whether they are one model\n", a->adapters[i], r->base[i], a->adapters[j], r->base[j]);
        }
    return 0;
}

/* The search's objective: compose, upload the factors into the set's slots, evaluate. */
static int candidate_loss(void *user, const double *w, double *loss, vkl_err *e)
{
    run *r = user;
    if (vkl_app_stop_check(e)) return -1;
    vkl_lorahub_compose(r->inp, r->nin, w, &r->mix);
    for (int j = 0; j < r->mix.n; j++) {
        const vkl_lora_slot *sl = vkl_lora_set_find(r->set, r->mix.m[j].name);
        if (!sl) return vkl_fail(e, "module %s has no place in the adapter set", r->mix.m[j].name);
        if (vkl_lora_slot_upload(r->c, sl, &r->mix.m[j], e)) return -1;
    }
    long long tokens;
    return vkl_app_lm_eval_run(r->ev, &r->data, loss, &tokens, e);
}

/* adapter_config.json as PEFT reads it: the writer's r / lora_alpha, and
 * from the first input its target_modules (as its trainer named them), the
 * task and this model as the base. */
static int finish_config(const char *path, const char *first_input, const char *model, vkl_err *e)
{
    cJSON *j = read_json(path);
    if (!j) return vkl_fail(e, "%s: not the JSON just written", path);
    char src[4200];
    struct stat st;
    if (!stat(first_input, &st) && S_ISDIR(st.st_mode)) snprintf(src, sizeof src, "%s/adapter_config.json", first_input);
    else {
        const char *slash = strrchr(first_input, '/');
        snprintf(src, sizeof src, "%.*sadapter_config.json", slash ? (int)(slash - first_input + 1) : 0, first_input);
    }
    cJSON *in = read_json(src);
    const cJSON *t = in ? cJSON_GetObjectItemCaseSensitive(in, "target_modules") : NULL;
    if (t) {
        cJSON *copy = cJSON_Duplicate(t, 1);
        if (cJSON_GetObjectItemCaseSensitive(j, "target_modules")) cJSON_ReplaceItemInObjectCaseSensitive(j, "target_modules", copy);
        else cJSON_AddItemToObject(j, "target_modules", copy);
    }
    cJSON_Delete(in);
    cJSON_DeleteItemFromObjectCaseSensitive(j, "base_model_name_or_path");
    cJSON_DeleteItemFromObjectCaseSensitive(j, "task_type");
    cJSON_AddStringToObject(j, "base_model_name_or_path", model);
    cJSON_AddStringToObject(j, "task_type", "CAUSAL_LM");
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    FILE *f = s ? fopen(path, "wb") : NULL;
    int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    ok = (f && fclose(f) == 0) && ok;
    free(s);
    return ok ? 0 : vkl_fail(e, "cannot write %s", path);
}

static int lorahub(const args *a, const char *tmp, run *r, vkl_err *e)
{
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_dtype wdt = a->weights_given ? a->weights : vkl_app_lm_model_dtype(a->model);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, wdt, &r->m, e)) return -1;
    for (int i = 0; i < a->k; i++)
        if (load_adapter(r, a->adapters[i], e)) return -1;
    if (check_bases(r, a, e) || vkl_lorahub_check(r->inp, a->adapters, a->k, e)) return -1;
    const vkl_llama_config *cfg = &r->m->cfg;
    if (a->seq_len > cfg->max_pos)
        return vkl_fail(e, "--seq-len %d exceeds the model's context of %d positions", a->seq_len, cfg->max_pos);
    if (vkl_app_lm_tok_open(a->model, a->tok, cfg->vocab, &r->tok, e)) return -1;
    if (a->chat && vkl_chat_from_name(a->chat, &r->tok.chat, e)) return -1;
    if (vkl_app_lm_data_load(a->data, &r->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0, a->seq_len, 0,
                             &r->data, e))
        return vkl_err_prefix(e, "%s: ", a->data), -1;
    if (!r->data.n) return vkl_fail(e, "%s: no example", a->data);
    /* one set and one planned graph for every candidate: its factors are rewritten in place */
    vkl_lora_use use = {&r->mix, 1.0f, 1.0f};
    if (vkl_lorahub_prepare(r->inp, a->k, &r->mix, e) || vkl_lora_set_build(r->c, &use, 1, &r->set, e) ||
        vkl_app_lm_eval_new(r->m, r->set, NULL, NULL, a->seq_len, &r->ev, e))
        return -1;

    char logp[4300], st[4300], cj[4300];
    if ((size_t)snprintf(logp, sizeof logp, "%s/lorahub_log.csv", tmp) >= sizeof logp ||
        (size_t)snprintf(st, sizeof st, "%s/adapter_model.safetensors", tmp) >= sizeof st ||
        (size_t)snprintf(cj, sizeof cj, "%s/adapter_config.json", tmp) >= sizeof cj)
        return vkl_fail(e, "path too long: %s", tmp);
    int quiet = vkl_app_quiet;
    vkl_app_lorahub_report rep = {.cmd = CMD, .names = a->adapters, .k = a->k, .quiet = quiet, .l1 = a->l1};
    vkl_lorahub_opts o;
    vkl_lorahub_opts_default(&o, a->k);
    o.budget = a->steps;
    o.l1 = a->l1;
    o.seed = a->seed;
    o.sigma0 = a->sigma;
    o.on_reference = vkl_app_lorahub_on_reference;
    o.on_generation = vkl_app_lorahub_on_generation;
    o.user = &rep;
    double w[VKL_LORAHUB_MAX], in_loss[VKL_LORAHUB_MAX];
    vkl_lorahub_result res = {.w = w, .input_loss = in_loss};
    int rc = vkl_app_lorahub_report_open(&rep, logp, e) || vkl_lorahub_search(&o, candidate_loss, r, &res, e);
    if (!rc) vkl_app_lorahub_report_result(&rep, &o, &res);
    vkl_err ce;
    if (vkl_app_lorahub_report_close(&rep, logp, &ce) && !rc) rc = -1, *e = ce;
    if (rc) return -1;
    vkl_lorahub_compose(r->inp, r->nin, res.w, &r->mix);
    if (vkl_app_lorahub_metadata(&r->mix, &rep, &res, a->adapters, e) || vkl_lora_save_peft(&r->mix, st, cj, e) ||
        finish_config(cj, a->adapters[0], a->model, e))
        return -1;
    return 0;
}

int vkl_cmd_lm_lorahub(int argc, char **argv)
{
    args a;
    int prc = parse(argc, argv, &a);
    if (prc) return prc == 1 ? 0 : prc;
    vkl_err e = {{0}};
    struct stat sd;
    int missing = stat(a.data, &sd) != 0;
    if (missing || !S_ISREG(sd.st_mode)) {
        fprintf(stderr, "vklora " CMD ": data file %s: %s\n", a.data, missing ? strerror(errno) : "not a file");
        return 1;
    }
    for (int i = 0; i < a.k; i++)
        if (stat(a.adapters[i], &sd)) {
            fprintf(stderr, "vklora " CMD ": adapter %s: %s\n", a.adapters[i], strerror(errno));
            return 1;
        }
    int exists = vkl_app_out_folder_check(a.out, OUT_NAMES, OUT_FILES, a.force, &e);
    if (exists < 0) {
        fprintf(stderr, "vklora " CMD ": %s\n", e.msg);
        return 1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", a.out, (long)getpid());
    if (mkdir(tmp, 0755)) {
        fprintf(stderr, "vklora " CMD ": cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    run r;
    memset(&r, 0, sizeof r);
    vkl_app_stop_catch();
    int rc = lorahub(&a, tmp, &r, &e);
    vkl_app_stop_restore();
    run_free(&r);
    return vkl_app_out_finish(CMD, rc, tmp, a.out, OUT_NAMES, OUT_FILES, exists, &e);
}
