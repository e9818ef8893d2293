/* Full SDXL txt2img runs of the tiny model against diffusers 0.25.1's
 * StableDiffusionXLPipeline (refkit/sdxl/vectors/pipeline_*.safetensors):
 * Euler with a negative prompt and DPM++ 2M Karras without one (the
 * unconditional rows are zeros: force_zeros_for_empty_prompt), 4 steps, CFG 5,
 * 128x128, "leading" timesteps from the scheduler config; the final latents
 * and the decoded image (VAE scaling factor 0.13025 from the config), from the
 * diffusers folder and from the SGM single file; and the Euler run with the
 * kohya LoRA at 0.8 on the UNet and both text encoders, applied at run time. */
#include "vkl_test.h"
#include "sd/pipeline.h"
#include "sd/sd_adapters.h"

#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"

static int lowvram; /* the next load keeps one network at a time on the device */

static vkl_sd_model *load(vkl_ctx *c, const char *rel, const char *yaml_rel)
{
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    mo.lowvram = lowvram;
    char yaml[1024], tok[1024];
    if (yaml_rel) {
        snprintf(yaml, sizeof yaml, "%s", vkl_test_shared_path(yaml_rel));
        mo.yaml = yaml;
        /* a single file carries no vocabulary: the folder's first tokenizer */
        snprintf(tok, sizeof tok, "%s", vkl_test_shared_path(KIT "tiny-sdxl/tokenizer"));
        mo.tokenizer = tok;
    }
    vkl_sd_model *m = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(c, vkl_test_shared_path(rel), &mo, &m, &e)) fail_msg("%s", e.msg);
    return m;
}

/* lora_rel: a LoRA applied at run time at multiplier 0.8 (UNet and both text
 * encoders), or NULL */
static void run_case_lora(const char *model_rel, const char *yaml_rel, const char *file, const char *sampler,
                          const char *negative, const char *lora_rel)
{
    char rel[256];
    snprintf(rel, sizeof rel, KIT "vectors/%s.safetensors", file);
    VKL_REQUIRE_SHARED(rel);
    VKL_REQUIRE_SHARED(model_rel);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model *m = load(c, model_rel, yaml_rel);
    assert_int_equal(m->cfg->family, VKL_SD_FAMILY_SDXL);
    assert_int_equal(m->force_zeros_for_empty_prompt, 1);
    vkl_sd_adapters ad;
    memset(&ad, 0, sizeof ad);
    vkl_err le = {{0}};
    if (lora_rel) {
        const char *lp = vkl_test_shared_path(lora_rel);
        float w = 0.8f;
        if (vkl_sd_adapters_apply(m, &lp, &w, &w, 1, 0, &ad, &le)) fail_msg("%s", le.msg);
    }
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.prompt = "a photograph of an astronaut riding a horse";
    o.negative = negative;
    o.width = o.height = 128;
    o.cfg = 5.0f;
    o.plain_prompt = 1;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sampler_config_set_name(&o.sampler, sampler, &e), 0);
    o.sampler.convention = VKL_CONV_DIFFUSERS;
    o.sampler.steps = 4;
    int64_t n;
    float *init = vkl_test_ref_f32(rel, "init_latents", &n);
    o.init_noise = init;
    vkl_gen_result r;
    if (vkl_sd_generate(m, &o, &r, &e)) fail_msg("%s: %s", file, e.msg);
    if (lowvram) assert_int_equal(m->resident, 0); /* nothing left on the device */
    char what[256];
    float *want = vkl_test_ref_f32(rel, "final_latents", &n);
    snprintf(what, sizeof what, "%s %s final_latents", model_rel, file);
    vkl_test_assert_scaled(what, r.latents, want, (size_t)n, 1e-4);
    free(want);
    want = vkl_test_ref_f32(rel, "decoded", &n);
    snprintf(what, sizeof what, "%s %s decoded", model_rel, file);
    vkl_test_assert_scaled(what, r.images, want, (size_t)n, 1e-4);
    free(want);
    free(init);
    vkl_gen_result_free(&r);
    vkl_sd_adapters_free(&ad);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
}

static void run_case(const char *model_rel, const char *yaml_rel, const char *file, const char *sampler,
                     const char *negative)
{
    run_case_lora(model_rel, yaml_rel, file, sampler, negative, NULL);
}

/* add_time_ids against encode_prompt's (refkit prompt_embeds add_time_ids.*) */
static void time_ids(void **s)
{
    (void)s;
    VKL_REQUIRE_SHARED(KIT "vectors/prompt_embeds.safetensors");
    struct { const char *name; int w, h, ow, oh, ct, cl, tw, th; } cases[] = {
        {"add_time_ids.default", 128, 128, 0, 0, 0, 0, 0, 0},
        {"add_time_ids.sizes", 128, 128, 768, 1024, 32, 16, 128, 128},
        {"add_time_ids.hidden_like", 160, 96, 0, 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        vkl_gen_opts o;
        vkl_gen_opts_default(&o);
        o.width = cases[i].w;
        o.height = cases[i].h;
        o.original_width = cases[i].ow;
        o.original_height = cases[i].oh;
        o.crop_top = cases[i].ct;
        o.crop_left = cases[i].cl;
        o.target_width = cases[i].tw;
        o.target_height = cases[i].th;
        float got[6];
        vkl_gen_time_ids(&o, got);
        int64_t n;
        float *want = vkl_test_ref_f32(KIT "vectors/prompt_embeds.safetensors", cases[i].name, &n);
        assert_int_equal(n, 6);
        for (int k = 0; k < 6; k++)
            if (got[k] != want[k]) fail_msg("%s[%d]: %g, want %g", cases[i].name, k, got[k], want[k]);
        free(want);
    }
}

static void folder_euler_lora(void **s)
{
    (void)s;
    run_case_lora(KIT "tiny-sdxl", NULL, "pipeline_euler_lora08", "euler", "blurry, low quality",
                  KIT "vectors/lora/lora_kohya.safetensors");
}

static void folder_euler(void **s)
{
    (void)s;
    run_case(KIT "tiny-sdxl", NULL, "pipeline_euler", "euler", "blurry, low quality");
}

static void folder_dpmpp_2m_karras(void **s)
{
    (void)s;
    run_case(KIT "tiny-sdxl", NULL, "pipeline_dpmpp_2m_karras", "DPM++ 2M Karras", NULL);
}

static void sgm_file_dpmpp_2m_karras(void **s)
{
    (void)s;
    /* with lowvram: both text encoders come and go as one network */
    lowvram = 1;
    run_case(KIT "tiny-sdxl-sgm.safetensors", KIT "tiny-sdxl-sgm.yaml", "pipeline_dpmpp_2m_karras",
             "DPM++ 2M Karras", NULL);
    lowvram = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(time_ids),
        cmocka_unit_test(folder_euler),
        cmocka_unit_test(folder_dpmpp_2m_karras),
        cmocka_unit_test(sgm_file_dpmpp_2m_karras),
        cmocka_unit_test(folder_euler_lora),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
