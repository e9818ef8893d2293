/* vklora lm train: fine-tunes a LLaMA-family model (HF folder) with a new
 * LoRA, DoRA or IA3 adapter on a text or .jsonl file and writes it as PEFT
 * saves it (adapter_model.safetensors + adapter_config.json), with the loss
 * of every step in train_log.csv beside it. Everything goes to a temporary
 * folder first, renamed to the output only when training succeeded. */
#include "app.h"
#include "args.h"
#include "quant.h"
#include "io/dir.h"
#include "dist_app.h"
#include "lm_data.h"
#include "lm_eval.h"
#include "lm_adalora_args.h"
#include "lm_gen_args.h"
#include "lm_train_state.h"
#include "out_folder.h"
#include "peft_config.h"
#include "rng.h"
#include "progress.h"

#include "llama/llama_adalora.h"
#include "llama/llama_gguf.h"
#include "llama/llama_lora_gguf.h"
#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
#include "lora/lora_dylora.h"
#include "optim.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define OUT_FILES 5
static const char *const OUT_NAMES[OUT_FILES] = {"adapter_model.safetensors", "adapter_config.json", "train_log.csv",
                                                 "eval_log.csv", "adapter_model.gguf"};

/* Set by SIGINT / SIGTERM: the loop stops between steps so the temporary folder is removed. */
static volatile sig_atomic_t stop_;

static void on_signal(int sig)
{
    (void)sig;
    stop_ = 1;
}

typedef enum { NET_LORA, NET_DORA, NET_IA3, NET_ADALORA, NET_DYLORA } network;
typedef enum { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE } schedule;

typedef struct args {
    const char *model, *data, *out, *tok, *chat, *val_data;
    float val_fraction;
    int eval_every, grad_accum, packing, save_every, resume;
    vkl_dtype weights; /* frozen base matrices; VKL_F32 + weights_given 0: config.json's torch_dtype */
    int weights_given;
    int net; /* a network */
    vkl_adalora_config ada; /* --network adalora */
    int ada_given, alpha_given, rank_given;
    int rank, unit, rslora, steps, epochs, batch, seq_len, warmup, quiet, device, force, gguf;
    float alpha, lr, loraplus, wd, max_grad_norm;
    unsigned long long seed;
    int sched; /* a schedule */
    vkl_dtype base; /* how the frozen model is stored: f32, f16 or nf4 (QLoRA) */
    char targets_buf[512];
    const char *targets[MAX_TARGETS], *ff[MAX_TARGETS];
    int nt, nf;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora lm train --model DIR|FILE.gguf --data FILE -o ADAPTER_DIR [--network lora|dora|ia3|adalora|dylora]\n"
            "         [--rank 8] [--dylora-unit 1] [--alpha 16] [--targets q_proj,v_proj] [--rslora] [--loraplus-ratio X]\n"
            "         [--lr 1e-4] [--max-steps N | --epochs N] [--batch 4] [--grad-accum 1] [--seq-len 128] [--seed N]\n"
            "         [--weight-decay 0] [--max-grad-norm 1] [--lr-schedule constant|linear|cosine] [--warmup N]\n"
            "         [--tokenizer tokenizer.model|tokenizer.json|tok.bin] [--chat-template llama3|chatml|mistral] [--format peft|gguf]\n"
            "         [--val-data FILE | --val-fraction F] [--eval-every N] [--grad-accum N] [--packing]\n"
            "         [--base-dtype f32|f16|bf16|nf4|nf4dq (config.json's torch_dtype; also --weights)] [--save-every N] [--resume]\n"
            "         [--device N|cpu|gpu|NAME|A,B,...] [--force] [--quiet]\n"
            "Data: a text file (tokenized whole, BOS first, cut into seq-len windows) or a .jsonl file, one\n"
            "sample per line truncated or padded to seq-len: {\"text\": ...} (every token learnt),\n"
            "{\"prompt\": ..., \"completion\": ...} (loss on the completion and EOS only) or {\"messages\":\n"
            "[{\"role\", \"content\"}, ...]} rendered with the model's chat template (tokenizer_config.json,\n"
            "or --chat-template), loss on the assistant's answers only. Samples are shuffled\n"
            "each epoch from --seed. Default length: one epoch (--steps is --max-steps, as before). Targets: module name suffixes; defaults are\n"
            "PEFT's for LLaMA (LoRA/DoRA q_proj,v_proj; IA3 k_proj,v_proj,down_proj, down_proj feed-forward).\n"
            "Writes ADAPTER_DIR/adapter_model.safetensors, adapter_config.json (PEFT) and train_log.csv\n"
            "(step,epoch,loss,lr,grad_norm,skipped,seconds, as vklora train's). Held-out samples (--val-data, or a\n"
            "seeded --val-fraction of the data kept out of training) are scored before training, every --eval-every\n"
            "steps and at the end: eval_log.csv (step,loss,perplexity,tokens). --grad-accum N: each step sums the\n"
            "gradients of N batches (each 1/N) before one update; an epoch is then ceil(batches / N) steps.\n"
            "--packing (.jsonl): samples, each ended by EOS, fill rows of --seq-len one after another.\n"
            "The frozen base stays in its file's dtype (16-bit where config.json says float16/bfloat16).\n"
            "--save-every N keeps ADAPTER_DIR.state (adapter, AdamW state, sample order, log) every N steps;\n"
            "--resume continues from it exactly (same options; a larger --max-steps extends the run). --force replaces an existing ADAPTER_DIR made by this command.\n"
            "Under mpirun -np N each step takes N x --grad-accum batches of the one sample order (rank r the r-th\n"
            "group), the gradients are summed across ranks, and rank 0 alone writes: the adapter is the one a\n"
            "single process with --grad-accum N x M makes. --device A,B,...: local rank i drives entry i (round-robin\n"
            "over the list; default: round-robin over the machine's GPUs). A state resumes on any number of ranks\n"
            "that keeps ranks x --grad-accum.\n"
            "--base-dtype nf4 trains on a QLoRA base: the layers' projections quantised to 4-bit NormalFloat at load,\n"
            "dequantised inside the matmul shaders (LoRA and IA3; DoRA needs an f32 or f16 base); nf4dq quantises\n"
            "every matrix, the embedding and lm_head too, with QLoRA's double-quantised scales (about 1/4 of f16).\n"
            "--model FILE.gguf trains on a llama.cpp model, its projections and lm_head kept in the file's blocks\n"
            "(Q8_0, Q4_K, ...) and dequantised inside the matmul shaders (--base-dtype f32|f16|bf16: dequantised at\n"
            "load). --format gguf (LoRA, AdaLoRA, DyLoRA)\n"
            "also writes ADAPTER_DIR/adapter_model.gguf, the adapter as llama.cpp's --lora loads it.\n"
            "--network dylora: DyLoRA (kohya's networks/dylora.py rule): each step draws one rank b, a multiple of\n"
            "--dylora-unit up to --rank; every module runs its first b rank rows at scale alpha/b and trains the\n"
            "last unit of them; the PEFT file at --rank serves every such rank (lm generate --rank-at-inference R,\n"
            "or vklora merge --lora DIR --rank-at-inference R -o OUT to write the cut adapter).\n");
    vkl_app_adalora_usage(f);
}

