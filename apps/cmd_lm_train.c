/* vklora lm train: fine-tunes a LLaMA-family model (HF folder) with a new
 * LoRA, DoRA or IA3 adapter on a text or .jsonl file and writes it as PEFT
 * saves it (adapter_model.safetensors + adapter_config.json), with the loss
 * of every step in train_log.csv beside it. Everything goes to a temporary
 * folder first, renamed to the output only when training succeeded. */
#include "app.h"
#include "lm_data.h"
#include "progress.h"

#include "llama/llama_gguf.h"
#include "llama/llama_lora_gguf.h"
#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
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
#define OUT_FILES 4
static const char *const OUT_NAMES[OUT_FILES] = {"adapter_model.safetensors", "adapter_config.json", "train_log.csv",
                                                 "adapter_model.gguf"};

/* Set by SIGINT / SIGTERM: the loop stops between steps so the temporary folder is removed. */
static volatile sig_atomic_t stop_;

static void on_signal(int sig)
{
    (void)sig;
    stop_ = 1;
}

typedef enum { NET_LORA, NET_DORA, NET_IA3 } network;
typedef enum { SCHED_CONSTANT, SCHED_LINEAR, SCHED_COSINE } schedule;

typedef struct args {
    const char *model, *data, *out, *tok;
    network net;
    int rank, rslora, steps, epochs, batch, seq_len, warmup, quiet, device, force, gguf;
    float alpha, lr, loraplus, wd, max_grad_norm;
    uint64_t seed;
    schedule sched;
    char targets_buf[512];
    const char *targets[MAX_TARGETS], *ff[MAX_TARGETS];
    int nt, nf;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora lm train --model DIR|FILE.gguf --data FILE -o ADAPTER_DIR [--network lora|dora|ia3]\n"
            "         [--rank 8] [--alpha 16] [--targets q_proj,v_proj] [--rslora] [--loraplus-ratio X]\n"
            "         [--lr 1e-4] [--max-steps N | --epochs N] [--batch 4] [--seq-len 128] [--seed N]\n"
            "         [--weight-decay 0] [--max-grad-norm 1] [--lr-schedule constant|linear|cosine] [--warmup N]\n"
            "         [--tokenizer tokenizer.model|tok.bin] [--format peft|gguf] [--device N|cpu|gpu|NAME] [--force] [--quiet]\n"
            "Data: a text file (tokenized whole, BOS first, cut into seq-len windows) or a .jsonl file with a\n"
            "\"text\" field per line (one sample each, truncated or padded to seq-len). Samples are shuffled\n"
            "each epoch from --seed. Default length: one epoch (--steps is --max-steps, as before). Targets: module name suffixes; defaults are\n"
            "PEFT's for LLaMA (LoRA/DoRA q_proj,v_proj; IA3 k_proj,v_proj,down_proj, down_proj feed-forward).\n"
            "Writes ADAPTER_DIR/adapter_model.safetensors, adapter_config.json (PEFT) and train_log.csv\n"
            "(step,epoch,loss,lr,grad_norm,skipped,seconds, as vklora train's). --force replaces an existing ADAPTER_DIR made by this command.\n"
            "--format gguf (LoRA only) also writes ADAPTER_DIR/adapter_model.gguf, the adapter as llama.cpp's --lora loads it.\n");
}

static int bad(const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "vklora lm train: %s %s: %s\n", opt, v, want);
    return 2;
}

static int get_int(const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        char want[96];
        snprintf(want, sizeof want, "expected an integer in [%ld, %ld]", lo, hi);
        return bad(opt, v, want);
    }
    *out = (int)x;
    return 0;
}

static int get_float(const char *opt, const char *v, double lo, float *out)
{
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x) || x < lo) {
        char want[64];
        snprintf(want, sizeof want, "expected a number >= %g", lo);
        return bad(opt, v, want);
    }
    *out = (float)x;
    return 0;
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

