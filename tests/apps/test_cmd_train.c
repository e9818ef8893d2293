/* vklora train end to end on the tiny model and a shared image set: the loss
 * log, an interrupted run resumed to the same losses as an uninterrupted one,
 * an adapter whose keys, shapes and metadata follow kohya's rules (every key
 * resolves against the model, as diffusers/ComfyUI/AUTOMATIC1111 map them)
 * and which loads in vklora generate; broken images are skipped. */
#include "vkl_test.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"
#include "sd/sd_source.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char tmp[256];

static int run(const char *args, const char *env, char **output) { return vkl_test_run_cli(tmp, env, args, output); }

static char *slurp(const char *name) { return vkl_test_slurp(tmp, name); }

/* the step,epoch,loss columns */
static void loss_columns(char *csv) { vkl_test_csv_first_columns(csv, 3); }

static void train_resume_and_load(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    char common[2048], args[4096];
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 "
             "--lr-schedule cosine --warmup 1 --max-steps 4 --batch 2 --seed 11 --shuffle-caption --flip --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    /* the image set plus a broken file, which is skipped with a warning */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/' && cp '%s' '%s/images/broken.png'",
             tmp, vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), tmp,
             vkl_test_shared_path("data/image-corpus/derived/huge_1000000x1000000_basn0g01.png"), tmp);
    assert_int_equal(system(cmd), 0);
    char *out;
    snprintf(args, sizeof args, "%s -o a.safetensors", common);
    int rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "broken.png"));
    free(out);
    snprintf(args, sizeof args, "%s -o b.safetensors", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=2", NULL), 130);
    snprintf(args, sizeof args, "%s -o b.safetensors --resume b.state", common);
    assert_int_equal(run(args, NULL, NULL), 0);
    char *a = slurp("a.csv"), *b = slurp("b.csv");
    assert_non_null(a);
    assert_non_null(b);
    loss_columns(a);
    loss_columns(b);
    assert_string_equal(a, b); /* same steps, epochs and losses, digit for digit */
    free(a);
    free(b);

    /* the adapter: kohya keys that resolve against the model, shapes, metadata */
    char path[512];
    snprintf(path, sizeof path, "%s/a.safetensors", tmp);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    int downs = 0;
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        assert_true(!strncmp(t->name, "lora_unet_", 10));
        const char *dot = strchr(t->name, '.');
        assert_non_null(dot);
        assert_true(!strcmp(dot, ".lora_down.weight") || !strcmp(dot, ".lora_up.weight") || !strcmp(dot, ".alpha"));
        if (!strcmp(dot, ".lora_down.weight")) {
            downs++;
            assert_int_equal(t->shape[0], 4);
        }
        if (!strcmp(dot, ".lora_up.weight")) assert_int_equal(t->shape[1], 4);
    }
    assert_true(downs > 0);
    assert_string_equal(vkl_st_meta_get(f, "ss_network_dim"), "4");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_alpha"), "2");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_module"), "networks.lora");
    cJSON *tf = cJSON_Parse(vkl_st_meta_get(f, "ss_tag_frequency"));
    assert_non_null(tf);
    cJSON_Delete(tf);
    /* kohya's bucket keys: 16 images of 128x128 made 64x64 (never enlarged) */
    assert_string_equal(vkl_st_meta_get(f, "ss_enable_bucket"), "True");
    assert_string_equal(vkl_st_meta_get(f, "ss_bucket_no_upscale"), "True");
    assert_string_equal(vkl_st_meta_get(f, "ss_bucket_info"),
                        "{\"buckets\": {\"0\": {\"resolution\": [64, 64], \"count\": 16}}, \"mean_img_ar_error\": 0.0}");
    vkl_st_close(f);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_open(vkl_test_shared_path("refkit/sd/tiny-sd"), &tg, &e), 0);
    vkl_lora l;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(path, &lo, &l, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    assert_int_equal(l.n, downs);
    assert_int_equal(l.n_unmatched, 0);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&tg);
    snprintf(args, sizeof args, "generate --model '%s' --prompt 'wesnoth portrait style' --steps 2 --width 64 "
                                "--height 64 --lora a.safetensors:0.8 --quiet -o g.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(run(args, NULL, NULL), 0);
    /* settings written beside the output, and the loss curve */
    char *js = slurp("a.json");
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "rank")->valueint, 4);
    cJSON_Delete(j);
    free(js);
    snprintf(path, sizeof path, "%s/a.png", tmp);
    FILE *png = fopen(path, "rb");
    assert_non_null(png);
    fclose(png);
}

static void copy_images(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", tmp,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), tmp);
    assert_int_equal(system(cmd), 0);
}