static int bad(const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "vklora lm train: %s '%s': %s\n", opt, v, want);
    return 2;
}

static int split_targets(args *a, const char *v)
{
    snprintf(a->targets_buf, sizeof a->targets_buf, "%s", v);
    a->nt = 0;
    for (char *p = strtok(a->targets_buf, ","); p; p = strtok(NULL, ",")) {
        if (a->nt == MAX_TARGETS) return bad("--targets", v, "at most 16 entries");
        a->targets[a->nt++] = p;
    }
    return a->nt ? 0 : bad("--targets", v, "no module name");
}

/* The targets in effect: the user's, else PEFT's LLaMA defaults; IA3's
 * feed-forward modules are the down_proj entries (PEFT's LLaMA mapping). */
static void resolve_targets(args *a)
{
    static const char *const lora_def[] = {"q_proj", "v_proj"}, *const ia3_def[] = {"k_proj", "v_proj", "down_proj"};
    if (!a->nt) {
        const char *const *d = a->net == NET_IA3 ? ia3_def : lora_def;
        a->nt = a->net == NET_IA3 ? 3 : 2;
        for (int i = 0; i < a->nt; i++) a->targets[i] = d[i];
    }
    a->nf = 0;
    for (int i = 0; a->net == NET_IA3 && i < a->nt; i++)
        if (strstr(a->targets[i], "down_proj")) a->ff[a->nf++] = a->targets[i];
}

static const char *net_name(network n)
{
    return n == NET_IA3 ? "ia3" : n == NET_DORA ? "dora" : n == NET_ADALORA ? "adalora" : n == NET_DYLORA ? "dylora" : "lora";
}

static int set_targets(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd, (void)opt;
    return split_targets(dest, v);
}

static int set_chat(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd;
    if (strcmp(v, "llama3") && strcmp(v, "chatml") && strcmp(v, "mistral"))
        return bad(opt, v, "unknown chat template (llama3, chatml or mistral)");
    ((args *)dest)->chat = v;
    return 0;
}

static int set_weights(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd;
    args *a = dest;
    a->weights_given = 1;
    return vkl_app_base_dtype(v, &a->weights) ? bad(opt, v, "expected f32, f16, bf16, nf4 or nf4dq") : 0;
}

static int set_device(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)opt, (void)dest;
    return vkl_app_device_option(v, cmd) != 0; /* A,B,...: per rank */
}

static int set_adalora(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd;
    args *a = dest;
    int rc = 0;
    vkl_app_adalora_option(opt, v, &a->ada, &a->ada_given, &rc);
    return rc;
}

#define CALL(name, fn) {name, NULL, VKL_ARG_CALL, a, .call = fn}

