/* vklora lm hyperlora (research option): `train` learns a network that
 * emits LoRA adapters from a task description (lm_hyperlora_train.c);
 * `emit` runs it for one description and writes an ordinary PEFT adapter. */
#include "app.h"
#include "args.h"
#include "hyperlora_runner.h"
#include "lm_gen_args.h"
#include "quant.h"
#include "lm_hyperlora_cmd.h"
#include "out_folder.h"
#include "peft_config.h"
#include "progress.h"

#include "io/dir.h"
#include "llama/llama_lora_init.h"
#include "lora/hyperlora.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "lm hyperlora"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora lm hyperlora train --model DIR --tasks TASKS.jsonl -o HYPER.safetensors\n"
            "                                 [--rank 4] [--alpha 2 x rank] [--targets q_proj,v_proj] [--hidden 32]\n"
            "                                 [--steps 200] [--lr 1e-3] [--wd 0] [--max-grad-norm 1] [--batch 4]\n"
            "                                 [--seq-len 64] [--seed 0] [--log FILE.csv] [--force]\n"
            "       vklora lm hyperlora emit --hyper HYPER.safetensors --model DIR --description TEXT -o ADAPTER_DIR\n"
            "                                [--force]\n"
            "  (both: [--tokenizer FILE] [--base-dtype f32|f16|bf16])\n"
            "HyperLoRA, a research option: a small network (condition -> hidden H with tanh -> every LoRA A and B\n"
            "factor of the target modules, plus a bias holding a fresh LoRA's initialisation) emits an adapter\n"
            "from a task's description. The condition is the frozen model's mean final hidden state over the\n"
            "description's tokens, centred and scaled by the training tasks' conditions.\n"
            "train: each line of TASKS.jsonl is {\"description\": TEXT, \"data\": PATH} (data in lm train's formats;\n"
            "a relative PATH is taken from the tasks file's folder). Each step takes a task (every task once per\n"
            "round, in an order drawn from --seed), emits its adapter, computes the language model's loss and its\n"
            "gradient on a batch of the task's data, and trains the network through the adapter (AdamW).\n"
            "Writes HYPER.safetensors and the per-step losses to --log (default: HYPER's name with _log.csv).\n"
            "emit: writes ADAPTER_DIR/adapter_model.safetensors and adapter_config.json (PEFT), which\n"
            "`lm generate --lora` and PEFT load.\n");
}

static int bad(const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "vklora " CMD ": %s '%s': %s\n", opt, v, want);
    return 2;
}

static int set_weights(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd;
    vkl_app_hyper_args *a = dest;
    if (vkl_app_base_dtype(v, &a->weights) || vkl_dtype_is_quant(a->weights)) return bad(opt, v, "expected f32, f16 or bf16");
    a->weights_given = 1;
    return 0;
}

static int set_device(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd, (void)opt, (void)dest;
    vkl_ctx_default_device(v, "--device ");
    return 0;
}

static int set_targets(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd;
    vkl_app_hyper_args *a = dest;
    a->targets_list = v;
    if (vkl_app_hyper_split_targets(v, a->targets_buf, sizeof a->targets_buf, a->targets, &a->nt))
        return bad(opt, v, "expected 1 to 16 module names separated by commas");
    return 0;
}

/* 0 parsed, 1 help printed, 2 usage error. */
static int parse(int argc, char **argv, int train, vkl_app_hyper_args *a)
{
    memset(a, 0, sizeof *a);
    a->rank = 4;
    a->alpha = -1; /* until given: 2 x rank */
    a->hidden = 32;
    a->steps = 200;
    a->lr = 1e-3f;
    a->max_grad_norm = 1.0f;
    a->batch = 4;
    a->seq_len = 64;
    a->targets_list = "q_proj,v_proj";
    /* the options of both subcommands first, then train's or emit's */
    const vkl_arg common[] = {
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->force), .help = NULL},
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model), .help = NULL},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->out), .help = NULL},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&a->tok), .help = NULL},
        {"--base-dtype", "--weights", VKL_ARG_CALL, a, .call = set_weights},
        {"--device", NULL, VKL_ARG_CALL, a, .call = set_device},
    };
    const vkl_arg train_only[] = {
        {"--tasks", NULL, VKL_ARG_STR, VKL_AS_STR(&a->tasks), .help = NULL},
        {"--log", NULL, VKL_ARG_STR, VKL_AS_STR(&a->log), .help = NULL},
        {"--targets", NULL, VKL_ARG_CALL, a, .call = set_targets},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&a->rank), .lo = 1, .hi = 4096},
        {"--hidden", NULL, VKL_ARG_INT, VKL_AS_INT(&a->hidden), .lo = 1, .hi = 4096},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&a->steps), .lo = 1, .hi = 10000000},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&a->batch), .lo = 1, .hi = 4096},
        {"--seq-len", NULL, VKL_ARG_INT, VKL_AS_INT(&a->seq_len), .lo = 2, .hi = 1 << 20},
        {"--alpha", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->alpha), .lo = 1e-6, .hi = 1e6},
        {"--lr", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->lr), .lo = 0, .hi = 10},
        {"--wd", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->wd), .lo = 0, .hi = 10},
        {"--max-grad-norm", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->max_grad_norm), .lo = 0, .hi = 1e9},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&a->seed), .help = NULL},
    };
    const vkl_arg emit_only[] = {
        {"--hyper", NULL, VKL_ARG_STR, VKL_AS_STR(&a->hyper), .help = NULL},
        {"--description", NULL, VKL_ARG_STR, VKL_AS_STR(&a->description), .help = NULL},
    };
    enum { NC = sizeof common / sizeof *common, NT = sizeof train_only / sizeof *train_only,
           NE = sizeof emit_only / sizeof *emit_only };
    vkl_arg table[NC + NT];
    memcpy(table, common, sizeof common);
    if (train) memcpy(table + NC, train_only, sizeof train_only);
    else memcpy(table + NC, emit_only, sizeof emit_only);
    int rc = vkl_args_parse(train ? CMD " train" : CMD " emit", table, NC + (train ? NT : NE), argc - 1, argv + 1, NULL);
    if (rc == VKL_ARGS_HELP) {
        usage(stdout);
        return 1;
    }
    if (rc) return 2;
    int alpha_given = a->alpha >= 0;
    if (!alpha_given) a->alpha = train ? 2.0f * (float)a->rank : 8;
    if (train && !a->nt) vkl_app_hyper_split_targets(a->targets_list, a->targets_buf, sizeof a->targets_buf, a->targets, &a->nt);
    if (!a->model || !a->out || (train ? !a->tasks : !a->hyper || !a->description)) {
        fprintf(stderr, "vklora " CMD ": %s\n",
                train ? "train needs --model, --tasks and -o" : "emit needs --hyper, --model, --description and -o");
        usage(stderr);
        return 2;
    }
    if (train && !a->log) {
        if (vkl_app_hyper_log_name(a->out, a->log_buf, sizeof a->log_buf)) return bad("-o", a->out, "path too long");
        a->log = a->log_buf;
    }
    return 0;
}

