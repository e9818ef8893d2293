/* `vklora lm hyperlora train` and `emit` end to end (the built binary) on
 * tiny-llama with three synthetic tasks of different words (fruit names,
 * digits, letter pairs), each with its own description:
 *   - the log has one row per step, every task once per round;
 *   - each emitted adapter's factors are the network of the file run here
 *     (the condition from the model's final hidden states, the MLP in double);
 *   - the emitted adapter file, loaded as a PEFT LoRA, gives the same logits
 *     as the model whose weights have W + alpha/r B A merged here;
 *   - the loss, computed here, of each task under the adapter emitted for
 *     its description is lower than under the base model and than under the
 *     adapters emitted for the other descriptions;
 *   - the adapter loads in `lm generate --lora`.
 * Bad input: missing tasks or data file, an empty description (in the tasks
 * file or to emit), a network for another model, a file that is no network. */
#include "../models/llama_check.h"
#include "io/safetensors.h"
#include "lora/lora_apply.h"
#include "tokenizer/sp_bpe.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

#define MODEL "refkit/lm/tiny-llama"
#define NT 3
#define LINES 16
#define WORDS 5
#define STEPS 36
#define HID 16
#define TRAIN "--steps 36 --lr 5e-3 --seq-len 24 --hidden 16 --rank 4 --seed 1"

static const char *const DESC[NT] = {"fruit words: apple, banana and cherry", "counting with the digits one to five",
                                     "sleepy letters zz, xx and qq"};
static const char *const WORD[NT][5] = {
    {"apple", "banana", "cherry"}, {"1", "2", "3", "4", "5"}, {"zz", "xx", "qq"}};
static const int NWORD[NT] = {3, 5, 3};
static char text[NT][LINES][128];

static int setup(void **state)
{
    if (vkl_test_group_setup(state)) return -1;
    uint64_t s = 7;
    char p[512];
    snprintf(p, sizeof p, "%s/tasks.jsonl", vkl_test_dir);
    FILE *tf = fopen(p, "w");
    for (int k = 0; k < NT; k++) {
        snprintf(p, sizeof p, "%s/task%d.jsonl", vkl_test_dir, k + 1);
        FILE *f = fopen(p, "w");
        for (int i = 0; i < LINES; i++) {
            text[k][i][0] = 0;
            for (int w = 0; w < WORDS; w++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                strcat(text[k][i], w ? " " : "");
                strcat(text[k][i], WORD[k][(s >> 33) % (uint64_t)NWORD[k]]);
            }
            fprintf(f, "{\"text\": \"%s\"}\n", text[k][i]);
        }
        fclose(f);
        fprintf(tf, "{\"description\": \"%s\", \"data\": \"task%d.jsonl\"}\n", DESC[k], k + 1);
    }
    fclose(tf);
    return 0;
}

static char *run_ok(const char *args)
{
    char *out = NULL;
    int st = vkl_test_cli(args, NULL, &out);
    if (st) fail_msg("vklora %s: status %d\n%s", args, st, out ? out : "");
    return out;
}

static const char *in_dir(const char *a)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", vkl_test_dir, a);
    return p[k];
}

/* ---- recomputed here ---- */

/* The mean final hidden state over the text's tokens after BOS, read through a tap. */
typedef struct tapped {
    vkl_tensor *fin;
} tapped;
static void tap_fin(void *u, int layer, const char *name, vkl_tensor *t)
{
    if (layer == -1 && !strcmp(name, "final_norm_out")) ((tapped *)u)->fin = t;
}

static int32_t *encode(vkl_sp *sp, const char *s, int *n)
{
    int32_t *w = NULL;
    int nw = 0;
    vkl_err e = {{0}};
    if (vkl_sp_encode(sp, s, &w, &nw, &e)) fail_msg("%s", e.msg);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(nw + 1));
    ids[0] = 1; /* tiny-llama's BOS */
    memcpy(ids + 1, w, sizeof(int32_t) * (size_t)nw);
    free(w);
    *n = nw + 1;
    return ids;
}

