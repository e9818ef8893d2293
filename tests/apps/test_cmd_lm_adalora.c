/* `vklora lm train --network adalora` end to end on tiny-llama with the text
 * the lm train tests use:
 *   - the run's log (loss falls), the budget it ends at: the rank_pattern of
 *     adapter_config.json keeps exactly target_r x modules ranks, and the
 *     safetensors file holds PEFT's keys (base_model.model.<module>.lora_A /
 *     lora_E / lora_B, no ranknum) cut to those ranks, every kept E trained
 *     away from its zero start; the config's AdaLoRA fields are the options;
 *   - `lm generate --lora DIR` and `lm merge` of the folder: the merged
 *     model's greedy text, and that with --format gguf's adapter_model.gguf,
 *     is the text with the adapter applied at run time,
 *     and differs from the base model's; `info` calls the folder a PEFT
 *     adapter of 6 modules;
 *   - bad options fail with a message naming them and leave no folder. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "

static char *dir_ = vkl_test_dir; /* with story.txt: vkl_test_story_setup */

static int run(const char *args, char **log) { return vkl_test_run_cli(dir_, NULL, args, log); }

static int train(const char *out, const char *extra, char **log)
{
    char args[8192];
    snprintf(args, sizeof args,
             "lm train --model '%s' --data story.txt -o '%s' --seq-len 32 --batch 4 --seed 7 --network adalora %s",
             vkl_test_shared_path(MODEL), out, extra);
    return run(args, log);
}

static int exists(const char *sub)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir_, sub);
    return stat(p, &st) == 0;
}

static int read_losses(const char *out, float *loss, int cap)
{
    char *csv = vkl_test_slurp(dir_, out);
    assert_non_null(csv);
    int n = 0;
    char *line = strchr(csv, '\n');
    while (line && n < cap) {
        int step, epoch;
        float l;
        if (sscanf(line + 1, "%d,%d,%f", &step, &epoch, &l) != 3) break;
        assert_int_equal(step, n + 1);
        loss[n++] = l;
        line = strchr(line + 1, '\n');
    }
    free(csv);
    return n;
}

static void test_train_layout(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    int st = train("ada", "--init-r 6 --target-r 4 --tinit 4 --tfinal 6 --delta-t 2 --max-steps 30 --lr 3e-2 --alpha 32 "
                   "--format gguf", &log);
    if (st) fail_msg("status %d: %s", st, log);
    printf("%s", strstr(log, "lm train: AdaLoRA") ? strstr(log, "lm train: AdaLoRA") : log);
    assert_non_null(strstr(log, "total rank 24 (target 24"));
    free(log);
    float loss[40];
    assert_int_equal(read_losses("ada/train_log.csv", loss, 40), 30);
    double late = 0;
    for (int i = 25; i < 30; i++) late += loss[i] / 5;
    printf("  loss %.4f -> %.4f (mean of the last 5)\n", loss[0], late);
    assert_true(late < loss[0] - 0.5);

    char *text = vkl_test_slurp(dir_, "ada/adapter_config.json");
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "peft_type")->valuestring, "ADALORA");
    assert_string_equal(cJSON_GetObjectItem(j, "task_type")->valuestring, "CAUSAL_LM");
    static const struct {
        const char *key;
        double v;
    } want[] = {{"init_r", 6},   {"target_r", 4},    {"tinit", 4},         {"tfinal", 6},    {"deltaT", 2},
                {"beta1", 0.85}, {"beta2", 0.85},    {"orth_reg_weight", 0.5}, {"total_step", 30}, {"lora_alpha", 32}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const cJSON *x = cJSON_GetObjectItem(j, want[i].key);
        if (!cJSON_IsNumber(x) || x->valuedouble != want[i].v) fail_msg("config %s is not %g", want[i].key, want[i].v);
    }
    const cJSON *rp = cJSON_GetObjectItem(j, "rank_pattern");
    assert_true(cJSON_IsObject(rp));
    assert_int_equal(cJSON_GetArraySize(rp), 6);
    int total = 0, kept[6];

    char p[4096];
    snprintf(p, sizeof p, "%s/ada/adapter_model.safetensors", dir_);
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(p, &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(f), 18);
    for (int i = 0; i < 6; i++) {
        char mod[128], key[256];
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.%s", i / 2, i % 2 ? "v_proj" : "q_proj");
        snprintf(key, sizeof key, "%s.lora_E", mod);
        const cJSON *pat = cJSON_GetObjectItem(rp, key);
        assert_true(cJSON_IsArray(pat));
        assert_int_equal(cJSON_GetArraySize(pat), 6);
        kept[i] = 0;
        for (int q = 0; q < 6; q++) kept[i] += cJSON_IsTrue(cJSON_GetArrayItem(pat, q));
        total += kept[i];
        int64_t out = i % 2 ? 32 : 64;
        const char *part[3] = {"lora_A", "lora_E", "lora_B"};
        int64_t shape[3][2] = {{kept[i], 64}, {kept[i], 1}, {out, kept[i]}};
        for (int k = 0; k < 3; k++) {
            snprintf(key, sizeof key, "base_model.model.%s.%s", mod, part[k]);
            const vkl_st_tensor *t = vkl_st_find(f, key);
            if (!t) fail_msg("no tensor %s", key);
            assert_int_equal(t->dtype, VKL_F32);
            assert_int_equal(t->ndim, 2);
            assert_int_equal(t->shape[0], shape[k][0]);
            assert_int_equal(t->shape[1], shape[k][1]);
            if (k == 1 && kept[i]) {
                float ev[6];
                assert_int_equal(vkl_st_read_f32(f, key, ev, (uint64_t)kept[i], &e), 0);
                for (int q = 0; q < kept[i]; q++) assert_true(ev[q] != 0.0f); /* E starts at zero */
            }
        }
        printf("  %s keeps %d of 6 ranks\n", mod, kept[i]);
    }
    vkl_st_close(f);
    assert_int_equal(total, 4 * 6);
    cJSON_Delete(j);
}

