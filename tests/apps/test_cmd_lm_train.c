/* `vklora lm train` end to end (the built binary) on tiny-llama with a small
 * text written here: the loss of every step in train_log.csv (step, loss,
 * lr as scheduled) falls; the adapter folder loads as PEFT with one module
 * per target projection of the right shapes (checked against the model's
 * weights), the config fields PEFT reads, B trained away from zero; `lm
 * generate --lora` runs with it. LoRA, rsLoRA from .jsonl, DoRA and IA3;
 * the same seed gives the same losses, and every network's first loss is
 * the base model's (LoRA: B = 0; DoRA: magnitude = ||W||; IA3: ones); bad
 * input fails clearly, leaving no output folder. */
#include "vkl_test.h"
#include "lora/lora_file.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "

static char *dir_;
/* Every network starts at the base model and the same seed draws the same
 * first batch: the first loss of each run must be LoRA's. */
static float first_loss_ = -1;

static void expect_base_start(const char *what, float loss)
{
    if (first_loss_ < 0) return;
    printf("  %s: first loss %.6f, LoRA's %.6f\n", what, loss, first_loss_);
    assert_float_equal(loss, first_loss_, 1e-5);
}

static int setup(void **state)
{
    (void)state;
    dir_ = strdup(vkl_test_tmpdir());
    char p[4096];
    snprintf(p, sizeof p, "%s/story.txt", dir_);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    for (int i = 0; i < 40; i++) fputs(SENTENCE, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/lines.jsonl", dir_);
    f = fopen(p, "w");
    if (!f) return -1;
    fputs("{\"text\": \"" SENTENCE "\"}\n\n{\"text\": \"You may convey verbatim copies.\"}\n"
          "{\"text\": \"" SENTENCE SENTENCE "\", \"id\": 3}\n", f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(dir_);
    free(dir_);
    return 0;
}

static int train(const char *out, const char *extra, char **log)
{
    char args[8192];
    snprintf(args, sizeof args, "lm train --model '%s' -o '%s' --seq-len 32 --batch 4 --seed 7 %s",
             vkl_test_shared_path(MODEL), out, extra);
    return vkl_test_run_cli(dir_, NULL, args, log);
}

static int exists(const char *sub)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir_, sub);
    return stat(p, &st) == 0;
}

/* No temporary folder of a run is left in the working folder. */
static void expect_no_tmp(void)
{
    DIR *d = opendir(dir_);
    assert_non_null(d);
    for (struct dirent *x; (x = readdir(d));)
        if (strstr(x->d_name, ".tmp-")) fail_msg("temporary folder %s left behind", x->d_name);
    closedir(d);
}

/* Loss column of ADAPTER/train_log.csv; checks the header, step numbers and lr. */
static int read_log(const char *out, float lr, float *loss, int cap)
{
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/%s/train_log.csv", dir_, out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "step,epoch,loss,lr,grad_norm,skipped,seconds\n");
    int n = 0, step;
    float l, r;
    int epoch, skipped;
    float gn, sec;
    while (n < cap && fscanf(f, "%d,%d,%f,%f,%f,%d,%f", &step, &epoch, &l, &r, &gn, &skipped, &sec) == 7) {
        assert_true(epoch >= 0 && isfinite(gn) && gn >= 0 && skipped == 0 && sec >= 0);
        assert_int_equal(step, n + 1);
        assert_true(isfinite(l) && l > 0);
        if (lr > 0) assert_float_equal(r, lr, 1e-9);
        loss[n++] = l;
    }
    fclose(f);
    return n;
}

static cJSON *read_config(const char *out)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/adapter_config.json", dir_, out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path");
    assert_true(cJSON_IsString(b));
    assert_string_equal(b->valuestring, vkl_test_shared_path(MODEL));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "task_type")->valuestring, "CAUSAL_LM");
    return j;
}

static void expect_list(const cJSON *j, const char *key, const char *const *want, int n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, key);
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), n);
    for (int i = 0; i < n; i++) assert_string_equal(cJSON_GetArrayItem(a, i)->valuestring, want[i]);
}

/* Loads with the model's weights as targets, so every module's shape is checked against its weight. */
static void load(const char *out, vkl_lora *l)
{
    vkl_err e = {{0}};
    vkl_lora_targets t;
    char p[4096];
    snprintf(p, sizeof p, "%s/model.safetensors", vkl_test_shared_path(MODEL));
    if (vkl_lora_targets_open(p, &t, &e)) fail_msg("%s", e.msg);
    vkl_lora_opts o = {.targets = &t};
    snprintf(p, sizeof p, "%s/%s/adapter_model.safetensors", dir_, out);
    if (vkl_lora_load(p, &o, l, &e)) fail_msg("%s", e.msg);
    vkl_lora_targets_free(&t);
    assert_int_equal(l->format, VKL_LORA_FMT_PEFT);
    assert_true(l->has_config);
}

