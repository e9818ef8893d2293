/* vklora lm merge: LoRA / DoRA adapters baked into a LLaMA-family model
 * folder that transformers loads: every tensor of the model (sharded or not)
 * into one model.safetensors, W + sum_i w_i delta_i for the adapted
 * projections (lora_delta.h, in double), config.json and the tokenizer
 * files copied. Written into a temporary folder beside OUTDIR, then renamed. */
#include "app.h"
#include "io/text.h"
#include "args.h"

#include "llama/llama_shards.h"
#include "lora/lora_delta.h"
#include "lora/lora_file.h"
#include "lora_args.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LORA 8

static const char *const COPIED[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                     "special_tokens_map.json", "generation_config.json", "vocab.json",
                                     "merges.txt", "added_tokens.json"};
#define N_COPIED (sizeof COPIED / sizeof *COPIED)

static void usage(FILE *f)
{
    fprintf(f, "usage: vklora lm merge --model DIR --lora ADAPTER_DIR[:W] [--lora ...] -o OUTDIR [--dtype f32|f16|bf16]\n"
               "                       [--force]\n"
               "Bakes PEFT LoRA / DoRA adapters (W scales each) into the model's weights and writes OUTDIR as a\n"
               "model folder: model.safetensors (each tensor in --dtype, else its own), config.json and the\n"
               "tokenizer files. IA3 adapters are refused. --force replaces an OUTDIR this command wrote.\n");
}

static int copy_file(const char *from, const char *to, vkl_err *e)
{
    FILE *a = fopen(from, "rb");
    if (!a) return vkl_fail(e, "cannot read %s", from);
    FILE *b = fopen(to, "wb");
    if (!b) {
        fclose(a);
        return vkl_fail(e, "cannot write %s", to);
    }
    char buf[65536];
    size_t n;
    int bad = 0;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) bad |= fwrite(buf, 1, n, b) != n;
    bad |= ferror(a);
    fclose(a);
    bad |= fclose(b) != 0;
    return bad ? vkl_fail(e, "cannot copy %s to %s", from, to) : 0;
}

/* Converts n f32 values into dt's bytes (dst has room). */
static void encode(const float *src, size_t n, vkl_dtype dt, void *dst)
{
    if (dt == VKL_F32) memcpy(dst, src, n * sizeof(float));
    for (size_t i = 0; dt == VKL_F16 && i < n; i++) ((uint16_t *)dst)[i] = vkl_f32_to_f16(src[i]);
    for (size_t i = 0; dt == VKL_BF16 && i < n; i++) {
        uint32_t u;
        memcpy(&u, &src[i], 4);
        u += 0x7FFF + ((u >> 16) & 1); /* round to nearest even, as torch */
        ((uint16_t *)dst)[i] = (uint16_t)(u >> 16);
    }
}

typedef struct job {
    const char *model, *out;
    char lora[MAX_LORA][4096];
    float w[MAX_LORA];
    int nlora, force, dtype_given;
    vkl_dtype dt;
} job;

