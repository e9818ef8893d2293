/* `vklora merge --lora A[:W] --lora B[:W] ... -o OUT [--rank R]`: combines
 * adapters into one. Without --rank the ranks are concatenated (exact); with
 * --rank R each module's weighted sum of deltas is truncated by SVD and the
 * relative Frobenius error is reported per module and overall.
 * `vklora merge --model BASE --lora A[:W] ... -o OUT [--dtype f16|f32]`
 * bakes the adapters into a checkpoint in BASE's layout (sd/sd_bake.h). */
#include "app.h"
#include "out_folder.h"
#include "args.h"
#include "lora/lora_combine.h"
#include "sd/sd_bake.h"
#include "lora_args.h"
#include "lora/lora_dylora.h"

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_INPUTS 64

static int usage(FILE *f)
{
    fprintf(f,
            "usage: vklora merge --lora FILE[:WEIGHT] [--lora FILE[:WEIGHT] ...] -o OUT\n"
            "                    [--rank R] [--to kohya|peft] [--names MODEL] [--force]\n"
            "       vklora merge --lora FILE|PEFT_DIR --rank-at-inference R -o OUT [--to kohya|peft] [--force]\n"
            "       vklora merge --model MODEL --lora FILE[:WEIGHT] [...] -o OUT [--dtype f16|f32] [--force]\n"
            "                    [--model-config FILE.yaml (the yaml of a single-file MODEL; default <name>.yaml)]\n"
            "  Combines adapters into one whose delta W is sum_i WEIGHT_i * delta_i\n"
            "  (WEIGHT defaults to 1). Without --rank: ranks concatenated, exact (LoRA/LoCon).\n"
            "  --rank R  truncate each module's summed delta to rank R by SVD (any kind but\n"
            "            DoRA) and report the relative Frobenius error\n"
            "  --names   resolve kohya names against MODEL (needed for --to peft from kohya inputs)\n"
            "  --model   bake the adapters (any kind) into MODEL instead: OUT is a checkpoint in\n"
            "            MODEL's layout (single file, or a diffusers folder for a folder);\n"
            "            --dtype f16|f32 converts every float tensor (default: keep each);\n"
            "            --force replaces an existing output (file or folder); --verbose: the error per module\n"
            "  --rank-at-inference R  cut one adapter (a DyLoRA file, or any LoRA) to its first R rank rows,\n"
            "            alpha kept; R must be a multiple of a DyLoRA file's unit. OUT keeps the input's format\n"
            "            (a PEFT folder: OUT is a folder with adapter_model.safetensors and adapter_config.json)\n");
    return 2;
}

/* Which model an adapter is for, from its module names: adapters for
 * different models never combine into one file. */
static const char *family_of(const vkl_lora *l)
{
    for (int i = 0; i < l->n; i++) {
        const char *nm = vkl_lora_module_label(&l->m[i]);
        if (!strncmp(nm, "unet", 4) || !strncmp(nm, "text_encoder", 12) || !strncmp(nm, "lora_unet", 9) ||
            !strncmp(nm, "lora_te", 7))
            return "a Stable Diffusion";
        if (!strncmp(nm, "model.layers.", 13) || !strncmp(nm, "lora_model_layers", 17)) return "a language-model";
    }
    return NULL;
}

static void describe(const char *const *paths, const double *weights, int n, char *desc, size_t size)
{
    size_t k = 0;
    desc[0] = 0;
    for (int i = 0; i < n && k < size; i++)
        k += (size_t)snprintf(desc + k, size - k, "%s%s:%g", i ? ", " : "", paths[i], weights[i]);
}