static int parse(int argc, char **argv, args *a)
{
    /* rank and alpha 0 / -1 until given: AdaLoRA refuses a given --rank and
     * takes its own alpha default */
    *a = (args){.net = NET_LORA, .rank = 0, .unit = 1, .alpha = -1, .lr = 1e-4f, .loraplus = 1, .batch = 4, .grad_accum = 1, .seq_len = 128,
                .max_grad_norm = 1, .device = -1, .sched = SCHED_CONSTANT};
    vkl_adalora_config_default(&a->ada);
    const double big = 100000000, inf = INFINITY;
    const vkl_arg table[] = {
        {"--rslora", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->rslora), .help = NULL},
        {"--quiet", "-q", VKL_ARG_FLAG, VKL_AS_INT(&a->quiet), .help = NULL},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->force), .help = NULL},
        {"--packing", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->packing), .help = NULL},
        {"--resume", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->resume), .help = NULL},
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model), .help = NULL},
        {"--data", NULL, VKL_ARG_STR, VKL_AS_STR(&a->data), .help = NULL},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->out), .help = NULL},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&a->tok), .help = NULL},
        {"--val-data", NULL, VKL_ARG_STR, VKL_AS_STR(&a->val_data), .help = NULL},
        {"--val-fraction", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->val_fraction), .hi = 1, .lo_open = 1},
        {"--eval-every", NULL, VKL_ARG_INT, VKL_AS_INT(&a->eval_every), .lo = 1, .hi = big},
        {"--grad-accum", NULL, VKL_ARG_INT, VKL_AS_INT(&a->grad_accum), .lo = 1, .hi = 4096},
        {"--save-every", NULL, VKL_ARG_INT, VKL_AS_INT(&a->save_every), .lo = 1, .hi = big},
        {"--network", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&a->net), .choices = "lora|dora|ia3|adalora|dylora"},
        {"--format", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&a->gguf), .choices = "peft|gguf"},
        {"--lr-schedule", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&a->sched), .choices = "constant|linear|cosine"},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&a->rank), .lo = 1, .hi = 4096},
        {"--dylora-unit", NULL, VKL_ARG_INT, VKL_AS_INT(&a->unit), .lo = 1, .hi = 4096},
        {"--max-steps", "--steps", VKL_ARG_INT, VKL_AS_INT(&a->steps), .lo = 1, .hi = big},
        {"--epochs", NULL, VKL_ARG_INT, VKL_AS_INT(&a->epochs), .lo = 1, .hi = 1000000},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&a->batch), .lo = 1, .hi = 4096},
        {"--seq-len", NULL, VKL_ARG_INT, VKL_AS_INT(&a->seq_len), .lo = 2, .hi = 1 << 20},
        {"--warmup", NULL, VKL_ARG_INT, VKL_AS_INT(&a->warmup), .hi = big},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&a->seed), .help = NULL},
        {"--alpha", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->alpha), .hi = inf},
        {"--lr", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->lr), .hi = inf},
        {"--loraplus-ratio", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->loraplus), .lo = 1e-6, .hi = inf},
        {"--weight-decay", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->wd), .hi = inf},
        {"--max-grad-norm", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->max_grad_norm), .hi = inf},
        CALL("--chat-template", set_chat), CALL("--targets", set_targets), CALL("--weights", set_weights),
        CALL("--base-dtype", set_weights), CALL("--device", set_device),
        CALL("--init-r", set_adalora), CALL("--target-r", set_adalora), CALL("--tinit", set_adalora),
        CALL("--tfinal", set_adalora), CALL("--delta-t", set_adalora), CALL("--orth-reg-weight", set_adalora),
        CALL("--beta1", set_adalora), CALL("--beta2", set_adalora), CALL("--total-step", set_adalora),
    };
    int rc = vkl_args_parse("lm train", table, (int)(sizeof table / sizeof *table), argc, argv, NULL);
    if (rc == VKL_ARGS_HELP) {
        usage(stdout);
        return 1;
    }
    if (rc) return 2;
    a->rank_given = a->rank != 0;
    if (!a->rank_given) a->rank = 8;
    a->alpha_given = a->alpha >= 0;
    if (!a->alpha_given) a->alpha = 16;
    if (a->val_fraction >= 1) {
        fprintf(stderr, "vklora lm train: --val-fraction '%g': expected a number in (0, 1)\n", a->val_fraction);
        return 2;
    }
    resolve_targets(a);
    if (!a->model || !a->data || !a->out) {
        fprintf(stderr, "vklora lm train: --model, --data and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (a->val_data && a->val_fraction > 0) {
        fprintf(stderr, "vklora lm train: give --val-data or --val-fraction, not both\n");
        return 2;
    }
    if (a->eval_every && !a->val_data && !(a->val_fraction > 0)) {
        fprintf(stderr, "vklora lm train: --eval-every needs --val-data or --val-fraction\n");
        return 2;
    }
    if (a->steps && a->epochs) {
        fprintf(stderr, "vklora lm train: give --steps or --epochs, not both\n");
        return 2;
    }
    if (a->net == NET_DORA && a->weights_given && vkl_dtype_is_quant(a->weights)) {
        fprintf(stderr, "vklora lm train: --network dora needs --base-dtype f32 or f16 (DoRA's norm reads the weight)\n");
        return 2;
    }
    if (a->gguf && a->net != NET_LORA && a->net != NET_ADALORA && a->net != NET_DYLORA) {
        fprintf(stderr, "vklora lm train: --format gguf holds LoRA adapters only, not --network %s\n",
                net_name(a->net));
        return 2;
    }
    if (a->net == NET_DYLORA && a->rank % a->unit) {
        fprintf(stderr, "vklora lm train: --rank %d is not a multiple of --dylora-unit %d\n", a->rank, a->unit);
        return 2;
    }
    if (a->net != NET_DYLORA && a->unit != 1) {
        fprintf(stderr, "vklora lm train: --dylora-unit applies to --network dylora\n");
        return 2;
    }
    if (a->net == NET_DYLORA && a->rslora) {
        fprintf(stderr, "vklora lm train: --network dylora does not take --rslora (its scale is alpha/rank)\n");
        return 2;
    }
    if (a->ada_given && a->net != NET_ADALORA) {
        fprintf(stderr, "vklora lm train: --init-r, --target-r, --tinit, --tfinal, --delta-t, --orth-reg-weight and "
                        "--beta1/2 need --network adalora\n");
        return 2;
    }
    if (a->net == NET_ADALORA) {
        const char *no = a->rank_given ? "--rank (AdaLoRA's rank is --init-r)" : a->rslora ? "--rslora"
                         : a->loraplus != 1 ? "--loraplus-ratio" : NULL;
        if (no) {
            fprintf(stderr, "vklora lm train: --network adalora does not take %s\n", no);
            return 2;
        }
        a->ada.lora_alpha = a->alpha_given ? a->alpha : 8; /* PEFT's lora_alpha default */
    }
    if (a->net == NET_IA3 && (a->rslora || a->loraplus != 1)) {
        fprintf(stderr, "vklora lm train: --rslora and --loraplus-ratio apply to LoRA and DoRA, not IA3\n");
        return 2;
    }
    return 0;
}

