/* `vklora lm train` / `lm generate` on an NF4 base (--base-dtype nf4, QLoRA)
 * end to end on tiny-llama: LoRA on every projection lowers the loss as on
 * the f16 base (same data, seed and steps; the first losses differ only by
 * the quantisation), the adapter drives `lm generate --base-dtype nf4`, IA3
 * trains too; a trained model (stories260K) keeps its greedy text; DoRA and unknown dtypes are refused before anything is
 * written. */
#include "vkl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "
#define ALL_PROJ "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"

static char *dir_ = vkl_test_dir; /* with story.txt: vkl_test_story_setup */

static int run(const char *args, char **log)
{
    return vkl_test_run_cli(dir_, NULL, args, log);
}

static int train(const char *out, const char *extra, char **log)
{
    char args[8192];
    snprintf(args, sizeof args, "lm train --model '%s' -o '%s' --data story.txt --seq-len 32 --batch 4 --seed 7 %s",
             vkl_test_shared_path(MODEL), out, extra);
    return run(args, log);
}

static int read_losses(const char *out, float *loss, int cap)
{
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/%s/train_log.csv", dir_, out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    int n = 0, step, epoch, skipped;
    float l, lr, gn, sec;
    while (n < cap && fscanf(f, "%d,%d,%f,%f,%f,%d,%f", &step, &epoch, &l, &lr, &gn, &skipped, &sec) == 7) {
        assert_true(isfinite(l) && l > 0 && isfinite(gn));
        loss[n++] = l;
    }
    fclose(f);
    return n;
}

static int exists(const char *sub)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir_, sub);
    return stat(p, &st) == 0;
}

static void lora_like_f16(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    enum { STEPS = 8 };
    /* nf4dq: every matrix (embedding and lm_head too) NF4 with double-quantised scales */
    const char *const bases[3] = {"f16", "nf4", "nf4dq"};
    float loss[3][STEPS + 1];
    for (int b = 0; b < 3; b++) {
        char out[32], extra[256], *log = NULL;
        snprintf(out, sizeof out, "lora-%s", bases[b]);
        snprintf(extra, sizeof extra, "--steps %d --lr 1e-2 --targets " ALL_PROJ " --base-dtype %s", STEPS, bases[b]);
        int st = train(out, extra, &log);
        if (st) fail_msg("%s: status %d: %s", out, st, log);
        free(log);
        assert_int_equal(read_losses(out, loss[b], STEPS + 1), STEPS);
        printf("  %s base: loss %.4f -> %.4f\n", bases[b], loss[b][0], loss[b][STEPS - 1]);
    }
    double drop16 = loss[0][0] - loss[0][STEPS - 1];
    assert_true(drop16 > 0);
    for (int b = 1; b < 3; b++) {
        double drop4 = loss[b][0] - loss[b][STEPS - 1];
        /* the quantised base starts elsewhere, but not far, and training lowers its loss about as much */
        assert_true(fabs(loss[b][0] - loss[0][0]) > 1e-4 && fabs(loss[b][0] - loss[0][0]) < 0.1 * loss[0][0]);
        assert_true(drop4 > 0.5 * drop16 && drop4 < 2 * drop16);
    }

    char args[8192], *log = NULL;
    snprintf(args, sizeof args,
             "lm generate --model '%s' --prompt 'You may convey' --max-tokens 8 --base-dtype nf4 --lora '%s/lora-nf4'",
             vkl_test_shared_path(MODEL), dir_);
    int st = run(args, &log);
    if (st) fail_msg("lm generate on nf4: status %d: %s", st, log);
    printf("  lm generate --base-dtype nf4 --lora: '%s'\n", log);
    free(log);
}

static void ia3_on_nf4(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    int st = train("ia3-nf4", "--network ia3 --steps 4 --lr 3e-2 --base-dtype nf4", &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    float loss[8];
    assert_int_equal(read_losses("ia3-nf4", loss, 8), 4);
    printf("  ia3 on nf4: loss %.4f -> %.4f\n", loss[0], loss[3]);
    assert_true(loss[3] < loss[0]);
}

/* A trained model (llama2.c's stories260K) keeps its greedy continuation on an NF4 base. */
static void trained_model_same_text(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/stories260K.bin");
    char *text[2] = {NULL, NULL};
    const char *const bases[2] = {"f32", "nf4"};
    for (int b = 0; b < 2; b++) {
        char args[4096];
        snprintf(args, sizeof args,
                 "lm generate --model '%s' --tokenizer '%s' --prompt 'Once upon a time' --max-tokens 24 --base-dtype %s",
                 vkl_test_shared_path("refkit/lm/stories260K/stories260K.bin"),
                 vkl_test_shared_path("refkit/lm/stories260K/tok512.bin"), bases[b]);
        int st = run(args, &text[b]);
        if (st) fail_msg("%s: status %d: %s", bases[b], st, text[b]);
        char *speeds = strstr(text[b], "vklora lm generate: prefill"); /* stderr's timing line differs */
        if (speeds) *speeds = 0;
    }
    printf("  stories260K on nf4: '%s'\n", text[1]);
    assert_true(strlen(text[1]) > 40);
    assert_string_equal(text[1], text[0]);
    free(text[0]);
    free(text[1]);
}

static void refusals(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    assert_int_equal(train("dora-nf4", "--network dora --steps 2 --base-dtype nf4", &log), 2);
    assert_non_null(strstr(log, "--base-dtype f32 or f16"));
    free(log);
    assert_false(exists("dora-nf4"));
    assert_int_equal(train("dora-nf4dq", "--network dora --steps 2 --base-dtype nf4dq", &log), 2);
    assert_non_null(strstr(log, "--base-dtype f32 or f16"));
    free(log);
    assert_false(exists("dora-nf4dq"));
    assert_int_equal(train("q8", "--steps 2 --base-dtype q8", &log), 2);
    assert_non_null(strstr(log, "--base-dtype 'q8'"));
    assert_non_null(strstr(log, "nf4 or nf4dq"));
    free(log);
    assert_false(exists("q8"));
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt 'You' --base-dtype int4", vkl_test_shared_path(MODEL));
    assert_int_equal(run(args, &log), 2);
    assert_non_null(strstr(log, "f16, bf16, nf4 or nf4dq"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lora_like_f16),
        cmocka_unit_test(ia3_on_nf4),
        cmocka_unit_test(trained_model_same_text),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, vkl_test_story_setup, vkl_test_group_teardown);
}