static int bake(const char *base, const char *yaml, const char *const *paths, const double *weights, int n,
                const char *out, const char *dtype, int force)
{
    vkl_sd_bake_opts o = {VKL_DTYPE_COUNT, force, NULL, yaml};
    if (dtype && !strcmp(dtype, "f16")) o.dtype = VKL_F16;
    else if (dtype && !strcmp(dtype, "f32")) o.dtype = VKL_F32;
    else if (dtype) return fprintf(stderr, "vklora merge: --dtype f16|f32, not %s\n", dtype), 2;
    vkl_lora_targets t;
    vkl_err e;
    if (vkl_lora_targets_open_yaml(base, yaml, &t, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_lora loras[MAX_INPUTS];
    vkl_lora_use uses[MAX_INPUTS];
    int loaded = 0, rc = 0;
    for (; loaded < n; loaded++) {
        if (vkl_app_lora_load(paths[loaded], &t, NULL, &loras[loaded])) {
            rc = 1;
            break;
        }
        uses[loaded] = (vkl_lora_use){&loras[loaded], (float)weights[loaded], (float)weights[loaded]};
    }
    vkl_lora_targets_free(&t);
    char desc[4096];
    describe(paths, weights, n, desc, sizeof desc);
    o.description = desc;
    if (!rc && vkl_sd_bake(base, uses, n, out, &o, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        rc = 1;
    }
    if (!rc) vkl_log(VKL_LOG_INFO, "%s baked into %s -> %s", desc, base, out);
    for (int i = 0; i < loaded; i++) vkl_lora_free(&loras[i]);
    return rc;
}

/* One adapter cut to rank r (lora_dylora.h) and written in its own format,
 * or in `to`'s. A PEFT output without a .safetensors name is a folder. */
static int cut(const char *path, const char *names, int r, const char *to, const char *out, int force)
{
    char in[4200], file[4200];
    struct stat st;
    if (!stat(path, &st) && S_ISDIR(st.st_mode)) snprintf(in, sizeof in, "%s/adapter_model.safetensors", path);
    else snprintf(in, sizeof in, "%s", path);
    vkl_lora_targets t;
    vkl_err e;
    if (names && vkl_lora_targets_open(names, &t, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_lora l;
    int rc = vkl_app_lora_load(in, names ? &t : NULL, NULL, &l) ? 1 : 0;
    if (names) vkl_lora_targets_free(&t);
    if (rc) return rc;
    int from = vkl_dylora_max_rank(&l);
    if (vkl_dylora_cut(&l, r, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s: --rank-at-inference %d: %s", path, r, e.msg);
        vkl_lora_free(&l);
        return 1;
    }
    if (!to) to = l.format == VKL_LORA_FMT_PEFT ? "peft" : "kohya";
    size_t ol = strlen(out);
    int folder = !strcmp(to, "peft") && (ol < 12 || strcmp(out + ol - 12, ".safetensors"));
    snprintf(file, sizeof file, folder ? "%s/adapter_model.safetensors" : "%s", out);
    if (folder && mkdir(out, 0755) && errno != EEXIST) {
        vkl_log(VKL_LOG_ERROR, "cannot create folder %s: %s", out, strerror(errno));
        rc = 1;
    }
    char comment[160];
    snprintf(comment, sizeof comment, "cut from rank %d to %d by vklora merge --rank-at-inference", from, r);
    if (!rc && vkl_lora_meta_set(&l, "ss_training_comment", comment, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        rc = 1;
    }
    if (!rc) rc = vkl_app_lora_save(&l, to, file, force) ? 1 : 0;
    if (!rc) vkl_log(VKL_LOG_INFO, "%s: %d modules cut from rank %d to %d -> %s", path, l.n, from, r, out);
    vkl_lora_free(&l);
    return rc;
}

int vkl_cmd_merge(int argc, char **argv)
{
    const char *out = NULL, *to = NULL, *model = NULL, *base = NULL, *dtype = NULL, *yaml = NULL;
    static vkl_app_lora_list inputs; /* 256 KiB */
    int rank = 0, force = 0, verbose = 0, rank_at = 0;
    const vkl_arg opts[] = {
        {"--lora", NULL, VKL_ARG_CALL, &inputs, .call = vkl_app_arg_lora, .help = "FILE[:WEIGHT]"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "OUT"},
        {"--to", NULL, VKL_ARG_STR, VKL_AS_STR(&to), .help = "kohya|peft"},
        {"--names", NULL, VKL_ARG_STR, VKL_AS_STR(&model), .help = "MODEL"},
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&base), .help = "MODEL"},
        {"--dtype", NULL, VKL_ARG_STR, VKL_AS_STR(&dtype), .help = "f16|f32"},
        {"--model-config", NULL, VKL_ARG_STR, VKL_AS_STR(&yaml), .help = "FILE.yaml"},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&rank), 1, 100000, .help = "R"},
        {"--rank-at-inference", NULL, VKL_ARG_INT, VKL_AS_INT(&rank_at), 1, 100000, .help = "R"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&force), .help = " replace OUT"},
        {"--verbose", "-v", VKL_ARG_FLAG, VKL_AS_INT(&verbose), .help = " per-module lines"},
    };
    inputs.n = 0;
    inputs.max = MAX_INPUTS;
    int prc = vkl_args_parse("merge", opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (prc) return usage(prc == VKL_ARGS_HELP ? stdout : stderr), prc == VKL_ARGS_HELP ? 0 : prc;
    const char *paths[MAX_INPUTS];
    double weights[MAX_INPUTS];
    int n = inputs.n;
    for (int i = 0; i < n; i++) paths[i] = inputs.path[i], weights[i] = inputs.w[i];
    if (!n || !out) return usage(stderr);
    struct stat st;
    for (int i = 0; i < n; i++)
        if (stat(paths[i], &st)) return fprintf(stderr, "vklora merge: adapter %s not found\n", paths[i]), 1;
    struct stat so, sb;
    int is_model = base && !stat(out, &so) && !stat(base, &sb) && so.st_ino == sb.st_ino && so.st_dev == sb.st_dev;
    if (!is_model && vkl_app_out_file_refuse("merge", out, force)) return 1; /* the model itself: bake says why not */
    if (rank_at) {
        if (n != 1 || weights[0] != 1.0 || rank || base || dtype)
            return fprintf(stderr, "vklora merge: --rank-at-inference cuts one adapter (one --lora without a weight; "
                                   "no --rank, --model or --dtype)\n"),
                   2;
        if (to && strcmp(to, "kohya") && strcmp(to, "peft")) return fprintf(stderr, "vklora merge: --to kohya|peft\n"), 2;
        return cut(paths[0], model, rank_at, to, out, force);
    }
    if (base) {
        if (to || rank || model)
            return fprintf(stderr, "vklora merge: --to, --rank and --names combine adapters; --model bakes them into "
                                   "a model\n"),
                   2;
        return bake(base, yaml, paths, weights, n, out, dtype, force);
    }
    if (dtype) return fprintf(stderr, "vklora merge: --dtype applies to baking (--model)\n"), 2;
    if (!to) to = "kohya";
    if (strcmp(to, "kohya") && strcmp(to, "peft")) return fprintf(stderr, "vklora merge: --to kohya|peft\n"), 2;
    vkl_lora_targets t;
    vkl_err e;
    if (model && vkl_lora_targets_open(model, &t, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_lora loras[MAX_INPUTS];
    vkl_lora_input in[MAX_INPUTS];
    int loaded = 0, rc = 0;
    for (; loaded < n; loaded++) {
        if (vkl_app_lora_load(paths[loaded], model ? &t : NULL, NULL, &loras[loaded])) {
            rc = 1;
            break;
        }
        in[loaded] = (vkl_lora_input){&loras[loaded], weights[loaded]};
        const char *f0 = family_of(&loras[0]), *fi = family_of(&loras[loaded]);
        if (f0 && fi && strcmp(f0, fi)) {
            vkl_log(VKL_LOG_ERROR, "%s is %s adapter and %s is %s adapter: they cannot be merged into one", paths[0],
                    f0, paths[loaded], fi);
            rc = 1;
            loaded++;
            break;
        }
    }
    vkl_lora res;
    vkl_lora_combine_report rep;
    if (!rc && vkl_lora_combine(in, n, rank, &res, &rep, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        rc = 1;
    }
    if (!rc) {
        char desc[4096];
        describe(paths, weights, n, desc, sizeof desc);
        vkl_lora_meta_set(&res, "ss_network_module", "networks.lora", &e);
        vkl_lora_meta_set(&res, "vklora_merge_inputs", desc, &e);
        vkl_lora_meta_set(&res, "vklora_merge_method", rank ? "svd" : "concat", &e);
        if (rank) {
            double worst = 0, mean = 0;
            int wi = 0;
            for (int i = 0; i < res.n; i++) {
                if (verbose)
                    vkl_log(VKL_LOG_INFO, "%-80s rank %d  relative error %.3e", vkl_lora_module_label(&res.m[i]),
                            res.m[i].rank, rep.rel_err[i]);
                mean += rep.rel_err[i] / res.n;
                if (rep.rel_err[i] > worst) worst = rep.rel_err[i], wi = i;
            }
            vkl_log(VKL_LOG_INFO, "rank %d: relative Frobenius error %.3e overall, mean %.3e and max %.3e over %d "
                    "modules (max at %s; --verbose lists each)", rank, rep.total_err, mean, worst, res.n,
                    res.n ? vkl_lora_module_label(&res.m[wi]) : "-");
        }
        rc = vkl_app_lora_save(&res, to, out, force) ? 1 : 0;
        if (!rc) vkl_log(VKL_LOG_INFO, "%d modules from %d adapters -> %s", res.n, n, out);
        vkl_lora_combine_report_free(&rep);
        vkl_lora_free(&res);
    }
    for (int i = 0; i < loaded; i++) vkl_lora_free(&loras[i]);
    if (model) vkl_lora_targets_free(&t);
    return rc;
}