/* HF transformers' schedules with warmup (get_*_schedule_with_warmup), s = 0-based step. */
static float lr_at(const args *a, int s, int total)
{
    if (s < a->warmup) return a->lr * (float)s / (float)a->warmup;
    if (a->sched == SCHED_CONSTANT) return a->lr;
    double span = total - a->warmup, p = span > 0 ? (s - a->warmup) / span : 1;
    if (a->sched == SCHED_LINEAR) return a->lr * (float)fmax(0.0, 1.0 - p);
    return a->lr * (float)(0.5 * (1.0 + cos(3.14159265358979323846 * p)));
}

/* Tokens whose next token is predicted (a label after it that is not -100)
 * in rows [from, to) of a batch: what the mean loss divides by. */
static long long predicted(const int32_t *labels, int from, int to, int L)
{
    long long n = 0;
    for (int b = from; b < to; b++)
        for (int t = 1; t < L; t++) n += labels[(size_t)b * L + t] != VKL_LLAMA_IGNORE;
    return n;
}

/* Copies the trained tensors into the host adapter by their PEFT keys. */
static int store(vkl_ctx *c, const vkl_llama_train *s, vkl_lora *l, vkl_err *e)
{
    static const struct {
        const char *suffix;
        vkl_lora_role role;
    } parts[] = {{".lora_A.weight", VKL_LORA_DOWN}, {".lora_B.weight", VKL_LORA_UP},
                 {".lora_magnitude_vector", VKL_LORA_MAG}, {".ia3_l", VKL_LORA_IA3}};
    const char *root = "base_model.model.";
    for (int i = 0; i < vkl_llama_train_count(s); i++) {
        const char *key = vkl_llama_train_key(s, i);
        char name[512];
        int role = -1;
        size_t kl = strlen(key);
        for (size_t k = 0; k < sizeof parts / sizeof *parts && role < 0; k++) {
            size_t sl = strlen(parts[k].suffix);
            if (kl > sl + strlen(root) && !strcmp(key + kl - sl, parts[k].suffix) && kl - sl - strlen(root) < sizeof name) {
                memcpy(name, key + strlen(root), kl - sl - strlen(root));
                name[kl - sl - strlen(root)] = 0;
                role = (int)parts[k].role;
            }
        }
        vkl_lora_module *mo = NULL;
        for (int k = 0; role >= 0 && k < l->n && !mo; k++)
            if (!strcmp(l->m[k].name, name)) mo = &l->m[k];
        vkl_tensor *t = vkl_llama_train_param(s, i);
        if (!mo || !mo->t[role].data || (int64_t)vkl_lora_tensor_nelem(&mo->t[role]) != vkl_tensor_nelem(t))
            return vkl_fail(e, "trained tensor %s has no place of %lld elements in the adapter", key,
                            (long long)vkl_tensor_nelem(t));
        if (vkl_tensor_download(c, t, mo->t[role].data, VKL_F32, e)) return vkl_err_prefix(e, "%s: ", key), -1;
    }
    return 0;
}


typedef struct run {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    vkl_app_lm_data data, val;
    vkl_app_lm_eval *ev;
    FILE *elog;
    char *opts; /* the options a resume must find again */
    vkl_lora l;
    vkl_lora_set *set;
    vkl_llama_dora *dora;
    vkl_llama_ia3 *ia3;
    vkl_llama_adalora *ada;
    vkl_adalora_alloc *alloc;
    float *ada_state; /* the allocator's state for --save-every / --resume */
    vkl_llama_train *tr;
    vkl_dylora *dy;
    int32_t *ids, *labels;
    int *attn, *order;
    FILE *log;
} run;

static void run_free(run *r)
{
    if (r->log) fclose(r->log);
    if (r->elog) fclose(r->elog);
    free(r->opts);
    vkl_app_lm_eval_free(r->ev);
    vkl_app_lm_data_free(&r->val);
    free(r->ids);
    free(r->labels);
    free(r->attn);
    free(r->order);
    vkl_llama_train_free(r->tr);
    vkl_dylora_free(r->dy);
    vkl_lora_set_free(r->set);
    vkl_llama_dora_free(r->dora);
    vkl_llama_ia3_free(r->ia3);
    vkl_llama_adalora_free(r->ada);
    vkl_adalora_alloc_free(r->alloc);
    free(r->ada_state);
    vkl_lora_free(&r->l);
    vkl_app_lm_data_free(&r->data);
    vkl_app_lm_tok_free(&r->tok);
    vkl_llama_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}

/* Moves ceil(fraction * n) rows, picked by a permutation drawn from seed,
 * out of d into val (at least one row stays on each side). */
