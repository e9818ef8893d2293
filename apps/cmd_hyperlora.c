/* vklora hyperlora (research option): HyperLoRA for Stable Diffusion 1.x /
 * 2.x. `train` learns a network that emits UNet LoRA adapters from a task
 * description (sd_hyperlora_train.c); `emit` runs it for one description and
 * writes an ordinary kohya LoRA file that `generate --lora` loads. */
#include "app.h"
#include "out_folder.h"
#include "args.h"
#include "hyperlora_runner.h"
#include "progress.h"
#include "sd_hyperlora_cmd.h"

#include "io/dir.h"
#include "lora/hyperlora.h"
#include "sd/sd_condition.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "hyperlora"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora hyperlora train --model M --tasks TASKS.jsonl -o HYPER.safetensors\n"
            "                              [--rank 4] [--alpha rank] [--hidden 32] [--steps 100] [--lr 1e-3] [--wd 0]\n"
            "                              [--max-grad-norm 1] [--batch 2] [--resolution 512] [--seed 0]\n"
            "                              [--log FILE.csv] [--model-config FILE.yaml] [--force]\n"
            "       vklora hyperlora emit --hyper HYPER.safetensors --model M --description TEXT -o ADAPTER.safetensors\n"
            "                             [--model-config FILE.yaml] [--force]\n"
            "HyperLoRA for Stable Diffusion 1.x / 2.x, a research option: a small network (condition -> hidden H\n"
            "with tanh -> every LoRA factor of the UNet's attention projections, plus a bias holding a fresh\n"
            "LoRA's initialisation) emits an adapter from a task's description. The condition is the frozen text\n"
            "encoder's final hidden states averaged over the description's tokens and its EOS token, centred and\n"
            "scaled by the training tasks' conditions.\n"
            "train: each line of TASKS.jsonl is {\"description\": TEXT, \"images\": DIR} (an image folder as\n"
            "`vklora train` reads it, captions in .txt files beside the images, centre-cropped to --resolution\n"
            "squares; a relative DIR is taken from the tasks file's folder). Each step takes a task (every task\n"
            "once per round, in an order drawn from --seed), emits its adapter, computes the diffusion loss and\n"
            "its gradient on a batch of the task's images at random timesteps, and trains the network through the\n"
            "adapter (AdamW). Writes HYPER.safetensors and the per-step losses to --log (default: HYPER's name with\n"
            "_log.csv).\n"
            "emit: writes ADAPTER.safetensors, a kohya LoRA for `generate --lora`.\n");
}

static int refuse(const char *sub, const char *msg)
{
    fprintf(stderr, "vklora " CMD " %s: %s\n", sub, msg);
    usage(stderr);
    return 2;
}

/* 0 parsed, 1 help printed, 2 usage error. */
static int parse(int argc, char **argv, int train, vkl_app_sd_hyper_args *a)
{
    memset(a, 0, sizeof *a);
    a->rank = 4;
    a->alpha = -1; /* the rank unless given */
    a->hidden = 32;
    a->steps = 100;
    a->lr = 1e-3f;
    a->max_grad_norm = 1.0f;
    a->batch = 2;
    a->resolution = 512;
    const vkl_arg common[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model), .help = "M  an SD 1.x / 2.x model"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->out), .help = "OUT"},
        {"--model-config", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model_config), .help = "FILE.yaml"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->force), .help = "replace OUT"},
        {"--device", NULL, VKL_ARG_CALL, NULL, .call = vkl_app_arg_device},
        {"--hyper", NULL, VKL_ARG_STR, VKL_AS_STR(&a->hyper), .help = "HYPER.safetensors"},
        {"--description", NULL, VKL_ARG_STR, VKL_AS_STR(&a->description), .help = "TEXT"},
    };
    const vkl_arg trainopts[] = {
        common[0], common[1], common[2], common[3], common[4],
        {"--tasks", NULL, VKL_ARG_STR, VKL_AS_STR(&a->tasks), .help = "TASKS.jsonl"},
        {"--log", NULL, VKL_ARG_STR, VKL_AS_STR(&a->log), .help = "FILE.csv"},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&a->rank), 1, 1024, .help = "R"},
        {"--alpha", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->alpha), 0, 1e6, .lo_open = 1, .help = "A  (the rank)"},
        {"--hidden", NULL, VKL_ARG_INT, VKL_AS_INT(&a->hidden), 1, 4096, .help = "H"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&a->steps), 1, 10000000, .help = "N"},
        {"--lr", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->lr), 0, 10, .help = "X"},
        {"--wd", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->wd), 0, 10, .help = "X"},
        {"--max-grad-norm", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&a->max_grad_norm), 0, 1e9, .help = "X  (0: none)"},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&a->batch), 1, 256, .help = "B"},
        {"--resolution", NULL, VKL_ARG_INT, VKL_AS_INT(&a->resolution), 8, 8192, .help = "N"},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&a->seed), .help = "S"},
    };
    const char *sub = train ? "train" : "emit";
    char cmd[32];
    snprintf(cmd, sizeof cmd, CMD " %s", sub);
    int rc = train ? vkl_args_parse(cmd, trainopts, (int)(sizeof trainopts / sizeof *trainopts), argc - 1, argv + 1, NULL)
                   : vkl_args_parse(cmd, common, (int)(sizeof common / sizeof *common), argc - 1, argv + 1, NULL);
    if (rc == VKL_ARGS_HELP) usage(stdout);
    if (rc == VKL_ARGS_USAGE) usage(stderr);
    if (rc) return rc;
    if (!a->model || !a->out || (train ? !a->tasks : !a->hyper || !a->description))
        return refuse(sub, train ? "--model, --tasks and -o are required" : "--hyper, --model, --description and -o are required");
    if (train && a->alpha < 0) a->alpha = (float)a->rank;
    if (train && !a->log) {
        if (vkl_app_hyper_log_name(a->out, a->log_buf, sizeof a->log_buf)) return refuse(sub, "-o: path too long");
        a->log = a->log_buf;
    }
    return 0;
}

