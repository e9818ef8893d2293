/* vklora train --mixed-precision fp16 end to end on the tiny model: the
 * loss scale is saved in the state folder and a resumed run continues with
 * it (an edited state shows the growth rule across the resume) and repeats
 * the uninterrupted losses digit for digit; without fp16 arithmetic
 * ("portable") the run says once that it trains in f32; bad values are
 * refused. */
#include "vkl_test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char tmp[256];

static int run(const char *args, const char *env, char **output) { return vkl_test_run_cli(tmp, env, args, output); }

static char *slurp(const char *name) { return vkl_test_slurp(tmp, name); }

static void spill(const char *name, const char *text)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* the step,epoch,loss columns of a loss log */
static void loss_columns(char *csv) { vkl_test_csv_first_columns(csv, 3); }

static void scale_of(const char *state, double *scale, int *good)
{
    char *st = slurp(state);
    assert_non_null(st);
    cJSON *j = cJSON_Parse(st);
    assert_non_null(j);
    cJSON *s = cJSON_GetObjectItem(j, "loss_scale"), *g = cJSON_GetObjectItem(j, "loss_scale_good_steps");
    assert_true(cJSON_IsNumber(s) && cJSON_IsNumber(g));
    *scale = s->valuedouble;
    *good = g->valueint;
    cJSON_Delete(j);
    free(st);
}

static void copy_images(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", tmp,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), tmp);
    assert_int_equal(system(cmd), 0);
}

static void loss_scale_resumes(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    copy_images();
    char common[2048], args[4096], *out;
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --max-steps 3 "
             "--batch 1 --seed 7 --quiet --mixed-precision fp16",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    snprintf(args, sizeof args, "%s -o a.safetensors", common);
    int rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char *js = slurp("a.json");
    assert_non_null(strstr(js, "\"mixed-precision\":\t\"fp16\""));
    free(js);
    /* interrupted after step 1: S = 65536 with one good step */
    snprintf(args, sizeof args, "%s -o b.safetensors", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=1", NULL), 130);
    double scale;
    int good;
    scale_of("b.state/step-000001/state.json", &scale, &good);
    assert_true(scale == 65536.0);
    assert_int_equal(good, 1);
    /* edit the state to one step before a growth at a lower scale; the
     * resumed step 2 is the 2000th good one: S doubles, the count restarts */
    char *st = slurp("b.state/step-000001/state.json");
    cJSON *j = cJSON_Parse(st);
    cJSON_ReplaceItemInObject(j, "loss_scale", cJSON_CreateNumber(1024));
    cJSON_ReplaceItemInObject(j, "loss_scale_good_steps", cJSON_CreateNumber(1999));
    char *edited = cJSON_Print(j);
    spill("b.state/step-000001/state.json", edited);
    free(edited);
    cJSON_Delete(j);
    free(st);
    snprintf(args, sizeof args, "%s -o b.safetensors --resume b.state", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=2", NULL), 130);
    scale_of("b.state/step-000002/state.json", &scale, &good);
    assert_true(scale == 2048.0);
    assert_int_equal(good, 0);
    assert_int_equal(run(args, NULL, NULL), 0);
    /* S is a power of two and the gradients are f32, so scaling and
     * unscaling are exact: any S gives the same run, digit for digit */
    char *a = slurp("a.csv"), *b = slurp("b.csv");
    assert_non_null(a);
    assert_non_null(b);
    loss_columns(a);
    loss_columns(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

static void portable_says_f32_once(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    copy_images();
    char args[4096], *out;
    /* through a settings file, as kohya's TOML spells it */
    spill("mp.toml", "mixed_precision = \"fp16\"\n");
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --max-steps 1 --batch 1 --seed 7 --quiet "
             "--config mp.toml -o p.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    int rc = run(args, "VKLORA_PROFILE=portable", &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    const char *say = strstr(out, "training in f32");
    assert_non_null(say);
    assert_null(strstr(say + 1, "training in f32"));
    free(out);
    char *st = slurp("p.state/step-000001/state.json");
    assert_non_null(st);
    assert_null(strstr(st, "loss_scale")); /* no scaling in f32 */
    free(st);
}

static void bad_values_are_refused(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run("train --model x --images y -o z --mixed-precision bf16", NULL, &out), 2);
    assert_non_null(strstr(out, "mixed-precision"));
    free(out);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loss_scale_resumes),
        cmocka_unit_test(portable_says_f32_once),
        cmocka_unit_test(bad_values_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