/* --grad-accum: two micro-batches per optimiser step; the log has one row per
 * optimiser step, the state records the accumulation and an interrupted run
 * resumes to the uninterrupted losses; a resume with another count is refused. */
static void accumulation_resumes(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    copy_images();
    char common[2048], args[4096];
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 "
             "--lr-schedule linear --max-steps 3 --batch 1 --grad-accum 2 --seed 5 --flip --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    char *out;
    snprintf(args, sizeof args, "%s -o ga.safetensors", common);
    int rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    snprintf(args, sizeof args, "%s -o gb.safetensors", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=1", NULL), 130);
    char *st = slurp("gb.state/step-000001/state.json");
    assert_non_null(st);
    cJSON *j = cJSON_Parse(st);
    assert_int_equal(cJSON_GetObjectItem(j, "grad_accum")->valueint, 2);
    cJSON_Delete(j);
    free(st);
    snprintf(args, sizeof args, "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 "
             "--max-steps 3 --batch 1 --grad-accum 3 --seed 5 --quiet -o gb.safetensors --resume gb.state",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(run(args, NULL, &out), 1);
    assert_non_null(strstr(out, "--grad-accum 2"));
    free(out);
    snprintf(args, sizeof args, "%s -o gb.safetensors --resume gb.state", common);
    assert_int_equal(run(args, NULL, NULL), 0);
    char *a = slurp("ga.csv"), *b = slurp("gb.csv");
    assert_non_null(a);
    assert_non_null(b);
    int rows = 0;
    for (char *p = a; (p = strchr(p, '\n')); p++) rows++;
    assert_int_equal(rows, 1 + 3);
    loss_columns(a);
    loss_columns(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

/* --train-te: one step trains the text encoder's adapters too; the file holds
 * them under kohya's lora_te_ names (q/k/v/out_proj, fc1, fc2 of every layer),
 * every key resolves against the model, and the up matrices (zero at the
 * start) moved. */
static void train_te_adapter(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    copy_images();
    char args[4096];
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 4 --lr 1e-3 --te-lr 5e-4 "
             "--train-te --max-steps 1 --batch 2 --seed 9 --quiet -o te.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    char *out;
    int rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char path[512];
    snprintf(path, sizeof path, "%s/te.safetensors", tmp);
    vkl_err e = {{0}};
    vkl_st_file *f;
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    assert_string_equal(vkl_st_meta_get(f, "ss_network_train_unet_only"), "False");
    assert_string_equal(vkl_st_meta_get(f, "ss_text_encoder_lr"), "0.0005");
    int te_up = 0;
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        if (strncmp(t->name, "lora_te_text_model_encoder_layers_", 34) || !strstr(t->name, ".lora_up.weight")) continue;
        te_up++;
        float *v = malloc(sizeof(float) * t->nelem);
        assert_int_equal(vkl_st_read(f, t, VKL_F32, v, &e), 0);
        double mx = 0;
        for (uint64_t k = 0; k < t->nelem; k++) mx = fmax(mx, fabs(v[k]));
        if (!(mx > 0)) {
            print_error("%s did not change\n", t->name);
            fail();
        }
        free(v);
    }
    vkl_st_close(f);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_open(vkl_test_shared_path("refkit/sd/tiny-sd"), &tg, &e), 0);
    vkl_lora l;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(path, &lo, &l, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    int te_modules = 0;
    for (int i = 0; i < l.n; i++) te_modules += !strncmp(l.m[i].name, "text_encoder.", 13);
    assert_int_equal(l.n_unmatched, 0);
    assert_int_equal(te_modules, 6 * 3); /* the tiny encoder has 3 layers */
    assert_int_equal(te_up, te_modules);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&tg);
}

static void bad_settings_are_refused(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run("train --model x --images y -o z --rank 0", NULL, &out), 2);
    assert_non_null(strstr(out, "rank"));
    free(out);
    assert_int_equal(run("train --model x --images /nonexistent -o z.safetensors --max-steps 1", NULL, &out), 1);
    free(out);
    assert_int_equal(run("train --model x --images y -o z --grad-accum 0", NULL, &out), 2);
    assert_non_null(strstr(out, "grad-accum"));
    free(out);
    assert_int_equal(run("train --model x --images y -o z --te-lr -1", NULL, &out), 2);
    assert_non_null(strstr(out, "te-lr"));
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
        cmocka_unit_test(train_resume_and_load),
        cmocka_unit_test(accumulation_resumes),
        cmocka_unit_test(train_te_adapter),
        cmocka_unit_test(bad_settings_are_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