static char *generate(const char *model_rel_or_dir, int shared, const char *lora)
{
    char args[8192], *log = NULL, lp[4200] = "";
    if (lora) snprintf(lp, sizeof lp, "--lora '%s/%s'", dir_, lora);
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt 'You may convey' --max-tokens 12 %s",
             shared ? vkl_test_shared_path(model_rel_or_dir) : model_rel_or_dir, lp);
    int st = run(args, &log);
    if (st) fail_msg("lm generate: status %d: %s", st, log);
    /* the text is the first line; the timing line follows */
    char *nl = strstr(log, "\nvklora lm generate:");
    if (nl) *nl = 0;
    return log;
}

static void test_generate_merge(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    if (!exists("ada/adapter_model.safetensors")) skip();
    char *with = generate(MODEL, 1, "ada"), *base = generate(MODEL, 1, NULL);
    printf("  base:    %s\n  adapter: %s\n", base, with);
    assert_string_not_equal(with, base);
    char args[8192], *log = NULL, merged[4200];
    snprintf(args, sizeof args, "lm merge --model '%s' --lora ada -o merged", vkl_test_shared_path(MODEL));
    int st = run(args, &log);
    if (st) fail_msg("lm merge: status %d: %s", st, log);
    free(log);
    snprintf(merged, sizeof merged, "%s/merged", dir_);
    char *m = generate(merged, 0, NULL);
    printf("  merged:  %s\n", m);
    assert_string_equal(m, with);
    /* --format gguf: llama.cpp's LoRA layout of the same adapter */
    char *gg = generate(MODEL, 1, "ada/adapter_model.gguf");
    printf("  gguf:    %s\n", gg);
    assert_string_equal(gg, with);
    free(gg);
    /* `vklora info` tells it for a PEFT adapter */
    st = run("info ada", &log);
    assert_int_equal(st, 0);
    assert_non_null(strstr(log, "kind: LoRA adapter (PEFT)\n  target modules: 6\n"));
    free(log);
    free(with);
    free(base);
    free(m);
}

static void expect_refused(const char *extra, const char *needle)
{
    char *log = NULL;
    int st = train("bad", extra, &log);
    printf("  %s -> status %d: %s", extra, st, log);
    assert_int_not_equal(st, 0);
    if (!strstr(log, needle)) fail_msg("message lacks '%s'", needle);
    free(log);
    assert_false(exists("bad"));
}

static void test_refusals(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    expect_refused("--max-steps 20 --tinit 15 --tfinal 5", "tinit");
    expect_refused("--max-steps 5 --init-r 4 --target-r 6", "target_r");
    expect_refused("--max-steps 5 --rank 4", "--init-r");
    expect_refused("--max-steps 5 --beta1 1", "--beta1");
    expect_refused("--max-steps 5 --delta-t 0", "--delta-t");
    /* AdaLoRA options without the network */
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' --data story.txt -o bad --max-steps 2 --init-r 4",
             vkl_test_shared_path(MODEL));
    int st = run(args, &log);
    assert_int_equal(st, 2);
    assert_non_null(strstr(log, "--network adalora"));
    free(log);
    assert_false(exists("bad"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_train_layout),
        cmocka_unit_test(test_generate_merge),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, vkl_test_story_setup, vkl_test_group_teardown);
}