static int hold_out(vkl_app_lm_data *d, vkl_app_lm_data *val, float fraction, uint64_t seed, vkl_err *e)
{
    int n = d->n, nv = (int)ceil(fraction * n), L = d->L;
    if (nv >= n) nv = n - 1;
    if (nv < 1) return vkl_fail(e, "--val-fraction %g of %d samples leaves no sample on one side", fraction, n);
    int *perm = malloc(sizeof(int) * (size_t)n);
    unsigned char *is_val = calloc((size_t)n, 1);
    size_t sz = (size_t)nv * L;
    *val = (vkl_app_lm_data){.n = nv, .L = L, .ids = malloc(sizeof(int32_t) * sz), .labels = malloc(sizeof(int32_t) * sz),
                             .attn = malloc(sizeof(int) * sz)};
    if (!perm || !is_val || !val->ids || !val->labels || !val->attn) {
        free(perm);
        free(is_val);
        return vkl_fail(e, "out of host memory");
    }
    uint64_t rng = seed ^ 0x686f6c646f7574ull;
    for (int i = 0; i < n; i++) perm[i] = i;
    vkl_shuffle_ints(perm, n, &rng);
    for (int i = 0; i < nv; i++) is_val[perm[i]] = 1;
    int kv = 0, kt = 0;
    for (int i = 0; i < n; i++) {
        size_t src = (size_t)i * L;
        vkl_app_lm_data *to = is_val[i] ? val : d;
        size_t dst = (size_t)(is_val[i] ? kv++ : kt++) * L;
        memmove(to->ids + dst, d->ids + src, sizeof(int32_t) * L);
        memmove(to->labels + dst, d->labels + src, sizeof(int32_t) * L);
        memmove(to->attn + dst, d->attn + src, sizeof(int) * L);
    }
    d->n = kt;
    d->tokens = 0;
    for (size_t i = 0; i < (size_t)kt * L; i++) d->tokens += d->attn[i];
    for (size_t i = 0; i < sz; i++) val->tokens += val->attn[i];
    free(perm);
    free(is_val);
    return 0;
}

static int evaluate(const args *a, run *r, int step, vkl_err *e)
{
    double loss;
    long long tokens;
    /* a DyLoRA adapter is scored at its full rank, not the last step's draw */
    if (r->dy && vkl_dylora_full(r->dy, e)) return -1;
    if (vkl_app_lm_eval_run(r->ev, &r->val, &loss, &tokens, e)) return vkl_err_prefix(e, "held-out loss: "), -1;
    fprintf(r->elog, "%d,%.7g,%.7g,%lld\n", step, loss, exp(loss), tokens);
    fflush(r->elog);
    if (!a->quiet && !vkl_app_quiet)
        fprintf(stderr, "lm train: step %d held-out loss %.4f, perplexity %.3f (%lld tokens)\n", step, loss, exp(loss),
                tokens);
    return 0;
}

/* What a resumed run must share with the saved one (not its length). */
static char *options_json(const args *a)
{
    cJSON *j = cJSON_CreateObject();
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)a->seed);
    cJSON_AddStringToObject(j, "model", a->model);
    cJSON_AddStringToObject(j, "data", a->data);
    cJSON_AddStringToObject(j, "network", net_name(a->net));
    if (a->net == NET_DYLORA) cJSON_AddNumberToObject(j, "dylora_unit", a->unit);
    cJSON_AddItemToObject(j, "targets", vkl_app_json_strings(a->targets, a->nt));
    cJSON_AddStringToObject(j, "seed", seed);
    cJSON_AddNumberToObject(j, "rank", a->rank);
    cJSON_AddNumberToObject(j, "alpha", a->alpha);
    cJSON_AddNumberToObject(j, "rslora", a->rslora);
    cJSON_AddNumberToObject(j, "loraplus", a->loraplus);
    cJSON_AddNumberToObject(j, "batch", a->batch);
    cJSON_AddNumberToObject(j, "seq_len", a->seq_len);
    /* not --grad-accum: ranks x grad-accum is what must stay (the state's split) */
    cJSON_AddNumberToObject(j, "packing", a->packing);
    cJSON_AddNumberToObject(j, "lr", a->lr);
    cJSON_AddNumberToObject(j, "weight_decay", a->wd);
    cJSON_AddNumberToObject(j, "max_grad_norm", a->max_grad_norm);
    cJSON_AddNumberToObject(j, "schedule", (double)a->sched);
    cJSON_AddNumberToObject(j, "warmup", a->warmup);
    cJSON_AddNumberToObject(j, "val_fraction", a->val_fraction);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

static int build_adapter(const args *a, run *r, vkl_err *e)
{
    vkl_lora_use use = {&r->l, 1.0f, 1.0f};
    if (a->net == NET_ADALORA) return 0; /* built once the run's length (its total_step) is known */
    if (a->net == NET_IA3)
        return vkl_llama_ia3_init(r->m, a->targets, a->nt, a->ff, a->nf, &r->l, e) ||
               vkl_llama_ia3_build(r->m, &use, 1, &r->ia3, e);
    vkl_llama_lora_opts o = {.targets = a->targets, .nt = a->nt, .rank = a->rank, .alpha = a->alpha,
                             .rslora = a->rslora, .dora = a->net == NET_DORA, .seed = a->seed};
    if (vkl_llama_lora_init(r->m, &o, &r->l, e)) return -1;
    if (a->net == NET_DYLORA)
        return vkl_dylora_mark(&r->l, a->unit, a->rank, a->alpha, e) || vkl_lora_set_build(r->c, &use, 1, &r->set, e) ||
                       vkl_dylora_new(r->c, r->set, &r->l, a->unit, a->seed, &r->dy, e)
                   ? -1
                   : 0;
    return a->net == NET_DORA ? vkl_llama_dora_build(r->m, &r->l, 1.0f, &r->dora, e)
                              : vkl_lora_set_build(r->c, &use, 1, &r->set, e);
}

/* Returns 0 (the outputs are in tmp), 2 (a finished run resumed with its
 * output written: nothing to do) or -1 (e set). */