/* Logits [n, V] of ids through the model with the adapter set (may be NULL). */
static float *logits_of(vkl_ctx *c, const vkl_llama *m, const vkl_lora_set *set, const int32_t *ids, int n,
                        tapped *tp)
{
    vkl_tensor *tid = lm_ids(c, ids, 1, n), *mask = lm_mask(c, 1, n, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_llama_fwd o = {.lora = set, .mask = mask, .explicit_attn = 1, .tap = tp ? tap_fin : NULL, .tap_user = tp};
    vkl_tensor *lg = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, lg);
    if (tp) vkl_graph_keep(g, tp->fin);
    lm_plan(g);
    lm_run(g);
    float *x = lm_download(c, lg);
    if (tp) {
        float *f = lm_download(c, tp->fin);
        tp->fin = (vkl_tensor *)f; /* hand the host copy back */
    }
    vkl_graph_free(g);
    vkl_tensor_free(tid);
    vkl_tensor_free(mask);
    return x;
}

/* Mean cross-entropy of every token after BOS of the task's lines. */
static double task_loss(vkl_ctx *c, const vkl_llama *m, const vkl_lora_set *set, vkl_sp *sp, int k)
{
    int V = m->cfg.vocab;
    double sum = 0;
    long cnt = 0;
    for (int i = 0; i < LINES; i++) {
        int n;
        int32_t *ids = encode(sp, text[k][i], &n);
        if (n > 24) fail_msg("task %d line %d: %d tokens, more than --seq-len", k + 1, i + 1, n);
        float *lg = logits_of(c, m, set, ids, n, NULL);
        for (int t = 1; t < n; t++) {
            const float *row = lg + (size_t)(t - 1) * V;
            double mx = row[0], z = 0;
            for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            for (int v = 0; v < V; v++) z += exp(row[v] - mx);
            sum += mx + log(z) - row[ids[t]];
            cnt++;
        }
        free(lg);
        free(ids);
    }
    return sum / (double)cnt;
}

static float *st_read(vkl_st_file *f, const char *name, uint64_t n)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) fail_msg("%s has no %s", vkl_st_path(f), name);
    float *x = malloc(sizeof(float) * n);
    vkl_err e = {{0}};
    if (vkl_st_read_f32(f, name, x, n, &e)) fail_msg("%s", e.msg);
    return x;
}

/* The factors the file's network emits for description k, in double here:
 * o [P] and the layout (module names, out, in) from its metadata. */
static float *emit_here(vkl_ctx *c, const vkl_llama *m, vkl_sp *sp, vkl_st_file *hf, int k, cJSON **mods, int64_t *P)
{
    int D = m->cfg.hidden;
    double scale = atof(vkl_st_meta_get(hf, "cond_scale"));
    *mods = cJSON_Parse(vkl_st_meta_get(hf, "modules"));
    assert_true(cJSON_IsArray(*mods));
    int R = atoi(vkl_st_meta_get(hf, "rank"));
    *P = 0;
    for (int i = 0; i < cJSON_GetArraySize(*mods); i++) {
        const cJSON *x = cJSON_GetArrayItem(*mods, i);
        *P += (int64_t)R * (cJSON_GetArrayItem(x, 1)->valueint + cJSON_GetArrayItem(x, 2)->valueint);
    }
    float *w1 = st_read(hf, "hyper.w1", (uint64_t)HID * D), *b1 = st_read(hf, "hyper.b1", HID);
    float *w2 = st_read(hf, "hyper.w2", (uint64_t)(*P * HID)), *b2 = st_read(hf, "hyper.b2", (uint64_t)*P);
    float *mean = st_read(hf, "hyper.cond_mean", (uint64_t)D);
    int n;
    int32_t *ids = encode(sp, DESC[k], &n);
    tapped tp = {0};
    free(logits_of(c, m, NULL, ids, n, &tp));
    float *fin = (float *)tp.fin;
    double *x = calloc((size_t)D, sizeof(double)), h[HID];
    for (int d = 0; d < D; d++) {
        for (int t = 1; t < n; t++) x[d] += fin[(size_t)t * D + d];
        x[d] = (x[d] / (n - 1) - mean[d]) / scale;
    }
    for (int j = 0; j < HID; j++) {
        double z = b1[j];
        for (int d = 0; d < D; d++) z += (double)w1[(size_t)j * D + d] * x[d];
        h[j] = tanh(z);
    }
    float *o = malloc(sizeof(float) * (size_t)*P);
    for (int64_t p = 0; p < *P; p++) {
        double s = b2[p];
        for (int j = 0; j < HID; j++) s += (double)w2[(size_t)p * HID + j] * h[j];
        o[p] = (float)s;
    }
    free(w1), free(b1), free(w2), free(b2), free(mean), free(ids), free(fin), free(x);
    return o;
}