static int parse(int argc, char **argv, args *a)
{
    *a = (args){.net = NET_LORA, .rank = 8, .alpha = 16, .lr = 1e-4f, .loraplus = 1, .batch = 4, .seq_len = 128,
                .max_grad_norm = 1, .device = -1, .sched = SCHED_CONSTANT};
    int rc = 0;
    for (int i = 1; i < argc && !rc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(o, "--rslora")) a->rslora = 1;
        else if (!strcmp(o, "--quiet") || !strcmp(o, "-q")) a->quiet = 1;
        else if (!strcmp(o, "--force")) a->force = 1;
        else if (!v) {
            fprintf(stderr, "vklora lm train: unknown or incomplete argument %s\n", o);
            usage(stderr);
            return 2;
        } else {
            i++;
            if (!strcmp(o, "--model")) a->model = v;
            else if (!strcmp(o, "--data")) a->data = v;
            else if (!strcmp(o, "-o") || !strcmp(o, "--output")) a->out = v;
            else if (!strcmp(o, "--tokenizer")) a->tok = v;
            else if (!strcmp(o, "--network")) {
                if (!strcmp(v, "lora")) a->net = NET_LORA;
                else if (!strcmp(v, "dora")) a->net = NET_DORA;
                else if (!strcmp(v, "ia3")) a->net = NET_IA3;
                else rc = bad(o, v, "unknown network (lora, dora or ia3)");
            } else if (!strcmp(o, "--format")) {
                if (!strcmp(v, "peft")) a->gguf = 0;
                else if (!strcmp(v, "gguf")) a->gguf = 1;
                else rc = bad(o, v, "unknown adapter format (peft or gguf)");
            } else if (!strcmp(o, "--lr-schedule")) {
                if (!strcmp(v, "constant")) a->sched = SCHED_CONSTANT;
                else if (!strcmp(v, "linear")) a->sched = SCHED_LINEAR;
                else if (!strcmp(v, "cosine")) a->sched = SCHED_COSINE;
                else rc = bad(o, v, "unknown schedule (constant, linear or cosine)");
            } else if (!strcmp(o, "--targets")) rc = split_targets(a, v);
            else if (!strcmp(o, "--rank")) rc = get_int(o, v, 1, 4096, &a->rank);
            else if (!strcmp(o, "--max-steps") || !strcmp(o, "--steps")) rc = get_int(o, v, 1, 100000000, &a->steps);
            else if (!strcmp(o, "--epochs")) rc = get_int(o, v, 1, 1000000, &a->epochs);
            else if (!strcmp(o, "--batch")) rc = get_int(o, v, 1, 4096, &a->batch);
            else if (!strcmp(o, "--seq-len")) rc = get_int(o, v, 2, 1 << 20, &a->seq_len);
            else if (!strcmp(o, "--warmup")) rc = get_int(o, v, 0, 100000000, &a->warmup);
            else if (!strcmp(o, "--device")) vkl_ctx_default_device(v, "--device ");
            else if (!strcmp(o, "--seed")) {
                char *end;
                unsigned long long x = strtoull(v, &end, 10);
                if (!*v || *end || *v == '-') rc = bad(o, v, "expected a non-negative integer");
                a->seed = x;
            } else if (!strcmp(o, "--alpha")) rc = get_float(o, v, 0, &a->alpha);
            else if (!strcmp(o, "--lr")) rc = get_float(o, v, 0, &a->lr);
            else if (!strcmp(o, "--loraplus-ratio")) rc = get_float(o, v, 1e-6, &a->loraplus);
            else if (!strcmp(o, "--weight-decay")) rc = get_float(o, v, 0, &a->wd);
            else if (!strcmp(o, "--max-grad-norm")) rc = get_float(o, v, 0, &a->max_grad_norm);
            else {
                fprintf(stderr, "vklora lm train: unknown argument %s\n", o);
                usage(stderr);
                return 2;
            }
        }
    }
    if (rc) return rc;
    resolve_targets(a);
    if (!a->model || !a->data || !a->out) {
        fprintf(stderr, "vklora lm train: --model, --data and -o are required\n");
        usage(stderr);
        return 2;
    }
    if (a->steps && a->epochs) {
        fprintf(stderr, "vklora lm train: give --steps or --epochs, not both\n");
        return 2;
    }
    if (a->gguf && a->net != NET_LORA) {
        fprintf(stderr, "vklora lm train: --format gguf holds LoRA adapters only, not --network %s\n",
                a->net == NET_DORA ? "dora" : "ia3");
        return 2;
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

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void shuffle(int *p, int n, uint64_t *rng)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix(rng) % (uint64_t)(i + 1)), t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
}

