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
#include "lm_adalora_args.h"
#include "lm_train_run.h"
#include "out_folder.h"
#include "progress.h"
#include "stop_signal.h"

#include "llama/llama_gguf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define OUT_FILES 5
static const char *const OUT_NAMES[OUT_FILES] = {"adapter_model.safetensors", "adapter_config.json", "train_log.csv",
                                                 "eval_log.csv", "adapter_model.gguf"};

typedef vkl_app_lm_train_args args;

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
        if (a->nt == VKL_APP_LM_MAX_TARGETS) return bad("--targets", v, "at most 16 entries");
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
                vkl_app_lm_net_name(a->net));
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
    vkl_app_stop_catch();
    int rc = vkl_app_lm_train_run(&a, tmp, &e);
    if (!rc) rc = vkl_app_stop_check(&e);
    vkl_app_stop_restore();
    if (rc == 2) { /* a finished run resumed: its output stands */
        if (root) vkl_app_out_folder_remove(tmp, OUT_NAMES, OUT_FILES);
        return 0;
    }
    if (!root) {
        int stopped = vkl_app_stop_requested();
        if (rc && !stopped) fprintf(stderr, "vklora lm train: rank %d: %s\n", vkl_app_dist->rank, e.msg);
        return rc ? (stopped ? 130 : 1) : 0;
    }
    if (!rc && exists) vkl_app_out_folder_remove(a.out, OUT_NAMES, OUT_FILES);
    if (!rc && vkl_rename_durable(tmp, a.out)) rc = vkl_fail(&e, "cannot rename %s to %s: %s", tmp, a.out, strerror(errno));
    if (rc) {
        vkl_app_out_folder_remove(tmp, OUT_NAMES, OUT_FILES);
        vkl_app_print_error("lm train", e.msg);
        return vkl_app_stop_requested() ? 130 : 1;
    }
    if (!a.quiet && !vkl_app_quiet) fprintf(stderr, "lm train: wrote %s\n", a.out);
    return 0;
}
