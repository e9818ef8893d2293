/* Full txt2img runs of the tiny model against the reference pipelines:
 * diffusers 0.25 (DDIM, Euler, DPM++ 2M Karras) and k-diffusion / AUTOMATIC1111
 * (Euler, Euler a with its recorded per-step noise, DPM++ 2M Karras): the
 * final latents and the decoded image. */
#include "vkl_test.h"
#include "sd/pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static vkl_ctx *ctx;
static vkl_sd_model *model;

static int setup(void **state)
{
    (void)state;
    if (!vkl_test_shared_exists("refkit/sd/tiny-sd")) return 0;
    ctx = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    if (vkl_sd_model_load(ctx, vkl_test_shared_path("refkit/sd/tiny-sd"), NULL, &model, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_sd_model_free(model);
    if (ctx) vkl_test_ctx_done(ctx);
    return 0;
}

static void run_case(const char *file, const char *sampler, vkl_convention conv, int use_step_noise)
{
    char rel[256];
    snprintf(rel, sizeof rel, "refkit/sd/vectors/%s.safetensors", file);
    VKL_REQUIRE_SHARED(rel);
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.prompt = "a photograph of an astronaut riding a horse";
    o.negative = "blurry, low quality";
    o.width = o.height = 128;
    o.cfg = 7.5f;
    o.plain_prompt = 1;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sampler_config_set_name(&o.sampler, sampler, &e), 0);
    o.sampler.convention = conv;
    o.sampler.steps = 8;
    int64_t n;
    float *init = vkl_test_ref_f32(rel, "init_latents", &n);
    o.init_noise = init;
    float *step_noise = use_step_noise ? vkl_test_ref_f32(rel, "step_noise", &n) : NULL;
    o.step_noise = step_noise;
    vkl_gen_result r;
    if (vkl_sd_generate(model, &o, &r, &e)) {
        print_error("%s: %s\n", file, e.msg);
        fail();
    }
    char what[160];
    float *want = vkl_test_ref_f32(rel, "final_latents", &n);
    snprintf(what, sizeof what, "%s final_latents", file);
    vkl_test_assert_scaled(what, r.latents, want, (size_t)n, 1e-3);
    free(want);
    /* image: clamp(decoded/2 + 0.5) in NHWC */
    want = vkl_test_ref_f32(rel, "image", &n);
    float *img = malloc(sizeof(float) * (size_t)n);
    size_t hw = 128 * 128;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            float v = r.images[c * hw + i] * 0.5f + 0.5f;
            img[i * 3 + c] = v < 0 ? 0 : v > 1 ? 1 : v;
        }
    snprintf(what, sizeof what, "%s image", file);
    vkl_test_assert_close(what, img, want, (size_t)n, 2e-3f, 0);
    free(img);
    free(want);
    free(init);
    free(step_noise);
    vkl_gen_result_free(&r);
}

static void diffusers_ddim(void **s) { (void)s; run_case("pipeline_ddim", "ddim", VKL_CONV_DIFFUSERS, 0); }
static void diffusers_euler(void **s) { (void)s; run_case("pipeline_euler", "euler", VKL_CONV_DIFFUSERS, 0); }
static void diffusers_dpmpp_2m_karras(void **s)
{
    (void)s;
    run_case("pipeline_dpmpp_2m_karras", "DPM++ 2M Karras", VKL_CONV_DIFFUSERS, 0);
}
static void a1111_euler(void **s) { (void)s; run_case("kdiff/kdiff_euler_normal", "euler", VKL_CONV_A1111, 0); }
static void a1111_euler_a_karras(void **s)
{
    (void)s;
    run_case("kdiff/kdiff_euler_a_karras", "euler_a_karras", VKL_CONV_A1111, 1);
}
static void a1111_dpmpp_2m_karras(void **s)
{
    (void)s;
    run_case("kdiff/kdiff_dpmpp_2m_karras", "dpmpp_2m_karras", VKL_CONV_A1111, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diffusers_ddim),       cmocka_unit_test(diffusers_euler),
        cmocka_unit_test(diffusers_dpmpp_2m_karras), cmocka_unit_test(a1111_euler),
        cmocka_unit_test(a1111_euler_a_karras), cmocka_unit_test(a1111_dpmpp_2m_karras),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
