/* `vklora lorahub` end to end (the built binary) on the tiny SD model: two
 * LoRAs trained here by `vklora train` (64 px, a few steps) on two different
 * pairs of portraits, mixed on one portrait of each pair.
 *   - the output's lora_down / lora_up are w_1 X_1 + w_2 X_2 for the weights
 *     in its metadata and log, summed here from the input files; alphas kept;
 *   - the logged loss of the mix is lower than each input's and than their
 *     plain average; the saved file, evaluated again (as an input of a new
 *     run with the same seed), gives the logged loss: the fixed noise and
 *     timesteps are the same for every evaluation;
 *   - the output loads in `vklora generate --lora`.
 * Bad input: test_cmd_lorahub_bad.c. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sd_lorahub_fixture.h"

/* The number printed after key in text. */
static double number_after(const char *text, const char *key)
{
    const char *hit = strstr(text, key);
    if (!hit) fail_msg("no '%s' in:\n%s", key, text);
    return atof(hit + strlen(key));
}

static void log_row(const char *log, const char *row, double *loss, double *w)
{
    char key[64];
    snprintf(key, sizeof key, "\n%s,", row);
    const char *p = strstr(log, key);
    if (!p) fail_msg("no row %s in the log:\n%s", row, log);
    int evals;
    char obj[32];
    if (sscanf(p + strlen(key), "%d,%lf,%31[^,],%lf,%lf", &evals, loss, obj, &w[0], &w[1]) != 5)
        fail_msg("row %s unreadable", row);
}

static void test_mix(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(SD);
    train("ta", "a.safetensors", 3);
    train("tb", "b.safetensors", 3);
    char args[2048];
    snprintf(args, sizeof args, "lorahub --model '%s' --adapters a.safetensors,b.safetensors --images few -o hub.safetensors "
             "--steps 12 " COMMON, vkl_test_shared_path(SD));
    char *out = run_ok(args);
    assert_non_null(strstr(out, "generation 2/2 [12/12 evaluations] best loss"));
    free(out);
    char *csv = vkl_test_slurp(vkl_test_dir, "hub_lorahub.csv");
    assert_non_null(csv);
    double w[2], wr[2], best, la, lb, lavg;
    log_row(csv, "best", &best, w);
    log_row(csv, "input_1", &la, wr);
    log_row(csv, "input_2", &lb, wr);
    log_row(csv, "average", &lavg, wr);
    free(csv);
    printf("  diffusion loss on the 2 portraits: a %.5f, b %.5f, average %.5f, LoRAHub %.5f at (%.4f, %.4f)\n", la, lb,
           lavg, best, w[0], w[1]);
    assert_true(best < la && best < lb && best < lavg);

    /* the tensors: weighted sums of the inputs', alphas kept, weights in the metadata */
    vkl_st_file *h = NULL, *fa = NULL, *fb = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(path_in("hub.safetensors"), &h, &e) || vkl_st_open(path_in("a.safetensors"), &fa, &e) ||
        vkl_st_open(path_in("b.safetensors"), &fb, &e))
        fail_msg("%s", e.msg);
    cJSON *mw = cJSON_Parse(vkl_st_meta_get(h, "lorahub_weights"));
    assert_true(cJSON_IsArray(mw));
    for (int i = 0; i < 2; i++) assert_float_equal(cJSON_GetArrayItem(mw, i)->valuedouble, w[i], 1e-8);
    cJSON_Delete(mw);
    assert_int_equal(vkl_st_count(h), vkl_st_count(fa));
    int factors = 0;
    for (int i = 0; i < vkl_st_count(h); i++) {
        const vkl_st_tensor *t = vkl_st_at(h, i), *ta = vkl_st_find(fa, t->name), *tb = vkl_st_find(fb, t->name);
        assert_non_null(ta);
        assert_non_null(tb);
        assert_int_equal(t->nelem, ta->nelem);
        float *x = read_all(h, t), *a = read_all(fa, ta), *b = read_all(fb, tb);
        if (ends_with(t->name, ".alpha")) assert_float_equal(x[0], a[0], 0);
        else {
            assert_true(ends_with(t->name, ".lora_down.weight") || ends_with(t->name, ".lora_up.weight"));
            float *want = malloc(sizeof(float) * t->nelem);
            for (uint64_t k = 0; k < t->nelem; k++) want[k] = (float)(w[0] * a[k] + w[1] * b[k]);
            vkl_test_assert_close(t->name, x, want, t->nelem, 1e-7f, 1e-6f);
            free(want);
            factors++;
        }
        free(x);
        free(a);
        free(b);
    }
    assert_true(factors > 0);
    vkl_st_close(h);
    vkl_st_close(fa);
    vkl_st_close(fb);

    /* the saved mix evaluated again gives the logged loss */
    snprintf(args, sizeof args, "lorahub --model '%s' --adapters hub.safetensors,hub.safetensors --images few "
             "-o again.safetensors --steps 1 " COMMON, vkl_test_shared_path(SD));
    char *rerun = NULL;
    int st = vkl_test_cli(args, NULL, &rerun);
    if (st) fail_msg("status %d: %s", st, rerun ? rerun : "");
    double again = number_after(rerun, "input 1 (hub.safetensors) alone: loss ");
    printf("  the saved mix re-evaluated: %.5f (logged %.5f)\n", again, best);
    assert_float_equal(again, best, 2e-5);
    free(rerun);

    snprintf(args, sizeof args, "generate --model '%s' --prompt 'wesnoth portrait style' --steps 2 --width 64 "
             "--height 64 --lora hub.safetensors:1 --quiet -o g.png", vkl_test_shared_path(SD));
    free(run_ok(args));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix),
    };
    return cmocka_run_group_tests(tests, setup, vkl_test_group_teardown);
}