/* ---- emit ---- */

typedef struct emit_run {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    vkl_lora l;
    vkl_hyperlora *hy;
    float *cond;
} emit_run;

static int emit(const vkl_app_hyper_args *a, const char *tmp, emit_run *r, vkl_err *e)
{
    vkl_hyperlora_meta meta;
    if (vkl_hyperlora_read_meta(a->hyper, &meta, e)) return -1;
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_dtype wdt = a->weights_given ? a->weights : vkl_app_lm_model_dtype(a->model);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, wdt, &r->m, e)) return -1;
    if (r->m->cfg.hidden != meta.cond_dim)
        return vkl_fail(e, "%s was trained on a model of hidden size %d (%s); %s has hidden size %d", a->hyper,
                        meta.cond_dim, meta.base[0] ? meta.base : "unnamed", a->model, r->m->cfg.hidden);
    char buf[1024];
    const char *targets[VKL_APP_HYPER_MAX_TARGETS];
    int nt;
    if (vkl_app_hyper_split_targets(meta.targets, buf, sizeof buf, targets, &nt))
        return vkl_fail(e, "%s: metadata targets \"%s\" unreadable", a->hyper, meta.targets);
    vkl_llama_lora_opts lo = {.targets = targets, .nt = nt, .rank = meta.rank, .alpha = meta.alpha};
    if (vkl_llama_lora_init(r->m, &lo, &r->l, e)) return vkl_err_prefix(e, "%s: ", a->hyper), -1;
    if (vkl_hyperlora_load(r->c, a->hyper, &r->l, &r->hy, e) ||
        vkl_app_lm_tok_open(a->model, a->tok, r->m->cfg.vocab, &r->tok, e))
        return -1;
    if (!(r->cond = malloc(sizeof(float) * (size_t)meta.cond_dim))) return vkl_fail(e, "out of host memory");
    char st[4400], cj[4400];
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", tmp);
    snprintf(cj, sizeof cj, "%s/adapter_config.json", tmp);
    return vkl_app_hyper_condition(r->m, &r->tok, a->description, r->cond, e) ||
                   vkl_hyperlora_emit(r->hy, r->cond, NULL, &r->l, e) ||
                   vkl_lora_meta_set(&r->l, "hyperlora_description", a->description, e) ||
                   vkl_lora_save_peft(&r->l, st, cj, e) || vkl_app_peft_finish_config(cj, a->model, targets, nt, NULL, 0, e)
               ? -1
               : 0;
}

static const char *const OUT_NAMES[2] = {"adapter_model.safetensors", "adapter_config.json"};

static int cmd_emit(const vkl_app_hyper_args *a)
{
    vkl_err e = {{0}};
    int brc = vkl_app_hyper_check_description(CMD " emit", a->description);
    if (brc) return brc;
    int exists = vkl_app_out_folder_check(a->out, OUT_NAMES, 2, a->force, &e);
    if (exists < 0) {
        fprintf(stderr, "vklora " CMD " emit: %s\n", e.msg);
        return 1;
    }
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", a->out, (long)getpid());
    if (mkdir(tmp, 0755)) {
        fprintf(stderr, "vklora " CMD " emit: cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    emit_run r;
    memset(&r, 0, sizeof r);
    int rc = emit(a, tmp, &r, &e);
    free(r.cond);
    vkl_hyperlora_free(r.hy);
    vkl_lora_free(&r.l);
    vkl_app_lm_tok_free(&r.tok);
    vkl_llama_free(r.m);
    if (r.c) vkl_ctx_destroy(r.c);
    return vkl_app_out_finish(CMD " emit", rc, tmp, a->out, OUT_NAMES, 2, exists, &e);
}

int vkl_cmd_lm_hyperlora(int argc, char **argv)
{
    int train = vkl_app_hyper_subcommand(CMD, argc, argv, usage);
    if (train < 0) return train == -1 ? 0 : 2;
    vkl_app_hyper_args a;
    int prc = parse(argc, argv, train, &a);
    if (prc) return prc == 1 ? 0 : prc;
    if (!train) return cmd_emit(&a);
    return vkl_app_hyper_check_tasks(CMD " train", a.tasks) ? 1 : vkl_app_hyper_train(&a);
}