static int64_t proj_out(const char *name)
{
    /* tiny-llama: hidden 64, 4 heads and 2 kv heads of 16, intermediate 172 */
    if (strstr(name, "k_proj") || strstr(name, "v_proj")) return 32;
    if (strstr(name, "gate_proj") || strstr(name, "up_proj")) return 172;
    return 64;
}

static void expect_lora(const vkl_lora *l, const char *const *targets, int nt, int rank, double scale, int dora)
{
    assert_int_equal(l->n, 3 * nt);
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *m = &l->m[i];
        char want[128];
        snprintf(want, sizeof want, "model.layers.%d.self_attn.%s", i / nt, targets[i % nt]);
        assert_string_equal(m->name, want);
        assert_int_equal(m->kind, dora ? VKL_LORA_KIND_DORA : VKL_LORA_KIND_LORA);
        assert_int_equal(m->rank, rank);
        assert_float_equal(m->scale, scale, 1e-6);
        const vkl_lora_tensor *a = &m->t[VKL_LORA_DOWN], *b = &m->t[VKL_LORA_UP], *g = &m->t[VKL_LORA_MAG];
        assert_int_equal(a->ndim, 2);
        assert_int_equal(a->shape[0], rank);
        assert_int_equal(a->shape[1], 64);
        assert_int_equal(b->shape[0], proj_out(want));
        assert_int_equal(b->shape[1], rank);
        double bmax = 0;
        for (uint64_t k = 0; k < vkl_lora_tensor_nelem(b); k++) bmax = fmax(bmax, fabs(b->data[k]));
        assert_true(bmax > 0); /* B starts at zero: training moved it */
        if (dora) {
            assert_int_equal(g->ndim, 1);
            assert_int_equal(g->shape[0], proj_out(want));
        } else {
            assert_null(g->data);
        }
    }
}

static void generate_with(const char *out)
{
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt 'You may convey' --max-tokens 8 --lora '%s/%s'",
             vkl_test_shared_path(MODEL), dir_, out);
    int st = vkl_test_run_cli(dir_, NULL, args, &log);
    if (st) fail_msg("lm generate --lora %s: status %d: %s", out, st, log);
    free(log);
}

static void test_lora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    int st = train("lora", "--data story.txt --steps 10 --lr 1e-2", &log);
    if (st) fail_msg("status %d: %s", st, log);
    assert_non_null(strstr(log, "10/10"));
    free(log);
    float loss[16];
    assert_int_equal(read_log("lora", 1e-2f, loss, 16), 10);
    printf("  lora: loss %.4f -> %.4f\n", loss[0], loss[9]);
    assert_true(loss[9] < loss[0]);
    first_loss_ = loss[0];
    cJSON *j = read_config("lora");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "peft_type")->valuestring, "LORA");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "r")->valueint, 8);
    assert_float_equal(cJSON_GetObjectItemCaseSensitive(j, "lora_alpha")->valuedouble, 16, 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "use_rslora")));
    assert_true(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "use_dora")));
    static const char *const t[] = {"q_proj", "v_proj"};
    expect_list(j, "target_modules", t, 2);
    cJSON_Delete(j);
    vkl_lora l;
    load("lora", &l);
    expect_lora(&l, t, 2, 8, 2.0, 0);
    vkl_lora_free(&l);
    generate_with("lora");
    /* the temporary folder is gone; a second run into the same folder needs --force */
    expect_no_tmp();
    st = train("lora", "--data story.txt --steps 1", &log);
    assert_int_equal(st, 1);
    assert_non_null(strstr(log, "--force"));
    free(log);
    st = train("lora", "--data story.txt --steps 2 --force --quiet", &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    assert_int_equal(read_log("lora", 1e-4f, loss, 16), 2);
}

/* .jsonl samples, rsLoRA, other targets and rank, warmup + linear decay; the same seed twice gives the same losses. */
static void test_jsonl_rslora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    const char *opts = "--data lines.jsonl --steps 4 --lr 1e-2 --rank 4 --alpha 8 --rslora --targets k_proj,o_proj "
                       "--lr-schedule linear --warmup 2 --batch 2";
    char *log = NULL;
    int st = train("rs", opts, &log);
    if (st) fail_msg("status %d: %s", st, log);
    /* three non-blank lines, three samples */
    assert_non_null(strstr(log, "3 samples of 32 tokens"));
    free(log);
    float loss[8], again[8];
    assert_int_equal(read_log("rs", 0, loss, 8), 4);
    /* HF's linear schedule with warmup 2 of 4 steps: 0, lr/2, lr, lr/2 */
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/rs/train_log.csv", dir_);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    static const float want_lr[4] = {0, 5e-3f, 1e-2f, 5e-3f};
    assert_non_null(fgets(line, sizeof line, f));
    for (int i = 0; i < 4; i++) {
        int s;
        float l, r;
        assert_int_equal(fscanf(f, "%d,%*d,%f,%f,%*f,%*d,%*f", &s, &l, &r), 3);
        assert_float_equal(r, want_lr[i], 1e-9);
    }
    fclose(f);
    cJSON *j = read_config("rs");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "r")->valueint, 4);
    assert_float_equal(cJSON_GetObjectItemCaseSensitive(j, "lora_alpha")->valuedouble, 8, 0);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_rslora")));
    static const char *const t[] = {"k_proj", "o_proj"};
    expect_list(j, "target_modules", t, 2);
    cJSON_Delete(j);
    vkl_lora l;
    load("rs", &l);
    expect_lora(&l, t, 2, 4, 8 / sqrt(4.0), 0);
    vkl_lora_free(&l);
    st = train("rs2", opts, &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    assert_int_equal(read_log("rs2", 0, again, 8), 4);
    assert_memory_equal(loss, again, sizeof(float) * 4);
}