/* ---- emit ---- */

typedef struct emit_run {
    vkl_ctx *c;
    vkl_sd_model *m;
    vkl_lora l;
    vkl_hyperlora *hy;
    float *cond;
} emit_run;

static int emit(const vkl_app_sd_hyper_args *a, const char *tmp, emit_run *r, vkl_err *e)
{
    vkl_hyperlora_meta meta;
    if (vkl_hyperlora_read_meta(a->hyper, &meta, e)) return -1;
    if (strcmp(meta.targets, VKL_APP_SD_HYPER_TARGETS))
        return vkl_fail(e, "%s emits adapters for the targets \"%s\" (a language model's: use vklora lm hyperlora emit), "
                           "not an image model's (\"%s\")", a->hyper, meta.targets, VKL_APP_SD_HYPER_TARGETS);
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.yaml = a->model_config;
    if (vkl_ctx_create(&co, &r->c, e) || vkl_sd_model_load(r->c, a->model, &mo, &r->m, e)) return -1;
    if (r->m->cfg->n_text_encoders != 1)
        return vkl_fail(e, "%s is an SDXL model: vklora hyperlora is for SD 1.x / 2.x models", a->model);
    int D = r->m->cfg->unet.cross_attention_dim;
    if (D != meta.cond_dim)
        return vkl_fail(e, "%s was trained on a model whose text states are %d wide (%s); %s has %d", a->hyper,
                        meta.cond_dim, meta.base[0] ? meta.base : "unnamed", a->model, D);
    if (vkl_app_sd_hyper_template(r->m, meta.rank, meta.alpha, 0, &r->l, e) ||
        vkl_hyperlora_load(r->c, a->hyper, &r->l, &r->hy, e))
        return -1;
    if (!(r->cond = malloc(sizeof(float) * (size_t)D))) return vkl_fail(e, "out of host memory");
    char dim[32], alpha[32];
    snprintf(dim, sizeof dim, "%d", meta.rank);
    snprintf(alpha, sizeof alpha, "%g", (double)meta.alpha);
    return vkl_sd_text_condition(r->m, a->description, r->cond, e) || vkl_hyperlora_emit(r->hy, r->cond, NULL, &r->l, e) ||
                   vkl_lora_meta_set(&r->l, "ss_network_module", "networks.lora", e) ||
                   vkl_lora_meta_set(&r->l, "ss_network_dim", dim, e) || vkl_lora_meta_set(&r->l, "ss_network_alpha", alpha, e) ||
                   vkl_lora_meta_set(&r->l, "hyperlora_description", a->description, e) ||
                   vkl_lora_save_kohya(&r->l, tmp, e)
               ? -1
               : 0;
}

static int cmd_emit(const vkl_app_sd_hyper_args *a)
{
    int brc = vkl_app_hyper_check_description(CMD " emit", a->description);
    if (brc) return brc;
    if (vkl_app_out_file_refuse(CMD " emit", a->out, a->force)) return 1;
    vkl_err e = {{0}};
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", a->out, (long)getpid());
    emit_run r;
    memset(&r, 0, sizeof r);
    int rc = emit(a, tmp, &r, &e);
    free(r.cond);
    vkl_hyperlora_free(r.hy);
    vkl_lora_free(&r.l);
    vkl_sd_model_free(r.m);
    if (r.c) vkl_ctx_destroy(r.c);
    return vkl_app_out_finish(CMD " emit", rc, tmp, a->out, NULL, 0, 0, &e);
}

int vkl_cmd_hyperlora(int argc, char **argv)
{
    int train = vkl_app_hyper_subcommand(CMD, argc, argv, usage);
    if (train < 0) return train == -1 ? 0 : 2;
    vkl_app_sd_hyper_args a;
    int prc = parse(argc, argv, train, &a);
    if (prc) return prc == 1 ? 0 : prc;
    if (!train) return cmd_emit(&a);
    return vkl_app_hyper_check_tasks(CMD " train", a.tasks) ? 1 : vkl_app_sd_hyper_train(&a);
}