static int merge(const job *j, const char *tmp, vkl_err *e)
{
    vkl_lora ls[MAX_LORA];
    int nl = 0, rc = 0, applied = 0, modules = 0;
    for (int i = 0; !rc && i < j->nlora; i++) {
        char path[4200];
        struct stat st;
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", j->lora[i]);
        if (stat(path, &st)) snprintf(path, sizeof path, "%s", j->lora[i]);
        if (vkl_lora_load(path, NULL, &ls[nl], e)) rc = -1;
        else nl++;
        for (int k = 0; !rc && k < ls[nl - 1].n; k++) {
            if (ls[nl - 1].m[k].kind == VKL_LORA_KIND_IA3) rc = vkl_fail(e, "%s: IA3 adapters cannot be merged here", path);
            else if (!ls[nl - 1].m[k].name) rc = vkl_fail(e, "%s: module %s names no model weight", path, ls[nl - 1].m[k].kname);
        }
        if (!rc) modules += ls[nl - 1].n;
    }
    vkl_llama_shards sh = {0};
    vkl_st_writer *w = NULL;
    if (!rc) rc = vkl_llama_shards_open(j->model, &sh, e);
    if (!rc && !(w = vkl_st_writer_new())) rc = vkl_fail(e, "out of host memory");
    for (int s = 0; !rc && s < sh.n; s++) {
        for (int i = 0; !rc && i < vkl_st_count(sh.f[s]); i++) {
            const vkl_st_tensor *t = vkl_st_at(sh.f[s], i);
            vkl_dtype dt = j->dtype_given ? j->dt : t->dtype;
            if (dt != VKL_F32 && dt != VKL_F16 && dt != VKL_BF16) dt = VKL_F32;
            float *x = malloc(sizeof(float) * t->nelem + 1);
            void *bytes = malloc(t->nelem * 4 + 1);
            double *d = NULL;
            if (!x || !bytes) rc = vkl_fail(e, "out of host memory for %s", t->name);
            if (!rc) rc = vkl_st_read(sh.f[s], t, VKL_F32, x, e);
            size_t nl_ = strlen(t->name);
            for (int a = 0; !rc && a < nl && nl_ > 7 && !strcmp(t->name + nl_ - 7, ".weight"); a++)
                for (int k = 0; !rc && k < ls[a].n; k++) {
                    const vkl_lora_module *mo = &ls[a].m[k];
                    if (strlen(mo->name) != nl_ - 7 || strncmp(mo->name, t->name, nl_ - 7)) continue;
                    if (vkl_lora_wnelem(mo) != t->nelem) {
                        rc = vkl_fail(e, "%s: module %s does not fit the model's %s", j->lora[a], mo->name, t->name);
                        break;
                    }
                    if (!d && !(d = malloc(sizeof(double) * t->nelem))) rc = vkl_fail(e, "out of host memory");
                    /* DoRA reads the weight as it is before this adapter */
                    if (!rc) rc = vkl_lora_delta(mo, x, d, e);
                    for (uint64_t q = 0; !rc && q < t->nelem; q++) x[q] = (float)((double)x[q] + j->w[a] * d[q]);
                    applied++;
                }
            if (!rc) {
                encode(x, t->nelem, dt, bytes);
                rc = vkl_st_writer_add(w, t->name, dt, t->ndim, t->shape, bytes, e);
            }
            free(x);
            free(bytes);
            free(d);
        }
    }
    if (!rc && applied != modules)
        rc = vkl_fail(e, "%d of the adapters' %d modules match no weight of %s", modules - applied, modules, j->model);
    char p[4300], q[4300];
    snprintf(p, sizeof p, "%s/model.safetensors", tmp);
    if (!rc) rc = vkl_st_writer_meta(w, "format", "pt", e) || vkl_st_writer_finish(w, p, e);
    vkl_st_writer_free(w);
    vkl_llama_shards_close(&sh);
    for (int i = 0; i < nl; i++) vkl_lora_free(&ls[i]);
    if (rc) return -1;
    /* config.json, with torch_dtype following --dtype */
    char *cfg = NULL;
    snprintf(p, sizeof p, "%s/config.json", j->model);
    if (vkl_read_text_file(p, 1 << 20, &cfg, NULL, e)) return -1;
    cJSON *c = cJSON_Parse(cfg);
    free(cfg);
    if (!c) return vkl_fail(e, "%s: not JSON", p);
    if (j->dtype_given) {
        const char *name = j->dt == VKL_F16 ? "float16" : j->dt == VKL_BF16 ? "bfloat16" : "float32";
        cJSON_DeleteItemFromObjectCaseSensitive(c, "torch_dtype");
        cJSON_AddStringToObject(c, "torch_dtype", name);
    }
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    snprintf(q, sizeof q, "%s/config.json", tmp);
    FILE *f = text ? fopen(q, "wb") : NULL;
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    ok = (f && fclose(f) == 0) && ok;
    free(text);
    if (!ok) return vkl_fail(e, "cannot write %s", q);
    for (size_t i = 0; i < N_COPIED; i++) {
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", j->model, COPIED[i]);
        snprintf(q, sizeof q, "%s/%s", tmp, COPIED[i]);
        if (!stat(p, &st) && copy_file(p, q, e)) return -1;
    }
    return 0;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    char p[4300];
    for (struct dirent *x; d && (x = readdir(d));) {
        if (!strcmp(x->d_name, ".") || !strcmp(x->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, x->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    rmdir(dir);
}

/* OUTDIR may be replaced (--force) only when it holds nothing but what this command writes. */
static int ours_only(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int ok = 1;
    for (struct dirent *x; (x = readdir(d));) {
        if (!strcmp(x->d_name, ".") || !strcmp(x->d_name, "..")) continue;
        int mine = !strcmp(x->d_name, "model.safetensors") || !strcmp(x->d_name, "config.json");
        for (size_t i = 0; i < N_COPIED; i++) mine |= !strcmp(x->d_name, COPIED[i]);
        ok &= mine;
    }
    closedir(d);
    return ok;
}

static int read_dtype(const char *cmd, const char *opt, const char *v, void *dest)
{
    job *j = dest;
    j->dtype_given = 1;
    return vkl_app_arg_dense_dtype(cmd, opt, v, &j->dt);
}

/* --lora DIR[:W], given once per adapter */
static int add_lora(const char *cmd, const char *opt, const char *v, void *dest)
{
    job *j = dest;
    if (j->nlora == MAX_LORA) {
        fprintf(stderr, "vklora %s: at most %d adapters\n", cmd, MAX_LORA);
        return 1;
    }
    vkl_err pe;
    int nw;
    j->w[j->nlora] = 1;
    if (vkl_app_lora_spec(v, j->lora[j->nlora], sizeof j->lora[j->nlora], &j->w[j->nlora], 1, &nw, &pe)) {
        fprintf(stderr, "vklora %s: %s %s\n", cmd, opt, pe.msg);
        return 1;
    }
    j->nlora++;
    return 0;
}

int vkl_cmd_lm_merge(int argc, char **argv)
{
    job j = {.dt = VKL_F32};
    const vkl_arg opts[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&j.model), .help = "DIR"},
        {"--lora", NULL, VKL_ARG_CALL, &j, .call = add_lora, .help = "DIR[:W]"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&j.out), .help = "OUT_DIR"},
        {"--dtype", NULL, VKL_ARG_CALL, &j, .call = read_dtype, .help = "f32|f16|bf16"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&j.force), .help = " replace OUT_DIR"},
    };
    int prc = vkl_args_parse("lm merge", opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (prc) {
        usage(prc == VKL_ARGS_HELP ? stdout : stderr);
        return prc == VKL_ARGS_HELP ? 0 : prc;
    }
    if (!j.model || !j.out || !j.nlora) {
        usage(stderr);
        return 2;
    }
    struct stat st;
    int exists = !stat(j.out, &st);
    if (exists && (!j.force || !S_ISDIR(st.st_mode) || !ours_only(j.out))) {
        fprintf(stderr, "vklora lm merge: %s exists; %s\n", j.out,
                j.force ? "it holds other files than a merged model" : "pass --force to replace it");
        return 1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", j.out, (long)getpid());
    if (mkdir(tmp, 0755)) {
        fprintf(stderr, "vklora lm merge: cannot create %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    vkl_err e = {{0}};
    int rc = merge(&j, tmp, &e);
    if (!rc && exists) remove_tree(j.out);
    if (!rc && rename(tmp, j.out)) rc = vkl_fail(&e, "cannot rename %s to %s: %s", tmp, j.out, strerror(errno));
    if (rc) {
        remove_tree(tmp);
        fprintf(stderr, "vklora lm merge: %s\n", e.msg);
        return 1;
    }
    return 0;
}
