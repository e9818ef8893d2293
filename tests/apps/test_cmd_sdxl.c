/* vklora generate and info on the tiny SDXL reference model
 * (refkit/sdxl): the diffusers folder and the SGM single file reproduce
 * diffusers' StableDiffusionXLPipeline runs from their initial noise (final
 * latents and PNG), and info names the family. */
#include "vkl_test.h"
#include "io/image.h"
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"

static char tmp[256];

static int run(const char *args, char **output) { return vkl_test_run_cli(tmp, NULL, args, output); }

static void write_noise(const char *rel)
{
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e = {{0}};
    int64_t n;
    float *init = vkl_test_ref_f32(rel, "init_latents", &n);
    assert_int_equal(n, 1024);
    assert_int_equal(vkl_st_writer_add(w, "latents", VKL_F32, 4, (int64_t[]){1, 4, 16, 16}, init, &e), 0);
    free(init);
    char path[512];
    snprintf(path, sizeof path, "%s/noise.safetensors", tmp);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
    vkl_st_writer_free(w);
}

static void compare(const char *rel, const char *png_rel, const char *out_png, const char *what)
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
    vkl_test_assert_scaled(what, got, want, 1024, 1e-4);
    free(want);
    vkl_image a, b;
    snprintf(path, sizeof path, "%s/%s", tmp, out_png);
    assert_int_equal(vkl_image_read_file(path, 3, VKL_PIX_U8, &a, NULL, &e), 0);
    assert_int_equal(vkl_image_read_file(vkl_test_shared_path(png_rel), 3, VKL_PIX_U8, &b, NULL, &e), 0);
    assert_int_equal(a.width, b.width);
    assert_int_equal(a.height, b.height);
    int worst = 0;
    for (int i = 0; i < a.width * a.height * 3; i++) {
        int d = abs((int)vkl_image_u8(&a)[i] - (int)vkl_image_u8(&b)[i]);
        if (d > worst) worst = d;
    }
    print_message("%s PNG: max byte difference %d\n", what, worst);
    assert_true(worst <= 1);
    vkl_image_free(&a);
    vkl_image_free(&b);
}

static void generate_both_layouts(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(KIT "vectors/pipeline_euler.safetensors");
    VKL_REQUIRE_SHARED(KIT "tiny-sdxl-sgm.safetensors");
    const char *common = "--prompt 'a photograph of an astronaut riding a horse' --steps 4 --cfg 5 --width 128 "
                         "--height 128 --quiet --init-noise noise.safetensors --save-latents lat.safetensors "
                         "--sampler-convention diffusers";
    char args[4096];
    char *out = NULL;
    write_noise(KIT "vectors/pipeline_euler.safetensors");
    snprintf(args, sizeof args, "generate --model '%s' %s --negative 'blurry, low quality' --sampler euler -o e.png",
             vkl_test_shared_path(KIT "tiny-sdxl"), common);
    int rc = run(args, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    compare(KIT "vectors/pipeline_euler.safetensors", KIT "vectors/pipeline_euler.png", "e.png", "folder euler");

    /* the single file with its yaml beside it and the folder's vocabulary;
     * no negative prompt: zero conditioning */
    write_noise(KIT "vectors/pipeline_dpmpp_2m_karras.safetensors");
    char tok[1024];
    snprintf(tok, sizeof tok, "%s", vkl_test_shared_path(KIT "tiny-sdxl/tokenizer"));
    snprintf(args, sizeof args, "generate --model '%s' --tokenizer '%s' %s --sampler 'DPM++ 2M Karras' -o d.png",
             vkl_test_shared_path(KIT "tiny-sdxl-sgm.safetensors"), tok, common);
    rc = run(args, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    compare(KIT "vectors/pipeline_dpmpp_2m_karras.safetensors", KIT "vectors/pipeline_dpmpp_2m_karras.png", "d.png",
            "single file dpm++ 2m karras");
}

static void info_names_sdxl(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(KIT "tiny-sdxl-sgm.safetensors");
    const char *files[2] = {KIT "tiny-sdxl", KIT "tiny-sdxl-sgm.safetensors"};
    for (int i = 0; i < 2; i++) {
        char args[2048];
        char *out = NULL;
        snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path(files[i]));
        assert_int_equal(run(args, &out), 0);
        print_message("%s", out);
        assert_non_null(strstr(out, "SDXL"));
        free(out);
    }
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
        cmocka_unit_test(generate_both_layouts),
        cmocka_unit_test(info_names_sdxl),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
