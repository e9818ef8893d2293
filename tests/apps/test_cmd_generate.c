/* vklora generate end to end on the tiny reference model: reproduces the
 * reference pipelines from their initial noise (PNG and latents), with and
 * without a LoRA (run-time and merged), writes the parameters chunk, numbers
 * batch outputs, renders a LoRA sweep grid, runs --lowvram (merged adapters
 * included) and tiled decoding, and refuses bad input clearly. */
#include "vkl_test.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/sha256.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static char tmp[256];

static int run(const char *args, char **output) { return vkl_test_run_cli(tmp, NULL, args, output); }

static const char *model(void) { return vkl_test_shared_path("refkit/sd/tiny-sd"); }

/* Writes tensors "latents" (and "step_noise") of a reference run to noise.safetensors. */
static void write_noise(const char *rel, int with_step_noise)
{
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e = {{0}};
    int64_t n;
    float *init = vkl_test_ref_f32(rel, "init_latents", &n);
    int64_t s4[4] = {1, 4, 16, 16};
    assert_int_equal(vkl_st_writer_add(w, "latents", VKL_F32, 4, s4, init, &e), 0);
    free(init);
    if (with_step_noise) {
        float *sn = vkl_test_ref_f32(rel, "step_noise", &n);
        int64_t s5[4] = {8, 4, 16, 16};
        assert_int_equal(vkl_st_writer_add(w, "step_noise", VKL_F32, 4, s5, sn, &e), 0);
        free(sn);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/noise.safetensors", tmp);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
    vkl_st_writer_free(w);
}

static void compare_latents(const char *rel, const char *what)
{
    char path[512];
    snprintf(path, sizeof path, "%s/lat.safetensors", tmp);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    float got[1024];
    assert_int_equal(vkl_st_read_f32(f, "latents", got, 1024, &e), 0);
    vkl_st_close(f);
    int64_t n;
    float *want = vkl_test_ref_f32(rel, "final_latents", &n);
    vkl_test_assert_scaled(what, got, want, 1024, 1e-3);
    free(want);
}

static void compare_png(const char *out, const char *ref_png)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, out);
    vkl_image a, b;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_read_file(path, 3, VKL_PIX_U8, &a, NULL, &e), 0);
    assert_int_equal(vkl_image_read_file(vkl_test_shared_path(ref_png), 3, VKL_PIX_U8, &b, NULL, &e), 0);
    assert_int_equal(a.width, b.width);
    int worst = 0;
    for (int i = 0; i < a.width * a.height * 3; i++) {
        int d = abs((int)vkl_image_u8(&a)[i] - (int)vkl_image_u8(&b)[i]);
        if (d > worst) worst = d;
    }
    print_message("%s vs %s: max byte difference %d\n", out, ref_png, worst);
    assert_true(worst <= 1);
    vkl_image_free(&a);
    vkl_image_free(&b);
}

