/* vklora lorahub: LoRAHub for image adapters (models/lora/lorahub.h). K
 * kohya-format LoRA files of one Stable Diffusion model are mixed with
 * weights learnt, without gradients, on a few image/caption pairs; a
 * candidate's loss is the diffusion training loss of the pairs at fixed
 * timesteps and fixed seeded noise (train/sd_fixed_loss.h), the same inputs
 * for every candidate. The model is loaded and the graphs planned once; each
 * candidate rewrites the adapter factors in place. Writes a kohya LoRA with
 * the weights in its metadata, and OUT's stem + "_lorahub.csv" as the log. */
#include "app.h"
#include "out_folder.h"
#include "args.h"
#include "lorahub_report.h"
#include "progress.h"
#include "stop_signal.h"

#include "lora/lora_apply.h"
#include "sd/sd_model.h"
#include "train/dataset.h"
#include "train/sd_fixed_loss.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CMD "lorahub"

typedef struct args {
    const char *model, *images, *out, *model_config;
    const char *adapters[VKL_LORAHUB_MAX];
    char list[8192];
    int k, steps, force, resolution, timesteps;
    double l1, sigma;
    unsigned long long seed;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora lorahub --model M --adapters A.safetensors,B.safetensors[,...] --images DIR -o OUT.safetensors\n"
            "                      [--steps 40] [--l1 0.05] [--seed 0] [--sigma 0.2] [--resolution 512]\n"
            "                      [--timesteps 4] [--model-config FILE.yaml] [--force]\n"
            "LoRAHub (Huang et al. 2023) for Stable Diffusion 1.x / 2.x adapters: learns weights w_1..w_K of K\n"
            "LoRA files of model M (kohya or any format vklora reads; the same modules and ranks) so that\n"
            "the composed adapter A = sum_i w_i A_i, B = sum_i w_i B_i (per module, as the paper composes)\n"
            "minimises the diffusion training loss on the images of DIR (kohya layout: captions in .txt\n"
            "files beside them, centre-cropped to --resolution squares) + l1 * sum_i |w_i|. The loss uses\n"
            "--timesteps fixed timesteps per image and fixed noise from --seed, the same for every candidate.\n"
            "Gradient-free: the K inputs alone and their plain average are evaluated first; then CMA-ES,\n"
            "seeded by --seed, searches the box [-1.5, 1.5]^K for --steps evaluations from the best of them\n"
            "with step size --sigma. Prints the best loss per generation; writes OUT as a kohya LoRA (the\n"
            "weights in its metadata: lorahub_weights) and OUT's stem + _lorahub.csv, the search's log.\n"
            "An existing OUT is replaced only with --force.\n");
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->steps = 40;
    a->l1 = 0.05;
    a->sigma = 0.2;
    a->resolution = 512;
    a->timesteps = 4;
    const char *list = NULL;
    const vkl_arg opts[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model), .help = "M"},
        {"--adapters", NULL, VKL_ARG_STR, VKL_AS_STR(&list), .help = "A.safetensors,B.safetensors[,...]"},
        {"--images", NULL, VKL_ARG_STR, VKL_AS_STR(&a->images), .help = "DIR"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->out), .help = "OUT.safetensors"},
        {"--model-config", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model_config), .help = "FILE.yaml"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&a->steps), 1, 100000, .help = "N"},
        {"--resolution", NULL, VKL_ARG_INT, VKL_AS_INT(&a->resolution), 8, 8192, .help = "N"},
        {"--timesteps", NULL, VKL_ARG_INT, VKL_AS_INT(&a->timesteps), 1, 1000, .help = "N"},
        {"--l1", NULL, VKL_ARG_DOUBLE, VKL_AS_DOUBLE(&a->l1), 0, INFINITY, .help = "X  weight of sum |w_i|"},
        {"--sigma", NULL, VKL_ARG_DOUBLE, VKL_AS_DOUBLE(&a->sigma), 0, 3, .lo_open = 1, .help = "X  CMA-ES step size"},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&a->seed), .help = "S"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->force), .help = "replace OUT"},
        {"--device", NULL, VKL_ARG_CALL, NULL, .call = vkl_app_arg_device},
    };
    int rc = vkl_args_parse(CMD, opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (rc == VKL_ARGS_HELP) usage(stdout);
    if (rc == VKL_ARGS_USAGE) usage(stderr);
    if (rc) return rc;
    if (!a->model || !list || !a->images || !a->out) {
        fprintf(stderr, "vklora " CMD ": --model, --adapters, --images and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (vkl_app_lorahub_split(CMD, list, a->list, sizeof a->list, a->adapters, &a->k)) return 2;
    return 0;
}

typedef struct run {
    vkl_ctx *c;
    vkl_sd_model *m;
    vkl_lora_targets targets;
    vkl_lora in[VKL_LORAHUB_MAX];
    const vkl_lora *inp[VKL_LORAHUB_MAX];
    int nin;
    vkl_lora mix;
    vkl_lora_set *set;
    vkl_dataset *ds;
    vkl_sd_fixed_loss *loss;
} run;

static void run_free(run *r)
{
    vkl_sd_fixed_loss_free(r->loss);
    if (r->m) r->m->unet.lora = r->m->te.lora = NULL;
    vkl_lora_set_free(r->set);
    vkl_lora_free(&r->mix);
    for (int i = 0; i < r->nin; i++) vkl_lora_free(&r->in[i]);
    vkl_lora_targets_free(&r->targets);
    vkl_dataset_free(r->ds);
    vkl_sd_model_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}

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
    return vkl_sd_fixed_loss_run(r->loss, loss, e);
}

/* What kohya's loaders read about the network, from the first input. */
static int carry_meta(vkl_lora *out, const vkl_lora *first, vkl_err *e)
{
    static const char *const keys[] = {"ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_base_model_version",
                                       "ss_v2", "ss_network_args"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        const char *v = vkl_lora_meta_get(first, keys[i]);
        if (v && vkl_lora_meta_set(out, keys[i], v, e)) return -1;
    }
    return 0;
}

static int lorahub(const args *a, const char *log_path, run *r, vkl_err *e)
{
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    if (vkl_ctx_create(&co, &r->c, e) ||
        vkl_lora_targets_open_yaml(a->model, a->model_config, &r->targets, e))
        return -1;
    vkl_lora_opts lo = {.targets = &r->targets};
    for (int i = 0; i < a->k; i++) {
        if (vkl_lora_load(a->adapters[i], &lo, &r->in[i], e)) {
            if (!strstr(e->msg, a->adapters[i])) vkl_err_prefix(e, "adapter %s: ", a->adapters[i]);
            return -1;
        }
        r->inp[i] = &r->in[i];
        r->nin++;
    }
    if (vkl_lorahub_check(r->inp, a->adapters, a->k, e)) return -1;
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.yaml = a->model_config;
    if (vkl_sd_model_load(r->c, a->model, &mo, &r->m, e)) return -1;
    if (r->m->cfg->n_text_encoders != 1)
        return vkl_fail(e, "%s is an SDXL model: vklora lorahub mixes SD 1.x / 2.x adapters", a->model);
    vkl_dataset_opts dopt;
    vkl_dataset_opts_default(&dopt);
    dopt.images_dir = a->images;
    dopt.resolution = a->resolution;
    dopt.bucket = 0; /* one square size: one planned UNet graph */
    dopt.seed = a->seed;
    if (vkl_dataset_open(&dopt, &r->ds, e)) return -1;
    int te = 0;
    for (int j = 0; j < r->in[0].n; j++) te |= r->in[0].m[j].name && !strncmp(r->in[0].m[j].name, "text_encoder", 12);
    /* the set is built once from the composed adapter; candidates rewrite its factors */
    vkl_lora_use use = {&r->mix, 1.0f, 1.0f};
    if (vkl_lorahub_prepare(r->inp, a->k, &r->mix, e) || vkl_lora_set_build(r->c, &use, 1, &r->set, e)) return -1;
    r->m->unet.lora = r->set;
    r->m->te.lora = r->set;
    if (vkl_sd_fixed_loss_new(r->m, r->ds, a->timesteps, a->seed, te, &r->loss, e)) return -1;

    int quiet = vkl_app_quiet;
    if (!quiet)
        fprintf(stderr, CMD ": %d adapters, %d images of %dx%d, %d timesteps each, %d evaluations, l1 %g, seed %llu\n",
                a->k, r->ds->nimages, r->ds->buckets[0].reso.w, r->ds->buckets[0].reso.h, a->timesteps, a->steps, a->l1,
                a->seed);
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
    int rc = vkl_app_lorahub_report_open(&rep, log_path, e) || vkl_lorahub_search(&o, candidate_loss, r, &res, e);
    if (!rc) vkl_app_lorahub_report_result(&rep, &o, &res);
    vkl_err ce;
    if (vkl_app_lorahub_report_close(&rep, log_path, &ce) && !rc) rc = -1, *e = ce;
    if (rc) return -1;
    vkl_lorahub_compose(r->inp, r->nin, res.w, &r->mix);
    if (carry_meta(&r->mix, &r->in[0], e) || vkl_app_lorahub_metadata(&r->mix, &rep, &res, a->adapters, e))
        return -1;
    return vkl_lora_save_kohya(&r->mix, a->out, e);
}

int vkl_cmd_lorahub(int argc, char **argv)
{
    args a;
    int prc = parse(argc, argv, &a);
    if (prc) return prc == 1 ? 0 : prc;
    struct stat st;
    for (int i = 0; i < a.k; i++)
        if (stat(a.adapters[i], &st)) {
            fprintf(stderr, "vklora " CMD ": adapter %s: %s\n", a.adapters[i], strerror(errno));
            return 1;
        }
    if (vkl_app_out_file_refuse(CMD, a.out, a.force)) return 1;
    /* the log beside the output: OUT minus .safetensors, + _lorahub.csv */
    char log_path[4200], tmp_log[4300];
    size_t n = strlen(a.out);
    const char *ext = ".safetensors";
    int cut = n > strlen(ext) && !strcmp(a.out + n - strlen(ext), ext) ? (int)(n - strlen(ext)) : (int)n;
    if (snprintf(log_path, sizeof log_path, "%.*s_lorahub.csv", cut, a.out) >= (int)sizeof log_path ||
        snprintf(tmp_log, sizeof tmp_log, "%s.tmp", log_path) >= (int)sizeof tmp_log) {
        fprintf(stderr, "vklora " CMD ": output path too long\n");
        return 2;
    }
    vkl_err e = {{0}};
    run r;
    memset(&r, 0, sizeof r);
    vkl_app_stop_catch();
    int rc = lorahub(&a, tmp_log, &r, &e);
    vkl_app_stop_restore();
    run_free(&r);
    if (!rc && rename(tmp_log, log_path)) rc = vkl_fail(&e, "cannot rename %s to %s: %s", tmp_log, log_path, strerror(errno));
    if (rc) {
        unlink(tmp_log);
        vkl_app_print_error(CMD, e.msg);
        return vkl_app_stop_requested() ? 130 : 1;
    }
    if (!vkl_app_quiet) fprintf(stderr, CMD ": wrote %s (log %s)\n", a.out, log_path);
    return 0;
}