static void test_train_emit(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    char args[2048];
    const char *model = vkl_test_shared_path(MODEL);
    snprintf(args, sizeof args, "lm hyperlora train --model '%s' --tasks tasks.jsonl -o hyper.safetensors " TRAIN, model);
    char *out = run_ok(args);
    assert_non_null(strstr(out, "3 tasks, 6 adapter modules (2688 numbers emitted), hidden 16, 36 steps"));
    free(out);
    /* the log: one row per step, every task once per round */
    char *log = vkl_test_slurp(vkl_test_dir, "hyper_log.csv");
    assert_non_null(log);
    assert_true(!strncmp(log, "step,task,loss,lr,seconds\n", 26));
    char *p = strchr(log, '\n') + 1;
    int seen[NT] = {0};
    for (int t = 1; t <= STEPS; t++) {
        int step, task;
        double loss;
        assert_int_equal(sscanf(p, "%d,%d,%lf", &step, &task, &loss), 3);
        assert_int_equal(step, t);
        assert_true(task >= 1 && task <= NT && isfinite(loss));
        seen[task - 1]++;
        if (t % NT == 0)
            for (int k = 0; k < NT; k++) assert_int_equal(seen[k], t / NT);
        p = strchr(p, '\n') + 1;
    }
    assert_int_equal(*p, 0);
    free(log);
    for (int k = 0; k < NT; k++) {
        snprintf(args, sizeof args, "lm hyperlora emit --hyper hyper.safetensors --model '%s' --description '%s' -o E%d",
                 model, DESC[k], k + 1);
        free(run_ok(args));
    }

    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32), *merged = lm_load(c, MODEL, VKL_F32);
    vkl_sp *sp = NULL;
    vkl_err e = {{0}};
    if (vkl_sp_load(vkl_test_shared_path(MODEL "/tokenizer.model"), &sp, &e)) fail_msg("%s", e.msg);
    vkl_st_file *hf = NULL;
    if (vkl_st_open(in_dir("hyper.safetensors"), &hf, &e)) fail_msg("%s", e.msg);
    vkl_lora l[NT];
    vkl_lora_set *set[NT];
    for (int k = 0; k < NT; k++) {
        char dir[16];
        snprintf(dir, sizeof dir, "E%d", k + 1);
        /* the factors: the network run here */
        cJSON *mods;
        int64_t P;
        float *o = emit_here(c, m, sp, hf, k, &mods, &P);
        vkl_st_file *af = NULL;
        snprintf(args, sizeof args, "%s/adapter_model.safetensors", in_dir(dir));
        if (vkl_st_open(args, &af, &e)) fail_msg("%s", e.msg);
        assert_int_equal(vkl_st_count(af), 2 * cJSON_GetArraySize(mods));
        int64_t off = 0;
        for (int i = 0; i < cJSON_GetArraySize(mods); i++) {
            const cJSON *x = cJSON_GetArrayItem(mods, i);
            const char *name = cJSON_GetArrayItem(x, 0)->valuestring;
            int O = cJSON_GetArrayItem(x, 1)->valueint, I = cJSON_GetArrayItem(x, 2)->valueint;
            char key[512];
            snprintf(key, sizeof key, "base_model.model.%s.lora_A.weight", name);
            float *a = st_read(af, key, (uint64_t)4 * I);
            vkl_test_assert_close(key, a, o + off, (size_t)4 * I, 1e-6f, 1e-4f);
            snprintf(key, sizeof key, "base_model.model.%s.lora_B.weight", name);
            float *b = st_read(af, key, (uint64_t)O * 4);
            vkl_test_assert_close(key, b, o + off + 4 * I, (size_t)O * 4, 1e-6f, 1e-4f);
            /* merged here into the second model: W + (alpha / r) B A with the factors run here */
            if (k == 0) {
                snprintf(key, sizeof key, "%s.weight", name);
                vkl_tensor *w = vkl_weights_find(merged->w, key);
                assert_non_null(w);
                float *wh = lm_download(c, w);
                const float *A = o + off, *B = o + off + 4 * I;
                for (int r = 0; r < O; r++)
                    for (int q = 0; q < I; q++) {
                        double s = 0;
                        for (int j = 0; j < 4; j++) s += (double)B[r * 4 + j] * A[j * I + q];
                        wh[(size_t)r * I + q] += (float)(8.0 / 4.0 * s);
                    }
                if (vkl_tensor_upload(c, w, wh, VKL_F32, &e)) fail_msg("%s", e.msg);
                free(wh);
            }
            free(a);
            free(b);
            off += (int64_t)4 * (I + O);
        }
        assert_int_equal(off, P);
        vkl_st_close(af);
        cJSON_Delete(mods);
        free(o);
        snprintf(args, sizeof args, "%s/adapter_model.safetensors", in_dir(dir));
        if (vkl_lora_load(args, NULL, &l[k], &e)) fail_msg("%s", e.msg);
        vkl_lora_use use = {&l[k], 1.0f, 1.0f};
        if (vkl_lora_set_build(c, &use, 1, &set[k], &e)) fail_msg("%s", e.msg);
    }
    /* the file as a run-time LoRA = the weights merged here */
    int n;
    int32_t *ids = encode(sp, "apple banana 1 2 zz", &n);
    float *lr = logits_of(c, m, set[0], ids, n, NULL), *lm = logits_of(c, merged, NULL, ids, n, NULL);
    float *lb = logits_of(c, m, NULL, ids, n, NULL);
    size_t nl = (size_t)n * m->cfg.vocab;
    vkl_test_assert_close("logits with E1 vs merged here", lr, lm, nl, 1e-4f, 1e-4f);
    assert_true(vkl_test_max_abs_diff(lr, lb, nl) > 1e-2f); /* and the adapter does change them */
    free(lr), free(lm), free(lb), free(ids);

    /* each task is best served by its own description's adapter */
    double loss[NT + 1][NT];
    for (int k = 0; k < NT; k++) {
        loss[NT][k] = task_loss(c, m, NULL, sp, k);
        for (int j = 0; j < NT; j++) loss[j][k] = task_loss(c, m, set[j], sp, k);
    }
    printf("  loss on task (columns) with adapter (rows): base, then emitted for task 1..3\n");
    for (int j = NT; j >= 0; j--) {
        printf("  %-6s", j == NT ? "base" : (const char *[]){"E1", "E2", "E3"}[j]);
        for (int k = 0; k < NT; k++) printf(" %8.4f", loss[j][k]);
        printf("\n");
    }
    for (int k = 0; k < NT; k++) {
        assert_true(loss[k][k] < loss[NT][k]);
        for (int j = 0; j < NT; j++)
            if (j != k && !(loss[k][k] < loss[j][k]))
                fail_msg("task %d: its adapter's loss %.4f is not below adapter %d's %.4f", k + 1, loss[k][k], j + 1,
                         loss[j][k]);
    }
    for (int k = 0; k < NT; k++) {
        vkl_lora_set_free(set[k]);
        vkl_lora_free(&l[k]);
    }
    vkl_st_close(hf);
    vkl_sp_free(sp);
    vkl_llama_free(m);
    vkl_llama_free(merged);
    vkl_test_ctx_done(c);

    /* an ordinary PEFT adapter for lm generate */
    char *cfg = vkl_test_slurp(vkl_test_dir, "E1/adapter_config.json");
    cJSON *j = cJSON_Parse(cfg);
    free(cfg);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "peft_type")->valuestring, "LORA");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "r")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "lora_alpha")->valueint, 8);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "task_type")->valuestring, "CAUSAL_LM");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "target_modules")), 2);
    cJSON_Delete(j);
    snprintf(args, sizeof args, "lm generate --model '%s' --lora E1 --prompt 'apple' --max-tokens 4", model);
    free(run_ok(args));
}