static int train(const args *a, const char *tmp, run *r, vkl_err *e)
{
    /* P ranks share every step: the global batch is P x N micro-batches of B
     * rows, this rank's the R-th group of N */
    vkl_dist *dist = vkl_dist_active(vkl_app_dist) ? vkl_app_dist : NULL;
    int P = dist ? dist->size : 1, R = dist ? dist->rank : 0;
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_dtype wdt = a->weights_given ? a->weights : vkl_app_lm_model_dtype(a->model);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, wdt, &r->m, e) ||
        vkl_app_lm_tok_open(a->model, a->tok, r->m->cfg.vocab, &r->tok, e))
        return -1;
    if (dist && !a->quiet && !vkl_app_quiet) { /* which device each rank drives */
        const char *how = vkl_app_device_choice();
        fprintf(stderr, "lm train: rank %d of %d (local %d): %s%s%s%s\n", R, P, dist->local_rank,
                vkl_ctx_caps(r->c)->name, *how ? " (" : "", how, *how ? ")" : "");
    }
    const vkl_llama_config *cfg = &r->m->cfg;
    if (a->chat && vkl_chat_from_name(a->chat, &r->tok.chat, e)) return -1;
    if (vkl_app_lm_data_load(a->data, &r->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0, a->seq_len, a->packing,
                             &r->data, e))
        return -1;
    if (a->val_data && vkl_app_lm_data_load(a->val_data, &r->tok, cfg->bos, cfg->eos, cfg->eos >= 0 ? cfg->eos : 0,
                                            a->seq_len, a->packing, &r->val, e))
        return -1;
    if (a->val_fraction > 0 && hold_out(&r->data, &r->val, a->val_fraction, a->seed, e)) return -1;
    if (build_adapter(a, r, e)) return -1;
    int B = a->batch, L = a->seq_len, n = r->data.n, N = a->grad_accum, GB = P * N * B;
    int per_epoch = (n + GB - 1) / GB;
    long long want = a->steps ? a->steps : (long long)(a->epochs ? a->epochs : 1) * per_epoch;
    if (want > 100000000) return vkl_fail(e, "%lld steps (%d per epoch): more than 100000000", want, per_epoch);
    int total = (int)want;
    if (a->net == NET_ADALORA) {
        vkl_adalora_config ac = a->ada;
        if (!ac.total_step) ac.total_step = total;
        if (vkl_llama_adalora_init(r->m, &ac, a->targets, a->nt, a->seed, &r->ada, e) ||
            vkl_llama_adalora_alloc_new(r->ada, &r->alloc, e))
            return -1;
    }
    vkl_llama_train_opts to = {.loraplus_ratio = a->loraplus, .ia3 = r->ia3, .adalora = r->ada, .grad_accum = N,
                               .dist = dist, .dylora = r->dy};
    vkl_adamw_opts_default(&to.adam);
    to.adam.lr = a->lr;
    to.adam.weight_decay = a->wd;
    to.adam.max_grad_norm = a->max_grad_norm;
    if (vkl_llama_train_new(r->m, r->set, r->dora, B, L, &to, &r->tr, e)) return -1;
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/train_log.csv", tmp) >= sizeof path)
        return vkl_fail(e, "path too long: %s", tmp);
    r->log = R ? NULL : fopen(path, "w");
    size_t bl = (size_t)GB * L;
    r->ids = malloc(sizeof(int32_t) * bl);
    r->labels = malloc(sizeof(int32_t) * bl);
    r->attn = malloc(sizeof(int) * bl);
    r->order = malloc(sizeof(int) * (size_t)n);
    if (!R && !r->log) return vkl_fail(e, "cannot create %s", path);
    if (!r->ids || !r->labels || !r->attn || !r->order) return vkl_fail(e, "out of host memory");
    /* the columns of vklora train's log */
    if (r->log) fprintf(r->log, "step,epoch,loss,lr,grad_norm,skipped,seconds\n");
    if (!a->quiet && !R) {
        char split[96] = "";
        if (GB != B) snprintf(split, sizeof split, " (batch %d x gradient accumulation %d x %d ranks)", B, N, P);
        fprintf(stderr, "lm train: %s, %d modules, %d samples of %d tokens (%lld real), %d steps of batch %d%s\n",
                a->net == NET_IA3       ? "IA3"
                : a->net == NET_DORA    ? "DoRA"
                : a->net == NET_ADALORA ? "AdaLoRA"
                : a->net == NET_DYLORA  ? "DyLoRA"
                                        : "LoRA",
                r->ada ? r->ada->n : r->l.n, n, L, r->data.tokens, total, GB, split);
    }
    uint64_t rng = a->seed ^ 0x6c6d747261696eull;
    int pos = n, epoch = -1, start = 1; /* next index into order; n: reshuffle first */
    char statedir[4200], *opts = options_json(a);
    snprintf(statedir, sizeof statedir, "%s.state", a->out);
    vkl_app_lm_state ls = {.n = n, .order = r->order, .ranks = P, .grad_accum = N};
    if (r->ada && opts) { /* a resume must also find the same AdaLoRA schedule */
        char *o2 = vkl_app_adalora_options(opts, &r->ada->cfg);
        free(opts);
        opts = o2;
        ls.n_extra = vkl_adalora_alloc_state_size(r->alloc);
        ls.extra = r->ada_state = malloc(sizeof(float) * ls.n_extra);
        if (!ls.extra) return vkl_fail(e, "out of host memory");
    }
    r->opts = opts;
    if (!opts) return vkl_fail(e, "out of host memory");
    if (a->resume) {
        if (vkl_app_lm_state_load(statedir, r->c, r->tr, &ls, opts, r->log, e) ||
            (r->alloc && vkl_adalora_alloc_state_set(r->alloc, r->ada_state, e)))
            return -1;
        start = ls.step + 1;
        if (r->dy) vkl_dylora_skip(r->dy, ls.step); /* the ranks the saved steps drew */
        epoch = ls.epoch;
        pos = ls.pos;
        rng = ls.rng;
        if (start > total) {
            /* a run killed after its last state but before its output was
             * written: write it now from the state; with the output there,
             * there is nothing to do */
            char done[4300];
            struct stat sd;
            snprintf(done, sizeof done, "%s/adapter_model.safetensors", a->out);
            if (!stat(done, &sd)) {
                if (!a->quiet && !R)
                    fprintf(stderr, "lm train: %s is at step %d of %d and %s is written: nothing to do\n", statedir,
                            ls.step, total, a->out);
                return 2;
            }
        }
        if (!a->quiet && !R)
            fprintf(stderr, "lm train: resuming from step %d of %d (%s)%s\n", ls.step, total, statedir,
                    start > total ? ": writing the adapter" : "");
    }
    double t0 = vkl_progress_now();
    if (r->val.n && !R) { /* held-out scores: rank 0's, as its files */
        if ((size_t)snprintf(path, sizeof path, "%s/eval_log.csv", tmp) >= sizeof path)
            return vkl_fail(e, "path too long: %s", tmp);
        if (!(r->elog = fopen(path, "w"))) return vkl_fail(e, "cannot create %s", path);
        fprintf(r->elog, "step,loss,perplexity,tokens\n");
        if (vkl_app_lm_eval_new_ada(r->m, r->set, r->dora, r->ia3, r->ada, L, &r->ev, e) ||
            (start == 1 && evaluate(a, r, 0, e)))
            return -1;
    }
    vkl_progress p;
    vkl_progress_begin(&p, "lm train", total, a->quiet || R);
    for (int t = start; t <= total; t++) {
        /* a signal on any rank stops every rank at the same step */
        int stop = stop_;
        if (vkl_dist_any(dist, stop_, &stop, e)) return -1;
        if (stop) {
            stop_ = 1;
            return vkl_fail(e, "interrupted before step %d; nothing written", t);
        }
        for (int b = 0; b < GB; b++) {
            if (pos == n) {
                epoch++;
                for (int i = 0; i < n; i++) r->order[i] = i;
                vkl_shuffle_ints(r->order, n, &rng);
                pos = 0;
            }
            size_t src = (size_t)r->order[pos++] * L, dst = (size_t)b * L;
            memcpy(r->ids + dst, r->data.ids + src, sizeof(int32_t) * L);
            memcpy(r->labels + dst, r->data.labels + src, sizeof(int32_t) * L);
            memcpy(r->attn + dst, r->data.attn + src, sizeof(int) * L);
        }
        float lr = lr_at(a, t - 1, total), loss = 0;
        if (r->dy && vkl_dylora_draw(r->dy, e)) return vkl_err_prefix(e, "step %d: ", t), -1;
        if (N == 1 && !dist) {
            if (vkl_llama_train_step(r->tr, r->ids, r->labels, r->attn, t, lr, &loss, e))
                return vkl_err_prefix(e, "step %d: ", t), -1;
        } else {
            /* each micro-batch's gradient counts by its share of the step's
             * predicted tokens: the sum is the gradient of the global mean */
            long long all = predicted(r->labels, 0, GB, L);
            double l = 0;
            for (int m = R * N; m < R * N + N; m++) {
                long long own = predicted(r->labels, m * B, m * B + B, L);
                if (!own) continue; /* nothing to predict: no gradient (its mean would be 0/0) */
                float w = (float)((double)own / (double)all), lm;
                size_t at = (size_t)m * B * L;
                if (vkl_llama_train_accumulate(r->tr, r->ids + at, r->labels + at, r->attn + at, w, &lm, e))
                    return vkl_err_prefix(e, "step %d: ", t), -1;
                l += (double)w * lm;
            }
            if (vkl_dist_sum_f64(dist, &l, 1, e) || vkl_llama_train_update(r->tr, t, lr, e))
                return vkl_err_prefix(e, "step %d: ", t), -1;
            loss = (float)l;
        }
        if (!isfinite(loss)) return vkl_fail(e, "step %d: the loss is %g; try a lower --lr", t, loss);
        float gn = 0;
        int skipped = 0, budget = 0;
        if (vkl_adamw_result(vkl_llama_train_optimizer(r->tr), &gn, &skipped, e)) return -1;
        /* PEFT's update_and_allocate after the optimiser step, on the gradient as clipped; every
         * rank holds the same summed gradient and parameters, so every rank masks the same ranks */
        if (r->ada && vkl_llama_adalora_allocate(r->ada, r->alloc, r->tr, t,
                                                 vkl_llama_adalora_clip_factor(a->max_grad_norm, gn), &budget, e))
            return vkl_err_prefix(e, "step %d: ", t), -1;
        double same[2] = {skipped, gn};
        if (vkl_dist_check_same(dist, same, 2, "the gradient norm and NaN skip of a step", e)) return -1;
        if (r->log) fprintf(r->log, "%d,%d,%.7g,%.7g,%.7g,%d,%.3f\n", t, epoch, loss, lr, gn, skipped, vkl_progress_now() - t0);
        char extra[64];
        snprintf(extra, sizeof extra, "loss %.4f lr %.3g", loss, lr);
        vkl_progress_update(&p, t, extra);
        if (a->save_every && t % a->save_every == 0 && !R) { /* rank 0 alone writes */
            ls = (vkl_app_lm_state){t, epoch, pos, n, P, N, rng, r->order, r->ada_state, ls.n_extra};
            if (r->alloc) vkl_adalora_alloc_state_get(r->alloc, r->ada_state);
            if (fflush(r->log) || vkl_app_lm_state_save(statedir, r->c, r->tr, &ls, opts, path, e)) return -1;
        }
        if (r->ev && ((a->eval_every && t % a->eval_every == 0) || t == total) && evaluate(a, r, t, e)) return -1;
    }
    vkl_progress_end(&p);
    if (r->elog) {
        int bad = ferror(r->elog);
        bad |= fclose(r->elog) != 0;
        r->elog = NULL;
        if (bad) return vkl_fail(e, "cannot write %s/eval_log.csv", tmp);
    }
    if (R) return 0; /* rank 0 writes the adapter */
    int bad_log = ferror(r->log);
    bad_log |= fclose(r->log) != 0;
    r->log = NULL;
    if (bad_log) return vkl_fail(e, "cannot write %s", path);
    char st[4200], cj[4200];
    if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.safetensors", tmp) >= sizeof st ||
        (size_t)snprintf(cj, sizeof cj, "%s/adapter_config.json", tmp) >= sizeof cj)
        return vkl_fail(e, "path too long: %s", tmp);
    if (r->ada) {
        if (!a->quiet)
            fprintf(stderr, "lm train: AdaLoRA total rank %d (target %d = %d x %d modules)\n",
                    vkl_adalora_alloc_total_rank(r->alloc), a->ada.target_r * r->ada->n, a->ada.target_r, r->ada->n);
        if (vkl_llama_adalora_save(r->ada, r->alloc, a->targets, a->nt, a->model, st, cj, e)) return -1;
        if (!a->gguf) return 0;
        /* llama.cpp has no AdaLoRA: the LoRA the folder reads as (down = A * E) */
        vkl_lora fold;
        if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.gguf", tmp) >= sizeof st)
            return vkl_fail(e, "path too long: %s", tmp);
        if ((size_t)snprintf(cj, sizeof cj, "%s/adapter_model.safetensors", tmp) >= sizeof cj ||
            vkl_lora_load(cj, NULL, &fold, e))
            return -1;
        int grc = vkl_llama_lora_save_gguf(&r->m->cfg, &fold, st, e);
        vkl_lora_free(&fold);
        return grc;
    }
    if (r->ia3 ? vkl_llama_ia3_store(r->m, r->ia3, &r->l, e) : store(r->c, r->tr, &r->l, e)) return -1;
    if (vkl_lora_save_peft(&r->l, st, cj, e) ||
        vkl_app_peft_finish_config(cj, a->model, a->targets, a->nt, a->net == NET_IA3 ? a->ff : NULL, a->nf, e))
        return -1;
    if (!a->gguf) return 0;
    if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.gguf", tmp) >= sizeof st) return vkl_fail(e, "path too long: %s", tmp);
    return vkl_llama_lora_save_gguf(&r->m->cfg, &r->l, st, e);
}