static void remove_outputs(const char *dir)
{
    char p[4200];
    for (int i = 0; i < OUT_FILES; i++) {
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, OUT_NAMES[i]) < sizeof p) unlink(p);
    }
    rmdir(dir);
}

/* 0: absent; 1: an empty folder or (with force) one holding only our files; -1: refused. */
static int check_out(const char *out, int force, vkl_err *e)
{
    struct stat st;
    if (stat(out, &st)) return 0;
    if (!S_ISDIR(st.st_mode)) return vkl_fail(e, "%s exists and is not a folder", out);
    DIR *d = opendir(out);
    if (!d) return vkl_fail(e, "cannot read folder %s", out);
    int others = 0, ours = 0;
    for (struct dirent *x; (x = readdir(d));) {
        if (!strcmp(x->d_name, ".") || !strcmp(x->d_name, "..")) continue;
        int mine = 0;
        for (int i = 0; i < OUT_FILES; i++) mine |= !strcmp(x->d_name, OUT_NAMES[i]);
        mine ? ours++ : others++;
    }
    closedir(d);
    if (others) return vkl_fail(e, "%s holds files other than an adapter; choose another output folder", out);
    if (ours && !force) return vkl_fail(e, "%s already holds an adapter; pass --force to replace it", out);
    return 1;
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

static void put(cJSON *j, const char *key, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(j, key)) cJSON_ReplaceItemInObjectCaseSensitive(j, key, v);
    else cJSON_AddItemToObject(j, key, v);
}

static cJSON *names(const char *const *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateString(v[i]));
    return a;
}

/* The config as PEFT writes it for a causal LM: the base model's path, the
 * task, and target_modules (feedforward_modules for IA3) as the user named
 * them (suffixes), rather than the expanded per-layer list. */
static int finish_config(const char *path, const char *model, const char *const *t, int nt, const char *const *ff,
                         int nf, vkl_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "cannot reopen %s", path);
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    if (!j) return vkl_fail(e, "%s: not the JSON just written", path);
    put(j, "base_model_name_or_path", cJSON_CreateString(model));
    put(j, "task_type", cJSON_CreateString("CAUSAL_LM"));
    put(j, "target_modules", names(t, nt));
    if (ff) put(j, "feedforward_modules", names(ff, nf));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    f = s ? fopen(path, "wb") : NULL;
    int ok = f && fputs(s, f) >= 0 && fputc('\n', f) != EOF;
    ok = (f && fclose(f) == 0) && ok;
    free(s);
    return ok ? 0 : vkl_fail(e, "cannot write %s", path);
}

typedef struct run {
    vkl_ctx *c;
    vkl_llama *m;
    vkl_app_lm_tok tok;
    vkl_app_lm_data data;
    vkl_lora l;
    vkl_lora_set *set;
    vkl_llama_dora *dora;
    vkl_llama_ia3 *ia3;
    vkl_llama_train *tr;
    int32_t *ids, *labels;
    int *attn, *order;
    FILE *log;
} run;

