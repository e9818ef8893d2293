/* Does a trained style adapter move what `vklora generate` makes toward the
 * style? The reference model is random, so its VAE decodes nothing a person
 * would recognise; the comparison is made where the model works, in latent
 * space: the VAE encodings of the style images against the final latents of
 * generations from the same seeds without and with the adapter. The measure
 * is the distance between the per-channel means of the two latent sets (what
 * sets the colours and the white backgrounds of the portraits once decoded
 * by a real VAE). The random base UNet's samples are far wider spread than
 * any image's encoding, which a rank-8 adapter trained for a minute does not
 * change much, so the spreads are printed but not compared. Training is end
 * to end through the command line, on the shared Wesnoth portrait set. */
#include "vkl_test.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "sd/pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define RES 64
#define SAMPLES 8

typedef struct { double mean[4], std[4]; } latent_stats;

static latent_stats stats_of(const float *x, int n, int ch, int hw)
{
    latent_stats s;
    for (int c = 0; c < ch; c++) {
        double sum = 0, sq = 0;
        for (int i = 0; i < n; i++)
            for (int p = 0; p < hw; p++) {
                double v = x[((size_t)i * ch + c) * hw + p];
                sum += v;
                sq += v * v;
            }
        double cnt = (double)n * hw;
        s.mean[c] = sum / cnt;
        s.std[c] = sqrt(fmax(sq / cnt - s.mean[c] * s.mean[c], 0));
    }
    return s;
}

static double mean_distance(const latent_stats *a, const latent_stats *b)
{
    double d = 0;
    for (int c = 0; c < 4; c++) d += fabs(a->mean[c] - b->mean[c]);
    return d;
}

/* Final latents [SAMPLES, 4, RES/8, RES/8] written by generate --save-latents. */
static float *read_latents(const char *dir, const char *name, int hw)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    vkl_st_file *f;
    vkl_err e = {{0}};
    if (vkl_st_open(path, &f, &e)) {
        print_error("%s\n", e.msg);
        return NULL;
    }
    size_t n = (size_t)SAMPLES * 4 * hw;
    float *x = malloc(n * sizeof *x);
    int rc = vkl_st_read_f32(f, "latents", x, n, &e);
    vkl_st_close(f);
    if (rc) {
        print_error("%s\n", e.msg);
        free(x);
        return NULL;
    }
    return x;
}

/* The style set as the model's VAE sees it: every image resized to RES. */
static float *encode_style_set(const char *images, int *count, int hw)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    vkl_sd_model *m;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(c, vkl_test_shared_path("refkit/sd/tiny-sd"), &mo, &m, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "ls '%s'/*.png", images);
    FILE *ls = popen(cmd, "r");
    assert_non_null(ls);
    float *lat = NULL, chw[3 * RES * RES];
    int n = 0;
    char path[1024];
    while (fgets(path, sizeof path, ls)) {
        path[strcspn(path, "\n")] = 0;
        vkl_image im, small;
        assert_int_equal(vkl_image_read_file(path, 3, VKL_PIX_F32, &im, NULL, &e), 0);
        assert_int_equal(vkl_image_resize(&im, RES, RES, VKL_RESIZE_LANCZOS3, &small, &e), 0);
        const float *px = (const float *)small.data;
        for (int y = 0; y < RES; y++)
            for (int x = 0; x < RES; x++)
                for (int k = 0; k < 3; k++) chw[(k * RES + y) * RES + x] = px[(y * RES + x) * 3 + k] * 2.0f - 1.0f;
        lat = realloc(lat, sizeof(float) * 4 * hw * (size_t)(n + 1));
        if (vkl_sd_encode_image(m, chw, 1, RES, RES, lat + (size_t)n * 4 * hw, &e)) {
            print_error("%s\n", e.msg);
            fail();
        }
        n++;
        vkl_image_free(&im);
        vkl_image_free(&small);
    }
    pclose(ls);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
    *count = n;
    return lat;
}

static void style_adapter_moves_generations_toward_the_style(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    const char *images = vkl_test_shared_path("data/wesnoth-portraits/test16-128px");
    char images_copy[1024];
    snprintf(images_copy, sizeof images_copy, "%s", images);
    char tmp[256], model[1024];
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(model, sizeof model, "%s", vkl_test_shared_path("refkit/sd/tiny-sd"));
    char args[4096], *out = NULL;
    snprintf(args, sizeof args,
             "train --model '%s' --images '%s' --resolution %d --rank 8 --alpha 8 --lr 2e-3 --max-steps 60 "
             "--batch 4 --seed 5 --quiet -o style.safetensors",
             model, images_copy, RES);
    int rc = vkl_test_run_cli(tmp, NULL, args, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    const char *gen = "generate --model '%s' --prompt 'wesnoth portrait style, painted fantasy character portrait' "
                      "--width %d --height %d --steps 12 --sampler euler --cfg 1 --seed 77 --batch %d --quiet "
                      "--save-latents %s -o %s %s";
    snprintf(args, sizeof args, gen, model, RES, RES, SAMPLES, "base.safetensors", "base.png", "");
    assert_int_equal(vkl_test_run_cli(tmp, NULL, args, NULL), 0);
    snprintf(args, sizeof args, gen, model, RES, RES, SAMPLES, "styled.safetensors", "styled.png",
             "--lora style.safetensors");
    assert_int_equal(vkl_test_run_cli(tmp, NULL, args, NULL), 0);

    int hw = (RES / 8) * (RES / 8), n_style = 0;
    float *base = read_latents(tmp, "base.safetensors", hw), *styled = read_latents(tmp, "styled.safetensors", hw);
    assert_non_null(base);
    assert_non_null(styled);
    float *style = encode_style_set(images_copy, &n_style, hw);
    assert_int_equal(n_style, 16);
    latent_stats s = stats_of(style, n_style, 4, hw), b = stats_of(base, SAMPLES, 4, hw),
                 a = stats_of(styled, SAMPLES, 4, hw);
    double d_base = mean_distance(&b, &s), d_styled = mean_distance(&a, &s);
    print_message("distance of the per-channel latent means to the style set: without the adapter %.4f, with it %.4f\n", d_base,
                  d_styled);
    for (int c = 0; c < 4; c++)
        print_message("  channel %d mean/std: style %+.3f/%.3f  base %+.3f/%.3f  styled %+.3f/%.3f\n", c, s.mean[c],
                      s.std[c], b.mean[c], b.std[c], a.mean[c], a.std[c]);
    assert_true(d_styled < 0.5 * d_base);
    free(base);
    free(styled);
    free(style);
    vkl_test_rmtree(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(style_adapter_moves_generations_toward_the_style)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