int vkl_cmd_lm_train(int argc, char **argv)
{
    args a;
    int prc = parse(argc, argv, &a);
    if (prc) return prc == 1 ? 0 : prc;
    vkl_err e = {{0}};
    char cfgp[4200];
    vkl_llama_config cfg;
    int gguf = vkl_llama_is_gguf(a.model);
    snprintf(cfgp, sizeof cfgp, gguf ? "%s" : "%s/config.json", a.model);
    if (gguf ? vkl_llama_gguf_config(cfgp, &cfg, &e) : vkl_llama_config_read(cfgp, &cfg, &e)) {
        fprintf(stderr, "vklora lm train: %s\n", e.msg);
        return 1;
    }
    if (a.seq_len > cfg.max_pos) {
        fprintf(stderr, "vklora lm train: --seq-len %d exceeds the model's context of %d positions "
                        "(max_position_embeddings or llama.context_length in %s)\n", a.seq_len, cfg.max_pos, cfgp);
        return 2;
    }
    struct stat sd;
    int missing = stat(a.data, &sd) != 0;
    if (missing || !S_ISREG(sd.st_mode)) {
        fprintf(stderr, "vklora lm train: data file %s: %s\n", a.data, missing ? strerror(errno) : "not a file");
        return 1;
    }
    int exists = vkl_app_out_folder_check(a.out, OUT_NAMES, OUT_FILES, a.force || a.resume, &e); /* a resumed run replaces its own earlier output */
    if (exists < 0) {
        fprintf(stderr, "vklora lm train: %s\n", e.msg);
        return 1;
    }
    /* under mpirun rank 0 alone writes */
    int root = vkl_dist_is_root(vkl_app_dist);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", a.out, (long)getpid());
    if (root && mkdir(tmp, 0755)) {
        fprintf(stderr, "vklora lm train: cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    run r;
    memset(&r, 0, sizeof r);
    int rc = train(&a, tmp, &r, &e);
    if (!rc && stop_) rc = vkl_fail(&e, "interrupted; nothing written");
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    run_free(&r);
    if (rc == 2) { /* a finished run resumed: its output stands */
        if (root) vkl_app_out_folder_remove(tmp, OUT_NAMES, OUT_FILES);
        return 0;
    }
    if (!root) {
        if (rc && !stop_) fprintf(stderr, "vklora lm train: rank %d: %s\n", vkl_app_dist->rank, e.msg);
        return rc ? (stop_ ? 130 : 1) : 0;
    }
    if (!rc && exists) vkl_app_out_folder_remove(a.out, OUT_NAMES, OUT_FILES);
    if (!rc && vkl_rename_durable(tmp, a.out)) rc = vkl_fail(&e, "cannot rename %s to %s: %s", tmp, a.out, strerror(errno));
    if (rc) {
        vkl_app_out_folder_remove(tmp, OUT_NAMES, OUT_FILES);
        vkl_app_print_error("lm train", e.msg);
        return stop_ ? 130 : 1;
    }
    if (!a.quiet && !vkl_app_quiet) fprintf(stderr, "lm train: wrote %s\n", a.out);
    return 0;
}