static void run_free(run *r)
{
    if (r->log) fclose(r->log);
    free(r->ids);
    free(r->labels);
    free(r->attn);
    free(r->order);
    vkl_llama_train_free(r->tr);
    vkl_lora_set_free(r->set);
    vkl_llama_dora_free(r->dora);
    vkl_llama_ia3_free(r->ia3);
    vkl_lora_free(&r->l);
    vkl_app_lm_data_free(&r->data);
    vkl_app_lm_tok_free(&r->tok);
    vkl_llama_free(r->m);
    if (r->c) vkl_ctx_destroy(r->c);
}

static int build_adapter(const args *a, run *r, vkl_err *e)
{
    vkl_lora_use use = {&r->l, 1.0f, 1.0f};
    if (a->net == NET_IA3)
        return vkl_llama_ia3_init(r->m, a->targets, a->nt, a->ff, a->nf, &r->l, e) ||
               vkl_llama_ia3_build(r->m, &use, 1, &r->ia3, e);
    vkl_llama_lora_opts o = {.targets = a->targets, .nt = a->nt, .rank = a->rank, .alpha = a->alpha,
                             .rslora = a->rslora, .dora = a->net == NET_DORA, .seed = a->seed};
    if (vkl_llama_lora_init(r->m, &o, &r->l, e)) return -1;
    return a->net == NET_DORA ? vkl_llama_dora_build(r->m, &r->l, 1.0f, &r->dora, e)
                              : vkl_lora_set_build(r->c, &use, 1, &r->set, e);
}

