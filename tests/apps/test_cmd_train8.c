/* vklora train --optimizer adamw8bit on the tiny model: rank 64 gives its
 * 64-channel attention adapters 4096 elements (8-bit state) while the
 * 32-channel ones stay f32; the adapter carries kohya's ss_optimizer for
 * AdamW8bit, the state folder holds the codes (u8) and absmax (f32) and an
 * interrupted run (set through a TOML config, kohya's optimizer_type
 * spelling) resumes to the uninterrupted losses; a resume with the other
 * optimizer and an unknown optimizer are refused. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char tmp[256];

static int run(const char *args, const char *env, char **output) { return vkl_test_run_cli(tmp, env, args, output); }

static char *slurp(const char *name) { return vkl_test_slurp(tmp, name); }

/* Keeps the step, epoch and loss columns of the loss log (drops lr,
 * grad_norm, skipped, seconds). */
static void loss_columns(char *csv) { vkl_test_csv_first_columns(csv, 3); }

static void adamw8bit_resumes(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    char cmd[2048], common[2048], args[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/' && "
             "printf '[optimizer]\\noptimizer_type = \"AdamW8bit\"\\n' > '%s/opt.toml'", tmp,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), tmp, tmp);
    assert_int_equal(system(cmd), 0);
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 64 --alpha 8 --lr 1e-3 "
             "--max-steps 3 --batch 1 --seed 7 --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    char *out;
    snprintf(args, sizeof args, "%s --optimizer adamw8bit -o a.safetensors", common);
    int rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    snprintf(args, sizeof args, "%s --config opt.toml -o b.safetensors", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=1", NULL), 130);

    /* the state: its optimizer, and 8-bit state beside f32 moments */
    char *st = slurp("b.state/step-000001/state.json");
    assert_non_null(st);
    cJSON *j = cJSON_Parse(st);
    assert_string_equal(cJSON_GetObjectItem(j, "optimizer")->valuestring, "adamw8bit");
    cJSON_Delete(j);
    free(st);
    char path[512];
    snprintf(path, sizeof path, "%s/b.state/step-000001/optimizer.safetensors", tmp);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    int q = 0, plain = 0;
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        if (!strncmp(t->name, "codes.", 6)) {
            q++;
            assert_int_equal(t->dtype, VKL_U8);
            assert_int_equal(t->shape[1] * t->shape[2], 512);
            char am[64];
            snprintf(am, sizeof am, "absmax.%s", t->name + 6);
            const vkl_st_tensor *a = vkl_st_find(f, am);
            assert_non_null(a);
            assert_int_equal(a->dtype, VKL_F32);
            assert_int_equal(a->nelem, 2 * (uint64_t)t->shape[0]);
        } else if (!strncmp(t->name, "m.", 2)) {
            plain++;
        }
    }
    vkl_st_close(f);
    print_message("state: %d tensors with 8-bit moments, %d with f32 moments\n", q, plain);
    assert_true(q > 0 && plain > 0);

    /* resuming with the f32 optimizer is refused, by name */
    snprintf(args, sizeof args, "%s --optimizer adamw -o b.safetensors --resume b.state", common);
    assert_int_equal(run(args, NULL, &out), 1);
    assert_non_null(strstr(out, "--optimizer adamw8bit"));
    free(out);
    snprintf(args, sizeof args, "%s --optimizer-type AdamW8bit -o b.safetensors --resume b.state", common);
    assert_int_equal(run(args, NULL, NULL), 0);
    char *a = slurp("a.csv"), *b = slurp("b.csv");
    assert_non_null(a);
    assert_non_null(b);
    loss_columns(a);
    loss_columns(b);
    assert_string_equal(a, b); /* same losses, digit for digit */
    free(a);
    free(b);

    snprintf(path, sizeof path, "%s/b.safetensors", tmp);
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    assert_string_equal(vkl_st_meta_get(f, "ss_optimizer"), "bitsandbytes.optim.adamw.AdamW8bit");
    vkl_st_close(f);
    char *js = slurp("b.json");
    j = cJSON_Parse(js);
    assert_string_equal(cJSON_GetObjectItem(j, "optimizer")->valuestring, "adamw8bit");
    cJSON_Delete(j);
    free(js);
}

static void unknown_optimizer_is_refused(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run("train --model x --images y -o z --optimizer lion", NULL, &out), 2);
    assert_non_null(strstr(out, "adamw8bit"));
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
        cmocka_unit_test(adamw8bit_resumes),
        cmocka_unit_test(unknown_optimizer_is_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