static void reproduces_reference_pipelines(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/pipeline_euler.safetensors");
    char args[4096];
    const char *common = "--prompt 'a photograph of an astronaut riding a horse' --negative 'blurry, low quality' "
                         "--steps 8 --cfg 7.5 --width 128 --height 128 --quiet --init-noise noise.safetensors "
                         "--save-latents lat.safetensors";
    write_noise("refkit/sd/vectors/pipeline_euler.safetensors", 0);
    snprintf(args, sizeof args, "generate --model '%s' %s --sampler euler --sampler-convention diffusers -o euler.png",
             model(), common);
    assert_int_equal(run(args, NULL), 0);
    compare_latents("refkit/sd/vectors/pipeline_euler.safetensors", "euler latents");
    compare_png("euler.png", "refkit/sd/vectors/pipeline_euler.png");
    /* k-diffusion Euler ancestral with its recorded per-step noise */
    write_noise("refkit/sd/vectors/kdiff/kdiff_euler_a_karras.safetensors", 1);
    snprintf(args, sizeof args, "generate --model '%s' %s --sampler 'Euler a' --schedule karras -o ea.png", model(),
             common);
    assert_int_equal(run(args, NULL), 0);
    compare_latents("refkit/sd/vectors/kdiff/kdiff_euler_a_karras.safetensors", "euler a karras latents");
    /* the LoRA run at multiplier 0.8, applied at run time and merged */
    write_noise("refkit/sd/vectors/pipeline_euler_lora08.safetensors", 0);
    /* 2: merged into a lowvram model, whose merged networks must stay resident */
    for (int merged = 0; merged < 3; merged++) {
        snprintf(args, sizeof args,
                 "generate --model '%s' %s --sampler euler --sampler-convention diffusers --lora '%s':0.8 %s -o l.png",
                 model(), common, vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors"),
                 merged == 2 ? "--merge-lora --lowvram" : merged ? "--merge-lora" : "");
        char *out;
        int rc = run(args, &out);
        if (rc) print_error("%s\n", out);
        free(out);
        assert_int_equal(rc, 0);
        compare_latents("refkit/sd/vectors/pipeline_euler_lora08.safetensors",
                        merged == 2 ? "LoRA 0.8 merged lowvram latents"
                        : merged    ? "LoRA 0.8 merged latents"
                                    : "LoRA 0.8 run-time latents");
        compare_png("l.png", "refkit/sd/vectors/pipeline_euler_lora08.png");
    }
    /* the adapter is recorded as AUTOMATIC1111 records it */
    char path[512], hash[VKL_SHA256_HEX], want[128];
    vkl_err e = {{0}};
    assert_int_equal(
        vkl_hash_safetensors_autov3(vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors"), hash, &e), 0);
    snprintf(want, sizeof want, "Lora hashes: \"lora_kohya: %.12s\"", hash);
    snprintf(path, sizeof path, "%s/l.png", tmp);
    vkl_png_text *t;
    int nt;
    assert_int_equal(vkl_png_read_texts_file(path, &t, &nt, &e), 0);
    assert_non_null(strstr(vkl_png_text_get(t, nt, "parameters"), want));
    vkl_png_texts_free(t, nt);
}

static void batch_parameters_and_sweep(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char args[4096];
    snprintf(args, sizeof args,
             "generate --model '%s' --prompt 'a (red:1.2) cube' --steps 3 --width 128 --height 64 --batch 2 "
             "--seed 7 --quiet -o b.png",
             model());
    assert_int_equal(run(args, NULL), 0);
    char path[512];
    vkl_image_info info;
    vkl_err e = {{0}};
    snprintf(path, sizeof path, "%s/b-1.png", tmp);
    assert_int_equal(vkl_image_info_file(path, &info, &e), 0);
    assert_int_equal(info.width, 128);
    assert_int_equal(info.height, 64);
    vkl_png_text *t;
    int nt;
    snprintf(path, sizeof path, "%s/b.png", tmp);
    assert_int_equal(vkl_png_read_texts_file(path, &t, &nt, &e), 0);
    const char *p = vkl_png_text_get(t, nt, "parameters");
    assert_non_null(p);
    assert_non_null(strstr(p, "a (red:1.2) cube\nSteps: 3, Sampler: Euler, CFG scale: 7, Seed: 7, Size: 128x64"));
    vkl_png_texts_free(t, nt);
    snprintf(args, sizeof args,
             "generate --model '%s' --prompt cube --steps 2 --width 64 --height 64 --seed 3 --quiet "
             "--lora-sweep '%s':0,0.5,1 -o sweep.png",
             model(), vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors"));
    assert_int_equal(run(args, NULL), 0);
    snprintf(path, sizeof path, "%s/sweep.png", tmp);
    assert_int_equal(vkl_image_info_file(path, &info, &e), 0);
    assert_int_equal(info.width, 3 * 64);
    assert_true(info.height > 64);
    /* lowvram and tiled decoding say so in the summary line */
    snprintf(args, sizeof args,
             "generate --model '%s' --prompt cube --steps 1 --width 128 --height 128 --seed 3 --lowvram "
             "--vae-tiling on --vae-tile 8 --vae-tile-overlap 2 -o t.png",
             model());
    char *out;
    assert_int_equal(run(args, &out), 0);
    assert_non_null(strstr(out, "(9 tiles)"));
    assert_non_null(strstr(out, "(lowvram)"));
    free(out);
}

static void bad_input_is_refused_clearly(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char *out;
    /* no model named: vklora's own model, at its native size */
    assert_int_equal(run("generate --prompt 'red heart' --steps 2 --seed 1 -o own.png", &out), 0);
    assert_non_null(strstr(out, "vklora-emoji"));
    free(out);
    char args[4096];
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --width 100 --height 64 -o x.png", model());
    assert_int_equal(run(args, &out), 1);
    assert_non_null(strstr(out, "--width 100: this model's VAE needs a multiple of"));
    free(out);
    assert_int_equal(run("generate --model /nonexistent/model.safetensors --prompt x -o x.png", &out), 1);
    assert_non_null(strstr(out, "/nonexistent/model.safetensors"));
    free(out);
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --vae-tiling sometimes -o x.png", model());
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "--vae-tiling 'sometimes': expected one of auto|on|off"));
    free(out);
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --vae-tile 8 --vae-tile-overlap 8 -o x.png", model());
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "--vae-tile-overlap (8) must be below --vae-tile (8)"));
    free(out);
    /* an adapter for another model family */
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --steps 1 --width 64 --height 64 --lora '%s' -o x.png",
             model(), vkl_test_shared_path("refkit/lm/tiny-llama-lora/adapter_model.safetensors"));
    assert_int_equal(run(args, &out), 1);
    assert_non_null(strstr(out, "language-model adapter"));
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
        cmocka_unit_test(reproduces_reference_pipelines),
        cmocka_unit_test(batch_parameters_and_sweep),
        cmocka_unit_test(bad_input_is_refused_clearly),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
