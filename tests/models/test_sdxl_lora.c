/* SDXL LoRA application against diffusers (refkit/sdxl/vectors/
 * lora_expected.safetensors): the UNet (attention, resnet and sampler
 * targets), text_encoder (lora_te1_) and text_encoder_2 (lora_te2_) outputs at
 * multipliers 1.0 and 0.6, from the kohya file (SGM module names), its fp16
 * copy, the kohya file with diffusers module names and the diffusers file, at
 * run time and merged. */
#include "vkl_test.h"
#include "sd/sd_adapters.h"
#include "sd/sdxl_text.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"
#define EXP KIT "vectors/lora_expected.safetensors"
#define UNET KIT "vectors/unet.safetensors"

static vkl_tensor *up_ref(vkl_ctx *c, const char *file, const char *name, int nd, const int64_t *shape)
{
    int64_t n;
    float *v = vkl_test_ref_f32(file, name, &n);
    vkl_tensor *t = vkl_test_upload(c, VKL_F32, nd, shape, v);
    free(v);
    return t;
}

static vkl_tensor *up_ids(vkl_ctx *c, const char *name, int64_t *B)
{
    int64_t n;
    int32_t *v = vkl_test_ref_i32(EXP, name, &n);
    *B = n / 77;
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){*B, 77}, &e);
    assert_int_equal(vkl_tensor_upload(c, t, v, VKL_I32, &e), 0);
    free(v);
    return t;
}

static void compare(vkl_ctx *c, vkl_tensor *t, const char *ref, const char *label)
{
    int64_t n;
    float *want = vkl_test_ref_f32(EXP, ref, &n);
    assert_int_equal(vkl_tensor_nelem(t), n);
    float *got = vkl_test_download(c, t);
    char what[256];
    snprintf(what, sizeof what, "%s %s", label, ref);
    vkl_test_assert_scaled(what, got, want, (size_t)n, 1e-4);
    free(got);
    free(want);
}

/* The text encoders (both LoRA'd) and the UNet (LoRA'd, fed the reference
 * inputs without text-encoder LoRA) at multiplier mult, compared with the
 * expected values named by suffix ("m1.0", "m0.6"). */
static void check_outputs(vkl_sd_model *m, const char *suffix, const char *label)
{
    vkl_ctx *c = m->ctx;
    vkl_err e = {{0}};
    int64_t B;
    vkl_tensor *ids1 = up_ids(c, "te_input_ids", &B), *ids2 = up_ids(c, "te_input_ids_2", &B);
    int32_t *raw2 = vkl_test_ref_i32(EXP, "te_input_ids_2", &B);
    B /= 77;
    int32_t rows[16];
    assert_true(B <= 16);
    vkl_clip_pool_rows(&m->cfg->te[1], raw2, (int)B, 77, rows);
    free(raw2);
    vkl_tensor *trows = vkl_tensor_new(c, VKL_I32, 1, (int64_t[]){B}, &e);
    assert_int_equal(vkl_tensor_upload(c, trows, rows, VKL_I32, &e), 0);
    vkl_tensor *sample = up_ref(c, UNET, "sample", 4, (int64_t[]){2, 4, 16, 16});
    vkl_tensor *ctx = up_ref(c, UNET, "encoder_hidden_states", 3, (int64_t[]){2, 77, 80});
    vkl_tensor *te = up_ref(c, UNET, "text_embeds", 2, (int64_t[]){2, 32});
    vkl_tensor *tid = up_ref(c, UNET, "time_ids", 2, (int64_t[]){2, 6});
    float t500[2] = {500, 500};
    vkl_tensor *t = vkl_test_upload(c, VKL_F32, 1, (int64_t[]){2}, t500);

    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *pooled = NULL;
    vkl_tensor *pe = vkl_sdxl_text_forward(g, &m->te, &m->te2, ids1, ids2, trows, 0, &pooled);
    vkl_unet_added add = {te, tid};
    vkl_tensor *eps = vkl_unet_forward_added(g, &m->unet, 0, sample, t, ctx, &add, NULL);
    vkl_graph_keep(g, pe);
    vkl_graph_keep(g, pooled);
    vkl_graph_keep(g, eps);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) fail_msg("%s: %s", label, e.msg);
    char ref[64];
    snprintf(ref, sizeof ref, "prompt_embeds_%s", suffix);
    compare(c, pe, ref, label);
    snprintf(ref, sizeof ref, "te2_text_embeds_%s", suffix);
    compare(c, pooled, ref, label);
    snprintf(ref, sizeof ref, "eps_%s_t500", suffix);
    compare(c, eps, ref, label);
    vkl_graph_free(g);
    vkl_tensor *all[] = {ids1, ids2, trows, sample, ctx, te, tid, t};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) vkl_tensor_free(all[i]);
}

/* merged: merge at 0.6; reweight: also move the run-time multiplier to 0.6 */
static void check_file(const char *lora_rel, int merged, int reweight)
{
    VKL_REQUIRE_SHARED(EXP);
    VKL_REQUIRE_SHARED(lora_rel);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    vkl_sd_model *m = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(c, vkl_test_shared_path(KIT "tiny-sdxl"), &mo, &m, &e)) fail_msg("%s", e.msg);
    const char *path = vkl_test_shared_path(lora_rel);
    float one = 1.0f, part = 0.6f;
    vkl_sd_adapters a;
    char label[256];
    snprintf(label, sizeof label, "%s %s", lora_rel, merged ? "merged" : "run time");
    if (vkl_sd_adapters_apply(m, &path, merged ? &part : &one, merged ? &part : &one, 1, merged, &a, &e))
        fail_msg("%s: %s", label, e.msg);
    if (merged) {
        check_outputs(m, "m0.6", label);
    } else {
        check_outputs(m, "m1.0", label);
        if (reweight) { /* re-weighting at run time, without reloading */
            assert_int_equal(vkl_sd_adapters_set_weight(&a, 0, 0.6f, 0.6f, &e), 0);
            check_outputs(m, "m0.6", label);
        }
    }
    vkl_sd_adapters_free(&a);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
}

static void kohya_run_time(void **s) { (void)s; check_file(KIT "vectors/lora/lora_kohya.safetensors", 0, 1); }
static void kohya_merged(void **s) { (void)s; check_file(KIT "vectors/lora/lora_kohya.safetensors", 1, 0); }
static void kohya_fp16(void **s) { (void)s; check_file(KIT "vectors/lora/lora_kohya_fp16.safetensors", 0, 0); }
static void kohya_diffusers_names(void **s)
{
    (void)s;
    check_file(KIT "vectors/lora/lora_kohya_diffusers_names.safetensors", 0, 0);
}
static void diffusers_file(void **s) { (void)s; check_file(KIT "vectors/lora/lora_diffusers.safetensors", 0, 0); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kohya_run_time), cmocka_unit_test(kohya_merged),          cmocka_unit_test(kohya_fp16),
        cmocka_unit_test(kohya_diffusers_names), cmocka_unit_test(diffusers_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
