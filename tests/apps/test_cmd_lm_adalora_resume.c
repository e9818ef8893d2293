/* `vklora lm train --network adalora` on tiny-llama with the text the lm
 * train tests use, held-out evaluation and --resume:
 *   - held-out evaluation runs with the modules as trained (masked ranks 0);
 *   - --save-every / --resume continue exactly (the allocator's state comes
 *     back with the trainer's), and a resume with another schedule is refused. */
#include "vkl_test.h"

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

/* Held-out evaluation runs with the modules as trained: rows at step 0 and at the end, the loss lower. */
static void test_eval(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    char *log = NULL;
    int st = train("ev", "--max-steps 12 --lr 3e-2 --alpha 32 --tinit 2 --tfinal 2 --val-fraction 0.2 --eval-every 6 --quiet",
                   &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    char *csv = vkl_test_slurp(dir_, "ev/eval_log.csv");
    assert_non_null(csv);
    printf("%s", csv);
    int step[4], n = 0;
    float loss[4];
    char *line = strchr(csv, '\n');
    while (line && n < 4 && sscanf(line + 1, "%d,%f", &step[n], &loss[n]) == 2) {
        n++;
        line = strchr(line + 1, '\n');
    }
    free(csv);
    assert_int_equal(n, 3);
    assert_int_equal(step[0], 0);
    assert_int_equal(step[2], 12);
    assert_true(loss[2] < loss[0]);
}

static char *slurp_bytes(const char *rel, size_t *n)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir_, rel);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* --save-every / --resume: 4 of 8 planned steps (--total-step 8), then
 * resumed to 8, give the adapter (bytes) and log of 8 straight steps: the
 * allocator's scores and pattern come back with the state. A resume whose
 * schedule differs (another total step) is refused, naming the options. */
static void test_resume(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    const char *o = "--lr 3e-2 --init-r 6 --target-r 3 --tinit 2 --tfinal 2 --alpha 32 --quiet";
    char extra[512], *log = NULL;
    snprintf(extra, sizeof extra, "%s --max-steps 8", o);
    int st = train("straight", extra, &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    snprintf(extra, sizeof extra, "%s --max-steps 4 --total-step 8 --save-every 4", o);
    st = train("resumed", extra, &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    snprintf(extra, sizeof extra, "%s --max-steps 9 --save-every 4 --resume", o);
    st = train("resumed", extra, &log);
    assert_int_equal(st, 1);
    assert_non_null(strstr(log, "saved with other options"));
    assert_non_null(strstr(log, "\"total_step\":8"));
    free(log);
    snprintf(extra, sizeof extra, "%s --max-steps 8 --save-every 4 --resume", o);
    st = train("resumed", extra, &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    size_t na, nb;
    char *fa = slurp_bytes("straight/adapter_model.safetensors", &na), *fb = slurp_bytes("resumed/adapter_model.safetensors", &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    free(fa);
    free(fb);
    char *la = vkl_test_slurp(dir_, "straight/train_log.csv"), *lb = vkl_test_slurp(dir_, "resumed/train_log.csv");
    vkl_test_csv_first_columns(la, 4);
    vkl_test_csv_first_columns(lb, 4);
    assert_string_equal(la, lb);
    free(la);
    free(lb);
    char *ca = vkl_test_slurp(dir_, "straight/adapter_config.json"), *cb = vkl_test_slurp(dir_, "resumed/adapter_config.json");
    assert_string_equal(ca, cb);
    free(ca);
    free(cb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval),
        cmocka_unit_test(test_resume),
    };
    return cmocka_run_group_tests(tests, vkl_test_story_setup, vkl_test_group_teardown);
}
