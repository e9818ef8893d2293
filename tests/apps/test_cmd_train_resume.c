/* vklora train's bookkeeping across runs, end to end on the tiny model: an
 * earlier run's adapter, log and state are never replaced without --force; a
 * run killed between saves resumes to the uninterrupted log (no repeated
 * rows, seconds continuing); a finished state is left alone; a resume that
 * changes what the run is (batch, rank, ...) is refused, one that changes the
 * rate is warned about and recorded; and the settings file a run writes is
 * accepted by --config, from another folder, and reproduces the run. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static char *slurp(const char *name) { return vkl_test_slurp(vkl_test_dir, name); }

static char common[2048];

static void prepare(void)
{
    vkl_test_copy_images("data/wesnoth-portraits/test16-128px");
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --max-steps 4 "
             "--batch 1 --seed 7 --save-every 2 --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
}

static int run_train(const char *extra, const char *env, char **out)
{
    char args[4096];
    snprintf(args, sizeof args, "%s %s", common, extra);
    char *o = NULL;
    int rc = vkl_test_cli(args, env, &o);
    if (out) *out = o;
    else free(o);
    return rc;
}

static long long mtime_ns(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", vkl_test_dir, name);
    struct stat st;
    if (stat(path, &st)) return -1;
    return (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

/* the step,epoch,loss columns */
static char *losses(const char *name)
{
    char *s = slurp(name);
    assert_non_null(s);
    vkl_test_csv_first_columns(s, 3);
    return s;
}

/* kohya's ss_epoch: finished epochs (16 images, batch 4: 4 steps = 1 epoch) */
static void ss_epoch_counts_finished_epochs(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    prepare();
    char args[4096];
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --max-steps 4 --batch 4 --seed 7 --quiet "
             "-o e.safetensors", vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/e.safetensors", vkl_test_dir);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    assert_string_equal(vkl_st_meta_get(f, "ss_epoch"), "1");
    assert_string_equal(vkl_st_meta_get(f, "ss_steps"), "4");
    assert_string_equal(vkl_st_meta_get(f, "ss_max_train_steps"), "4");
    /* ModelSpec as kohya writes it for an SD 1.x LoRA */
    assert_string_equal(vkl_st_meta_get(f, "modelspec.sai_model_spec"), "1.0.1");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.architecture"), "stable-diffusion-v1/lora");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.implementation"), "diffusers");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.title"), "e");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.resolution"), "64x64");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.prediction_type"), "epsilon");
    assert_null(vkl_st_meta_get(f, "modelspec.encoder_layer"));
    vkl_st_close(f);
}

static void existing_output_needs_force(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    prepare();
    char *out;
    int rc = run_train("-o a.safetensors", NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    long long t = mtime_ns("a.safetensors"), tc = mtime_ns("a.csv");
    assert_int_equal(run_train("-o a.safetensors", NULL, &out), 1);
    assert_non_null(strstr(out, "a.safetensors exists"));
    assert_non_null(strstr(out, "--force"));
    free(out);
    assert_true(mtime_ns("a.safetensors") == t && mtime_ns("a.csv") == tc);
    /* the log or the state alone is an earlier run too */
    char path[512];
    snprintf(path, sizeof path, "%s/b.csv", vkl_test_dir);
    FILE *f = fopen(path, "w");
    fputs("step,epoch,loss,lr,grad_norm,skipped,seconds\n1,0,1,1,1,0,1\n", f);
    fclose(f);
    assert_int_equal(run_train("-o b.safetensors", NULL, &out), 1);
    assert_non_null(strstr(out, "b.csv exists"));
    free(out);
    assert_int_equal(run_train("-o a.safetensors --force", NULL, &out), 0);
    free(out);
    assert_true(mtime_ns("a.safetensors") != t);
    char *a = slurp("a.csv");
    int rows = 0;
    for (char *p = a; (p = strchr(p, '\n')); p++) rows++;
    free(a);
    assert_int_equal(rows, 1 + 4);
}

/* killed after step 3, whose row is logged; the last state is step 2 */
static void kill_between_saves_resumes_cleanly(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    prepare();
    assert_int_equal(run_train("-o full.safetensors", NULL, NULL), 0);
    assert_int_not_equal(run_train("-o k.safetensors", "VKLORA_TRAIN_KILL_AT=3", NULL), 0);
    char *k = slurp("k.csv");
    assert_non_null(strstr(k, "\n3,"));
    free(k);
    char *out;
    assert_int_equal(vkl_test_cli("train --quiet --model x --images images -o k.safetensors --max-steps 4", NULL, &out), 1);
    free(out); /* not without --resume or --force */
    /* not quiet: it says where it resumes */
    char args[4096];
    snprintf(args, sizeof args, "%s -o k.safetensors --resume k.state", common);
    char *q = strstr(args, " --quiet");
    memmove(q, q + 8, strlen(q + 8) + 1);
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "resuming from step 2 of 4"));
    free(out);
    char *a = losses("full.csv"), *b = losses("k.csv");
    assert_string_equal(a, b); /* rows 1-4 once each, the same losses */
    free(a);
    free(b);
    /* the seconds column goes on from the state's time, never back */
    char *s = slurp("k.csv");
    double prev = -1;
    for (char *ln = strchr(s, '\n'); ln && ln[1]; ln = strchr(ln + 1, '\n')) {
        char *end = strchr(ln + 1, '\n');
        if (end) *end = 0;
        double sec = strtod(strrchr(ln + 1, ',') + 1, NULL);
        if (end) *end = '\n';
        assert_true(sec >= prev);
        prev = sec;
    }
    free(s);
    /* finished: nothing to do, nothing written */
    long long t = mtime_ns("k.safetensors"), tc = mtime_ns("k.csv"), tj = mtime_ns("k.json");
    snprintf(args, sizeof args, "%s -o k.safetensors --resume k.state", common);
    q = strstr(args, " --quiet");
    memmove(q, q + 8, strlen(q + 8) + 1);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    assert_non_null(strstr(out, "nothing to do"));
    free(out);
    assert_true(mtime_ns("k.safetensors") == t && mtime_ns("k.csv") == tc && mtime_ns("k.json") == tj);
}

