/* The SDXL VAE against diffusers' AutoencoderKL (refkit/sdxl/vectors/
 * vae.safetensors): decode, encode to mean/logvar, and vkl_sd_encode_image's
 * scaling by the config's factor 0.13025 (latent_scaled), from the SGM single
 * file (first_stage_model.*, 1x1-conv mid attention). */
#include "vkl_test.h"
#include "sd/pipeline.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"
#define VEC KIT "vectors/vae.safetensors"

static void sgm_vae(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    VKL_REQUIRE_SHARED(KIT "tiny-sdxl-sgm.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    char tok[1024];
    snprintf(tok, sizeof tok, "%s", vkl_test_shared_path(KIT "tiny-sdxl/tokenizer"));
    mo.tokenizer = tok;
    vkl_sd_model *m = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(c, vkl_test_shared_path(KIT "tiny-sdxl-sgm.safetensors"), &mo, &m, &e)) fail_msg("%s", e.msg);
    assert_true(m->cfg->vae.scaling_factor == 0.13025f);

    int64_t n;
    float *lat = vkl_test_ref_f32(VEC, "latent", &n), *img = vkl_test_ref_f32(VEC, "image", &n);
    vkl_tensor *tl = vkl_test_upload(c, VKL_F32, 4, (int64_t[]){1, 4, 16, 16}, lat);
    vkl_tensor *ti = vkl_test_upload(c, VKL_F32, 4, (int64_t[]){1, 3, 128, 128}, img);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *dec = vkl_vae_decode(g, &m->vae, tl), *mom = vkl_vae_encode(g, &m->vae, ti);
    vkl_graph_keep(g, dec);
    vkl_graph_keep(g, mom);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) fail_msg("%s", e.msg);
    float *got = vkl_test_download(c, dec);
    float *want = vkl_test_ref_f32(VEC, "decoded", &n);
    vkl_test_assert_scaled("SDXL VAE decoded", got, want, (size_t)n, 3e-4);
    free(got);
    free(want);
    got = vkl_test_download(c, mom); /* [mean; logvar] along channels */
    want = vkl_test_ref_f32(VEC, "latent_mean", &n);
    vkl_test_assert_scaled("SDXL VAE latent_mean", got, want, (size_t)n, 1e-4);
    free(want);
    want = vkl_test_ref_f32(VEC, "latent_std", &n);
    for (int64_t i = 0; i < n; i++) {
        float lv = got[n + i] < -30 ? -30 : got[n + i] > 20 ? 20 : got[n + i];
        got[n + i] = expf(0.5f * lv);
    }
    vkl_test_assert_scaled("SDXL VAE latent_std", got + n, want, (size_t)n, 1e-4);
    free(want);
    free(got);
    /* what img2img and training start from: the mean times 0.13025 */
    float scaled[1024];
    assert_int_equal(vkl_sd_encode_image(m, img, 1, 128, 128, scaled, &e), 0);
    want = vkl_test_ref_f32(VEC, "latent_scaled", &n);
    vkl_test_assert_scaled("SDXL VAE latent_scaled", scaled, want, (size_t)n, 1e-4);
    free(want);
    free(lat);
    free(img);
    vkl_graph_free(g);
    vkl_tensor_free(tl);
    vkl_tensor_free(ti);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sgm_vae),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
