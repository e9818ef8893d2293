/* `vklora train --weights nf4` and `--weights nf4dq` (QLoRA on the SD UNet,
 * nf4dq with double-quantised block scales) end to end on the tiny model:
 * with the same seed, the per-step losses follow the f16 base's within 2 %
 * but not exactly (the quantised linear layers); each adapter drives
 * `generate --weights nf4|nf4dq --lora`; DoRA and full training on a
 * quantised base are refused before anything is written. */
#include "vkl_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *dir_;

static int setup(void **state)
{
    (void)state;
    dir_ = strdup(vkl_test_tmpdir());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(dir_);
    free(dir_);
    return 0;
}

static int run(const char *args, char **out) { return vkl_test_run_cli(dir_, NULL, args, out); }

static int read_losses(const char *csv, float *loss, int cap)
{
    char p[4096], line[256];
    snprintf(p, sizeof p, "%.2000s/%.1000s", dir_, csv);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    int n = 0, step, epoch;
    float l;
    while (n < cap && fgets(line, sizeof line, f) && sscanf(line, "%d,%d,%f", &step, &epoch, &l) == 3) {
        assert_int_equal(step, n + 1);
        assert_true(isfinite(l) && l > 0);
        loss[n++] = l;
    }
    fclose(f);
    return n;
}

static void train_nf4(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    char cmd[4096], args[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", dir_,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), dir_);
    assert_int_equal(system(cmd), 0);
    const char *const w[3] = {"f16", "nf4", "nf4dq"};
    float loss[3][4];
    for (int k = 0; k < 3; k++) {
        snprintf(args, sizeof args,
                 "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --max-steps 3 "
                 "--batch 2 --seed 11 --quiet --weights %s -o %s.safetensors",
                 vkl_test_shared_path("refkit/sd/tiny-sd"), w[k], w[k]);
        int rc = run(args, &out);
        if (rc) fail_msg("train --weights %s: status %d: %s", w[k], rc, out);
        free(out);
        snprintf(cmd, sizeof cmd, "%s.csv", w[k]);
        assert_int_equal(read_losses(cmd, loss[k], 4), 3);
    }
    for (int i = 0; i < 3; i++) {
        printf("  step %d: loss f16 %.6f, nf4 %.6f, nf4dq %.6f\n", i + 1, loss[0][i], loss[1][i], loss[2][i]);
        assert_true(fabsf(loss[1][i] - loss[0][i]) < 0.02f * loss[0][i]);
        assert_true(fabsf(loss[2][i] - loss[0][i]) < 0.02f * loss[0][i]);
    }
    /* the base is really quantised, and nf4dq's scales differ from nf4's */
    assert_true(loss[1][0] != loss[0][0] && loss[2][0] != loss[0][0] && loss[2][0] != loss[1][0]);
    for (int k = 1; k < 3; k++) {
        snprintf(args, sizeof args,
                 "generate --model '%s' --prompt 'wesnoth portrait' --steps 2 --width 64 --height 64 --seed 3 "
                 "--weights %s --lora %s.safetensors -o g-%s.png --quiet",
                 vkl_test_shared_path("refkit/sd/tiny-sd"), w[k], w[k], w[k]);
        int rc = run(args, &out);
        if (rc) fail_msg("generate --weights %s --lora: status %d: %s", w[k], rc, out);
        free(out);
        struct stat st;
        snprintf(cmd, sizeof cmd, "%s/g-%s.png", dir_, w[k]);
        assert_int_equal(stat(cmd, &st), 0);
    }
}

static void refusals(void **state)
{
    (void)state;
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "train --model '%s' --images images --network dora --max-steps 1 --weights nf4 -o d.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(run(args, &out), 1);
    assert_non_null(strstr(out, "DoRA needs f16 or f32"));
    free(out);
    assert_int_equal(run("train --model x --images y -o z.safetensors --weights q4", &out), 2);
    assert_non_null(strstr(out, "f16, f32, nf4 or nf4dq"));
    free(out);
    snprintf(args, sizeof args,
             "train --model '%s' --images images --network dora --max-steps 1 --weights nf4dq -o d.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(run(args, &out), 1);
    assert_non_null(strstr(out, "--weights nf4dq (a QLoRA base)"));
    free(out);
    snprintf(args, sizeof args, "generate --model '%s' --prompt p --weights nf4 --merge-lora --lora x.safetensors -o m.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_true(run(args, &out) != 0);
    free(out);
    struct stat st;
    char p[4096];
    snprintf(p, sizeof p, "%s/d.safetensors", dir_);
    assert_int_not_equal(stat(p, &st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(train_nf4),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