static void resume_settings_are_checked(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    prepare();
    assert_int_equal(run_train("-o r.safetensors", "VKLORA_TRAIN_INTERRUPT_AT=2", NULL), 130);
    char *out;
    /* --batch 2 and --rank 8 make another run */
    assert_int_equal(run_train("-o r.safetensors --resume r.state --batch 2", NULL, &out), 1);
    assert_non_null(strstr(out, "--batch 1"));
    assert_non_null(strstr(out, "--batch 2"));
    free(out);
    assert_int_equal(run_train("-o r.safetensors --resume r.state --rank 8", NULL, &out), 1);
    assert_non_null(strstr(out, "--rank"));
    free(out);
    /* another rate: a warning, and the settings file records it */
    int rc = run_train("-o r.safetensors --resume r.state --lr 5e-4", NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "--lr 0.0005"));
    free(out);
    char *js = slurp("r.json");
    cJSON *j = cJSON_Parse(js);
    free(js);
    assert_non_null(j);
    cJSON *ch = cJSON_GetObjectItem(j, "resumed-with-changes");
    assert_int_equal(cJSON_GetArraySize(ch), 1);
    cJSON *c0 = cJSON_GetArrayItem(ch, 0);
    assert_string_equal(cJSON_GetObjectItem(c0, "setting")->valuestring, "lr");
    assert_int_equal(cJSON_GetObjectItem(c0, "step")->valueint, 2);
    assert_true(cJSON_GetObjectItem(c0, "was")->valuedouble == 0.001);
    assert_true(cJSON_GetObjectItem(c0, "now")->valuedouble == 0.0005);
    cJSON_Delete(j);
}

/* The settings file: values as given, accepted by --config from another
 * folder (paths relative to the file), the same run again. */
static void settings_file_reproduces_the_run(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    prepare();
    char args[4096];
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-4 --max-steps 3 "
             "--batch 1 --seed 5 --lr-schedule cosine --ema-decay 0.995 --quiet -o s.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    char *js = slurp("s.json");
    assert_non_null(strstr(js, "\"lr\":\t0.0001,"));
    assert_non_null(strstr(js, "\"images\":\t\"images\""));
    assert_null(strstr(js, "\"cycles\""));
    free(js);
    char *out;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/elsewhere'", vkl_test_dir);
    assert_int_equal(system(cmd), 0);
    int rc = vkl_test_run_cli(vkl_test_dir, NULL, "train --config s.json -o again.safetensors", &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/elsewhere", vkl_test_dir);
    rc = vkl_test_run_cli(dir, NULL, "train --config ../s.json -o there.safetensors", &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char *a = losses("s.csv"), *b = losses("again.csv"), *c = vkl_test_slurp(dir, "there.csv");
    assert_non_null(c);
    vkl_test_csv_first_columns(c, 3);
    assert_string_equal(a, b);
    assert_string_equal(a, c);
    free(a);
    free(b);
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(existing_output_needs_force),
        cmocka_unit_test(ss_epoch_counts_finished_epochs),
        cmocka_unit_test(kill_between_saves_resumes_cleanly),
        cmocka_unit_test(resume_settings_are_checked),
        cmocka_unit_test(settings_file_reproduces_the_run),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