/* A failing command: status want, message containing msg. */
static void refused(const char *args, int want, const char *msg)
{
    char *out = NULL;
    int st = vkl_test_cli(args, NULL, &out);
    if (st != want || !out || !strstr(out, msg))
        fail_msg("vklora %s: status %d (want %d), output:\n%s\n(wanted: %s)", args, st, want, out ? out : "", msg);
    free(out);
}

static void write_file(const char *name, const char *s)
{
    FILE *f = fopen(in_dir(name), "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void test_bad(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    const char *model = vkl_test_shared_path(MODEL);
    char args[2048];
    snprintf(args, sizeof args, "lm hyperlora train --model '%s' --tasks none.jsonl -o x.safetensors", model);
    refused(args, 1, "tasks file none.jsonl: no such file");
    write_file("t_nodata.jsonl", "{\"description\": \"fruit\", \"data\": \"task1.jsonl\"}\n"
                                 "{\"description\": \"digits\", \"data\": \"missing.jsonl\"}\n");
    snprintf(args, sizeof args, "lm hyperlora train --model '%s' --tasks t_nodata.jsonl -o x.safetensors", model);
    refused(args, 1, "t_nodata.jsonl line 2: data file");
    write_file("t_empty.jsonl", "{\"description\": \"fruit\", \"data\": \"task1.jsonl\"}\n"
                                "{\"description\": \"  \", \"data\": \"task2.jsonl\"}\n");
    snprintf(args, sizeof args, "lm hyperlora train --model '%s' --tasks t_empty.jsonl -o x.safetensors", model);
    refused(args, 1, "t_empty.jsonl line 2: the description is empty");
    write_file("t_same.jsonl", "{\"description\": \"fruit\", \"data\": \"task1.jsonl\"}\n"
                               "{\"description\": \"fruit\", \"data\": \"task2.jsonl\"}\n");
    snprintf(args, sizeof args, "lm hyperlora train --model '%s' --tasks t_same.jsonl -o x.safetensors", model);
    refused(args, 1, "t_same.jsonl: tasks 1 and 2 have the same description");
    struct stat st;
    assert_true(stat(in_dir("x.safetensors"), &st) && stat(in_dir("x_log.csv"), &st));
    /* a one-step network for the emit cases */
    snprintf(args, sizeof args, "--quiet lm hyperlora train --model '%s' --tasks tasks.jsonl -o one.safetensors --steps 1 "
                                "--seq-len 32 --hidden 4", model);
    free(run_ok(args));
    snprintf(args, sizeof args, "lm hyperlora emit --hyper one.safetensors --model '%s' --description ' ' -o X", model);
    refused(args, 2, "--description is empty");
    snprintf(args, sizeof args, "lm hyperlora emit --hyper one.safetensors --model '%s' --description fruit -o X",
             vkl_test_shared_path("refkit/lm/stories260K/hf"));
    refused(args, 1, "holds 6 adapter modules but its targets make 10 on this model");
    snprintf(args, sizeof args, "lm hyperlora emit --hyper '%s' --model '%s' --description fruit -o X",
             vkl_test_shared_path(MODEL "/model.safetensors"), model);
    refused(args, 1, "is not a HyperLoRA network");
    assert_true(stat(in_dir("X"), &st) != 0);
    /* an existing adapter is replaced only with --force; a folder with other files never */
    snprintf(args, sizeof args, "--quiet lm hyperlora emit --hyper one.safetensors --model '%s' --description fruit -o OK1",
             model);
    free(run_ok(args));
    refused(args, 1, "OK1 already holds an adapter; pass --force to replace it");
    strcat(args, " --force");
    free(run_ok(args));
    write_file("OK1/notes.txt", "mine\n");
    refused(args, 1, "OK1 holds files other than an adapter");
    refused("lm hyperlora fly", 2, "unknown subcommand fly");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_emit),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, setup, vkl_test_group_teardown);
}
