/* vklora train --network full on a model made by init-model --configs (the
 * tiny reference architecture, random f32 weights): the output folder is a
 * diffusers model that generate loads; with --ema-decay it holds the
 * weights' average, which after one step is exactly
 *   w0 + (w1 - w0) * (1 - min(decay, 2/11))
 * (w0 the start, w1 the weights after the step, saved in the state folder);
 * an interrupted run resumes to the uninterrupted losses and weights; a
 * single-file model and an output equal to the model are refused. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static char tmp[256];

static int run(const char *args, const char *env, char **output) { return vkl_test_run_cli(tmp, env, args, output); }

static void run_ok(const char *args, const char *env)
{
    char *out;
    int rc = run(args, env, &out);
    if (rc) print_error("vklora %s\n%s\n", args, out);
    free(out);
    assert_int_equal(rc, 0);
}

static float *read_all(const char *rel, const char *name, uint64_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    vkl_st_file *f;
    vkl_err e = {{0}};
    if (vkl_st_open(path, &f, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    const vkl_st_tensor *t = vkl_st_find(f, name);
    assert_non_null(t);
    *n = t->nelem;
    float *x = malloc(sizeof(float) * (size_t)t->nelem);
    assert_int_equal(vkl_st_read(f, t, VKL_F32, x, &e), 0);
    vkl_st_close(f);
    return x;
}

static const char *common =
    "train --model m --images images --resolution 64 --no-bucket --network full --train-te --batch 2 --lr 1e-3 "
    "--seed 3 --quiet";

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

static void make_model(void)
{
    char cmd[2048], args[1024];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", tmp,
             vkl_test_shared_path("data/noto-emoji/test16-128px"), vkl_test_shared_path("data/noto-emoji/test16-128px"),
             tmp);
    assert_int_equal(system(cmd), 0);
    snprintf(args, sizeof args, "init-model --random --configs '%s' --dtype f32 --seed 5 -o m",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    run_ok(args, NULL);
}

static void ema_after_one_step(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("data/noto-emoji/test16-128px");
    make_model();
    char args[1024];
    snprintf(args, sizeof args, "%s --max-steps 1 --ema-decay 0.9 -o out", common);
    run_ok(args, NULL);
    /* the written model loads and draws */
    run_ok("generate --model out --prompt 'red apple' --steps 2 --seed 1 -o a.png --quiet", NULL);
    static const char *names[] = {"conv_in.weight", "down_blocks.0.resnets.0.norm1.bias",
                                  "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight"};
    double rate = 1 - fmin(0.9, 2.0 / 11.0), worst = 0, moved = 0;
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        char full[256];
        snprintf(full, sizeof full, "unet.%s", names[k]);
        uint64_t n0, n1, n2;
        float *w0 = read_all("m/unet/diffusion_pytorch_model.safetensors", names[k], &n0);
        float *w1 = read_all("out.state/step-000001/weights.safetensors", full, &n1);
        float *ema = read_all("out/unet/diffusion_pytorch_model.safetensors", names[k], &n2);
        assert_true(n0 == n1 && n1 == n2);
        for (uint64_t i = 0; i < n0; i++) {
            double want = w0[i] + (w1[i] - (double)w0[i]) * rate;
            worst = fmax(worst, fabs(ema[i] - want));
            moved = fmax(moved, fabs(w1[i] - w0[i]));
        }
        free(w0);
        free(w1);
        free(ema);
    }
    /* the text encoder was trained too: its weights moved */
    uint64_t a, b;
    float *t0 = read_all("m/text_encoder/model.safetensors", "text_model.encoder.layers.0.mlp.fc1.weight", &a);
    float *t1 = read_all("out.state/step-000001/weights.safetensors",
                         "text_encoder.text_model.encoder.layers.0.mlp.fc1.weight", &b);
    assert_int_equal(a, b);
    double te_moved = 0;
    for (uint64_t i = 0; i < a; i++) te_moved = fmax(te_moved, fabs(t1[i] - t0[i]));
    free(t0);
    free(t1);
    print_message("one AdamW step moved weights by up to %.3g (text encoder %.3g); average off by %.3g\n", moved,
                  te_moved, worst);
    assert_true(moved > 1e-4 && te_moved > 1e-4);
    assert_true(worst <= 1e-6);
}

static void resume_equals_uninterrupted(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("data/noto-emoji/test16-128px");
    char args[1024];
    snprintf(args, sizeof args, "%s --max-steps 3 --ema-decay 0.5 -o whole", common);
    run_ok(args, NULL);
    snprintf(args, sizeof args, "%s --max-steps 3 --ema-decay 0.5 -o part", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=1", NULL), 130);
    snprintf(args, sizeof args, "%s --max-steps 3 --ema-decay 0.5 --resume part.state -o part", common);
    run_ok(args, NULL);
    char *a = vkl_test_slurp(tmp, "whole.csv"), *b = vkl_test_slurp(tmp, "part.csv");
    vkl_test_csv_first_columns(a, 3);
    vkl_test_csv_first_columns(b, 3);
    assert_string_equal(a, b);
    free(a);
    free(b);
    uint64_t n1, n2;
    float *x = read_all("whole/unet/diffusion_pytorch_model.safetensors", "conv_out.weight", &n1);
    float *y = read_all("part/unet/diffusion_pytorch_model.safetensors", "conv_out.weight", &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(x, y, sizeof(float) * n1);
    free(x);
    free(y);
}

static void refused(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm.safetensors");
    VKL_REQUIRE_SHARED("data/noto-emoji/test16-128px");
    char args[1024], *out;
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --no-bucket --network full --max-steps 1 -o x",
             vkl_test_shared_path("refkit/sd/tiny-sd-ldm.safetensors"));
    assert_int_not_equal(run(args, NULL, &out), 0);
    assert_non_null(strstr(out, "diffusers model folder"));
    free(out);
    snprintf(args, sizeof args, "%s --max-steps 1 -o m", common);
    assert_int_not_equal(run(args, NULL, &out), 0);
    assert_non_null(strstr(out, "is the model being trained"));
    free(out);
    snprintf(args, sizeof args, "%s --max-steps 1 --ema-decay 1.5 -o y", common);
    assert_int_not_equal(run(args, NULL, &out), 0);
    assert_non_null(strstr(out, "ema-decay"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(ema_after_one_step), cmocka_unit_test(resume_equals_uninterrupted),
                                       cmocka_unit_test(refused)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