static int train(const args *a, const char *tmp, run *r, vkl_err *e)
{
    vkl_ctx_opts co;
    vkl_ctx_opts_default(&co);
    if (vkl_ctx_create(&co, &r->c, e) || vkl_llama_load(r->c, a->model, VKL_F32, &r->m, e) ||
        vkl_app_lm_tok_open(a->model, a->tok, r->m->cfg.vocab, &r->tok, e))
        return -1;
    const vkl_llama_config *cfg = &r->m->cfg;
    if (vkl_app_lm_data_load(a->data, &r->tok, cfg->bos, cfg->eos >= 0 ? cfg->eos : 0, a->seq_len, &r->data, e))
        return -1;
    if (build_adapter(a, r, e)) return -1;
    int B = a->batch, L = a->seq_len, n = r->data.n;
    int per_epoch = (n + B - 1) / B;
    long long want = a->steps ? a->steps : (long long)(a->epochs ? a->epochs : 1) * per_epoch;
    if (want > 100000000) return vkl_fail(e, "%lld steps (%d per epoch): more than 100000000", want, per_epoch);
    int total = (int)want;
    vkl_llama_train_opts to = {.loraplus_ratio = a->loraplus, .ia3 = r->ia3};
    vkl_adamw_opts_default(&to.adam);
    to.adam.lr = a->lr;
    to.adam.weight_decay = a->wd;
    to.adam.max_grad_norm = a->max_grad_norm;
    if (vkl_llama_train_new(r->m, r->set, r->dora, B, L, &to, &r->tr, e)) return -1;
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/train_log.csv", tmp) >= sizeof path)
        return vkl_fail(e, "path too long: %s", tmp);
    r->log = fopen(path, "w");
    size_t bl = (size_t)B * L;
    r->ids = malloc(sizeof(int32_t) * bl);
    r->labels = malloc(sizeof(int32_t) * bl);
    r->attn = malloc(sizeof(int) * bl);
    r->order = malloc(sizeof(int) * (size_t)n);
    if (!r->log) return vkl_fail(e, "cannot create %s", path);
    if (!r->ids || !r->labels || !r->attn || !r->order) return vkl_fail(e, "out of host memory");
    /* the columns of vklora train's log */
    fprintf(r->log, "step,epoch,loss,lr,grad_norm,skipped,seconds\n");
    if (!a->quiet)
        fprintf(stderr, "lm train: %s, %d modules, %d samples of %d tokens (%lld real), %d steps of batch %d\n",
                a->net == NET_IA3 ? "IA3" : a->net == NET_DORA ? "DoRA" : "LoRA", r->l.n, n, L, r->data.tokens, total,
                B);
    uint64_t rng = a->seed ^ 0x6c6d747261696eull;
    int pos = n, epoch = -1; /* next index into order; n: reshuffle first */
    double t0 = vkl_progress_now();
    vkl_progress p;
    vkl_progress_begin(&p, "lm train", total, a->quiet);
    for (int t = 1; t <= total; t++) {
        if (stop_) return vkl_fail(e, "interrupted before step %d; nothing written", t);
        for (int b = 0; b < B; b++) {
            if (pos == n) {
                epoch++;
                for (int i = 0; i < n; i++) r->order[i] = i;
                shuffle(r->order, n, &rng);
                pos = 0;
            }
            size_t src = (size_t)r->order[pos++] * L, dst = (size_t)b * L;
            memcpy(r->ids + dst, r->data.ids + src, sizeof(int32_t) * L);
            memcpy(r->labels + dst, r->data.labels + src, sizeof(int32_t) * L);
            memcpy(r->attn + dst, r->data.attn + src, sizeof(int) * L);
        }
        float lr = lr_at(a, t - 1, total), loss = 0;
        if (vkl_llama_train_step(r->tr, r->ids, r->labels, r->attn, t, lr, &loss, e))
            return vkl_err_prefix(e, "step %d: ", t), -1;
        if (!isfinite(loss)) return vkl_fail(e, "step %d: the loss is %g; try a lower --lr", t, loss);
        float gn = 0;
        int skipped = 0;
        if (vkl_adamw_result(vkl_llama_train_optimizer(r->tr), &gn, &skipped, e)) return -1;
        fprintf(r->log, "%d,%d,%.7g,%.7g,%.7g,%d,%.3f\n", t, epoch, loss, lr, gn, skipped, vkl_progress_now() - t0);
        char extra[64];
        snprintf(extra, sizeof extra, "loss %.4f lr %.3g", loss, lr);
        vkl_progress_update(&p, t, extra);
    }
    vkl_progress_end(&p);
    int bad_log = ferror(r->log);
    bad_log |= fclose(r->log) != 0;
    r->log = NULL;
    if (bad_log) return vkl_fail(e, "cannot write %s", path);
    if (r->ia3 ? vkl_llama_ia3_store(r->m, r->ia3, &r->l, e) : store(r->c, r->tr, &r->l, e)) return -1;
    char st[4200], cj[4200];
    if ((size_t)snprintf(st, sizeof st, "%s/adapter_model.safetensors", tmp) >= sizeof st ||
        (size_t)snprintf(cj, sizeof cj, "%s/adapter_config.json", tmp) >= sizeof cj)
        return vkl_fail(e, "path too long: %s", tmp);
    if (vkl_lora_save_peft(&r->l, st, cj, e) ||
        finish_config(cj, a->model, a->targets, a->nt, a->net == NET_IA3 ? a->ff : NULL, a->nf, e))
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
    int exists = check_out(a.out, a.force, &e);
    if (exists < 0) {
        fprintf(stderr, "vklora lm train: %s\n", e.msg);
        return 1;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", a.out, (long)getpid());
    if (mkdir(tmp, 0755)) {
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
    if (!rc && exists) remove_outputs(a.out);
    if (!rc && rename(tmp, a.out)) rc = vkl_fail(&e, "cannot rename %s to %s: %s", tmp, a.out, strerror(errno));
    if (rc) {
        remove_outputs(tmp);
        fprintf(stderr, "vklora lm train: %s\n", e.msg);
        return stop_ ? 130 : 1;
    }
    if (!a.quiet && !vkl_app_quiet) fprintf(stderr, "lm train: wrote %s\n", a.out);
    return 0;
}