static void test_dora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    int st = train("dora", "--network dora --data story.txt --steps 5 --lr 1e-2 --quiet", &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    float loss[8];
    assert_int_equal(read_log("dora", 1e-2f, loss, 8), 5);
    printf("  dora: loss %.4f -> %.4f\n", loss[0], loss[4]);
    assert_true(loss[4] < loss[0]);
    expect_base_start("dora", loss[0]);
    cJSON *j = read_config("dora");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "peft_type")->valuestring, "LORA");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_dora")));
    cJSON_Delete(j);
    vkl_lora l;
    load("dora", &l);
    static const char *const t[] = {"q_proj", "v_proj"};
    expect_lora(&l, t, 2, 8, 2.0, 1);
    vkl_lora_free(&l);
    generate_with("dora");
}

static void test_ia3(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    int st = train("ia3", "--network ia3 --data story.txt --steps 5 --lr 1e-2 --quiet", &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    float loss[8];
    assert_int_equal(read_log("ia3", 1e-2f, loss, 8), 5);
    printf("  ia3: loss %.4f -> %.4f\n", loss[0], loss[4]);
    assert_true(loss[4] < loss[0]);
    expect_base_start("ia3", loss[0]);
    cJSON *j = read_config("ia3");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "peft_type")->valuestring, "IA3");
    static const char *const t[] = {"k_proj", "v_proj", "down_proj"}, *const ff[] = {"down_proj"};
    expect_list(j, "target_modules", t, 3);
    expect_list(j, "feedforward_modules", ff, 1);
    cJSON_Delete(j);
    vkl_lora l;
    load("ia3", &l);
    assert_int_equal(l.n, 9);
    for (int i = 0; i < l.n; i++) {
        const vkl_lora_module *m = &l.m[i];
        int down = strstr(m->name, "mlp.down_proj") != NULL;
        const vkl_lora_tensor *v = &m->t[VKL_LORA_IA3];
        assert_int_equal(m->kind, VKL_LORA_KIND_IA3);
        assert_int_equal(m->on_input, down);
        assert_int_equal(v->shape[0], down ? 1 : 32);
        assert_int_equal(v->shape[1], down ? 172 : 1);
        double moved = 0;
        for (uint64_t k = 0; k < vkl_lora_tensor_nelem(v); k++) moved = fmax(moved, fabs(v->data[k] - 1.0));
        assert_true(moved > 0); /* vectors start at one */
    }
    vkl_lora_free(&l);
    generate_with("ia3");
}

static void expect_error(const char *out, const char *extra, int status, const char *needle)
{
    char *log = NULL;
    int st = train(out, extra, &log);
    if (st != status || !strstr(log, needle))
        fail_msg("%s: status %d (want %d), output lacks '%s':\n%s", extra, st, status, needle, log);
    free(log);
    assert_false(exists(out));
    expect_no_tmp();
}

static void test_errors(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char p[4096];
    snprintf(p, sizeof p, "%s/empty.txt", dir_);
    fclose(fopen(p, "w"));
    snprintf(p, sizeof p, "%s/bad.jsonl", dir_);
    FILE *f = fopen(p, "w");
    fputs("{\"text\": \"fine\"}\n{\"content\": \"no text field\"}\n", f);
    fclose(f);
    expect_error("e1", "--data missing.txt", 1, "missing.txt");
    expect_error("e2", "--data story.txt --seq-len 300", 2, "max_position_embeddings");
    expect_error("e3", "--data story.txt --network lokr", 2, "--network 'lokr': expected one of lora");
    expect_error("e4", "--data empty.txt", 1, "no training sample");
    expect_error("e5", "--data bad.jsonl", 1, "line 2");
    expect_error("e6", "--data story.txt --targets nothing_proj --steps 1", 1, "no projection");
    expect_error("e7", "--steps 1", 2, "--data");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_jsonl_rslora),
        cmocka_unit_test(test_dora),
        cmocka_unit_test(test_ia3),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
