/* The VAE against diffusers' outputs for the tiny model
 * (refkit/sd/vectors/vae.safetensors): decode, and encode to mean/logvar. */
#include "vkl_test.h"
#include "sd/sd_weights.h"
#include "sd/vae.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sd/vectors/vae.safetensors"

static void vae_decode_encode(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    if (vkl_sd_source_open(vkl_test_shared_path("refkit/sd/tiny-sd-ldm.safetensors"), NULL, &src, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_weights *w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "vae.", VKL_F32, w, &e), 0);
    vkl_vae m = {&vkl_sd_source_config(src)->vae, w};
    int64_t n;
    float *lat = vkl_test_ref_f32(VEC, "latent", &n), *img = vkl_test_ref_f32(VEC, "image", &n);
    int64_t ls[4] = {1, 4, 16, 16}, is[4] = {1, 3, 128, 128};
    vkl_tensor *tl = vkl_tensor_new(c, VKL_F32, 4, ls, &e), *ti = vkl_tensor_new(c, VKL_F32, 4, is, &e);
    assert_int_equal(vkl_tensor_upload(c, tl, lat, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, ti, img, VKL_F32, &e), 0);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *dec = vkl_vae_decode(g, &m, tl), *mom = vkl_vae_encode(g, &m, ti);
    vkl_graph_keep(g, dec);
    vkl_graph_keep(g, mom);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float *want = vkl_test_ref_f32(VEC, "decoded", &n);
    float *got = malloc(sizeof(float) * (size_t)n);
    assert_int_equal(vkl_tensor_download(c, dec, got, VKL_F32, &e), 0);
    vkl_test_assert_scaled("vae decoded", got, want, (size_t)n, 3e-4);
    free(want);
    free(got);
    float *moments = malloc(sizeof(float) * 8 * 16 * 16);
    assert_int_equal(vkl_tensor_download(c, mom, moments, VKL_F32, &e), 0);
    float *mean = vkl_test_ref_f32(VEC, "latent_mean", &n), *logvar = vkl_test_ref_f32(VEC, "latent_logvar", &n);
    vkl_test_assert_scaled("vae latent_mean", moments, mean, (size_t)n, 1e-4);
    for (int i = 0; i < n; i++) {
        float v = moments[n + i];
        moments[n + i] = v < -30 ? -30 : v > 20 ? 20 : v;
    }
    vkl_test_assert_scaled("vae latent_logvar", moments + n, logvar, (size_t)n, 1e-4);
    free(mean); free(logvar); free(moments); free(lat); free(img);
    vkl_graph_free(g);
    vkl_tensor_free(tl);
    vkl_tensor_free(ti);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(vae_decode_encode)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
