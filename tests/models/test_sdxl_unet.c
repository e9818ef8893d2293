/* The SDXL UNet (levels without attention, transformer depth per level,
 * linear projections, "text_time" added conditioning) against diffusers'
 * UNet2DConditionModel on the tiny random model (refkit/sdxl/vectors/
 * unet.safetensors): eps at several timesteps, the all-zero conditioning of
 * force_zeros_for_empty_prompt, and the inner activations at t=500; from the
 * diffusers folder (f32 weights) and the SGM single file (f16 weights). */
#include "vkl_test.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/unet.safetensors"
#define TOL 1e-4

static vkl_tensor *upload_ref(vkl_ctx *c, const char *name, int nd, const int64_t *shape)
{
    int64_t n;
    float *v = vkl_test_ref_f32(VEC, name, &n);
    vkl_tensor *t = vkl_test_upload(c, VKL_F32, nd, shape, v);
    free(v);
    return t;
}

static vkl_tensor *upload_t(vkl_ctx *c, float a, float b)
{
    float v[2] = {a, b};
    return vkl_test_upload(c, VKL_F32, 1, (int64_t[]){2}, v);
}

static void compare(vkl_ctx *c, vkl_tensor *t, const char *ref, const char *label)
{
    int64_t n;
    if (!t) fail_msg("%s: no tensor for %s", label, ref);
    float *want = vkl_test_ref_f32(VEC, ref, &n);
    assert_int_equal(vkl_tensor_nelem(t), n);
    float *got = vkl_test_download(c, t);
    char what[256];
    snprintf(what, sizeof what, "%s %s", label, ref);
    vkl_test_assert_scaled(what, got, want, (size_t)n, TOL);
    free(got);
    free(want);
}

static void check_model(const char *model_rel, const char *yaml_rel, vkl_dtype wdt)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    char yaml[1024] = "";
    if (yaml_rel) snprintf(yaml, sizeof yaml, "%s", vkl_test_shared_path(yaml_rel));
    vkl_sd_source_opts so = {yaml_rel ? yaml : NULL, 0};
    if (vkl_sd_source_open(vkl_test_shared_path(model_rel), &so, &src, &e)) fail_msg("%s", e.msg);
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    const vkl_sd_unet_config *u = &cfg->unet;
    assert_int_equal(u->add_text_time, 1);
    assert_int_equal(u->down_attn[0], 0);
    assert_int_equal(u->transformer_layers[2], 2);
    vkl_weights *w = vkl_weights_new();
    if (vkl_sd_load_weights(c, src, "unet.", wdt, w, &e)) fail_msg("%s", e.msg);
    vkl_unet m = {u, w, NULL, 0};

    vkl_tensor *sample = upload_ref(c, "sample", 4, (int64_t[]){2, 4, 16, 16});
    vkl_tensor *ctx = upload_ref(c, "encoder_hidden_states", 3, (int64_t[]){2, 77, 80});
    vkl_tensor *te = upload_ref(c, "text_embeds", 2, (int64_t[]){2, 32});
    vkl_tensor *ids = upload_ref(c, "time_ids", 2, (int64_t[]){2, 6});
    float zeros_ctx[2 * 77 * 80] = {0}, zeros_te[2 * 32] = {0};
    vkl_tensor *ctx0 = vkl_test_upload(c, VKL_F32, 3, (int64_t[]){2, 77, 80}, zeros_ctx);
    vkl_tensor *te0 = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){2, 32}, zeros_te);
    int64_t n;
    int32_t *mixed = vkl_test_ref_i32(VEC, "timesteps_mixed", &n);
    float *tf = vkl_test_ref_f32(VEC, "timesteps_float", &n);
    vkl_tensor *ts[5] = {upload_t(c, 999, 999), upload_t(c, 500, 500), upload_t(c, 1, 1),
                         upload_t(c, (float)mixed[0], (float)mixed[1]), upload_t(c, tf[0], tf[1])};
    const char *names[5] = {"eps_t999", "eps_t500", "eps_t1", "eps_mixed", "eps_float"};

    vkl_graph *g = vkl_graph_new(c);
    vkl_unet_added add = {te, ids}, add0 = {te0, ids};
    vkl_unet_taps taps;
    memset(&taps, 0, sizeof taps);
    vkl_tensor *out[5];
    for (int i = 0; i < 5; i++) out[i] = vkl_unet_forward_added(g, &m, 0, sample, ts[i], ctx, &add, i == 1 ? &taps : NULL);
    vkl_tensor *zero = vkl_unet_forward_added(g, &m, 0, sample, ts[1], ctx0, &add0, NULL);
    for (int i = 0; i < 5; i++) vkl_graph_keep(g, out[i]);
    vkl_graph_keep(g, zero);
    vkl_tensor *tapv[] = {taps.time_proj, taps.time_embedding, taps.add_time_proj, taps.add_embedding, taps.emb,
                          taps.conv_in, taps.down[0], taps.down[1], taps.down[2], taps.mid, taps.up[0], taps.up[1],
                          taps.up[2], taps.conv_norm_out, taps.conv_out};
    const char *tapn[] = {"time_proj", "time_embedding", "add_time_proj", "add_embedding", "emb", "conv_in",
                          "down_blocks.0", "down_blocks.1", "down_blocks.2", "mid_block", "up_blocks.0",
                          "up_blocks.1", "up_blocks.2", "conv_norm_out", "conv_out"};
    size_t ntap = sizeof tapv / sizeof *tapv;
    for (size_t i = 0; i < ntap; i++) vkl_graph_keep(g, tapv[i]);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) fail_msg("%s", e.msg);

    char label[256], ref[128];
    snprintf(label, sizeof label, "%s %s", model_rel, vkl_dtype_name(wdt));
    for (size_t i = 0; i < ntap; i++) {
        snprintf(ref, sizeof ref, "act_t500.%s", tapn[i]);
        compare(c, tapv[i], ref, label);
    }
    for (int i = 0; i < 5; i++) compare(c, out[i], names[i], label);
    compare(c, zero, "eps_t500_zero_cond", label);

    /* without the added conditioning an SDXL UNet refuses, naming it */
    vkl_graph *g2 = vkl_graph_new(c);
    assert_null(vkl_unet_forward_added(g2, &m, 0, sample, ts[1], ctx, NULL, NULL));
    assert_int_equal(vkl_graph_plan(g2, &e), -1);
    assert_non_null(strstr(e.msg, "added conditioning"));
    vkl_graph_free(g2);

    free(mixed);
    free(tf);
    vkl_graph_free(g);
    for (int i = 0; i < 5; i++) vkl_tensor_free(ts[i]);
    vkl_tensor_free(sample);
    vkl_tensor_free(ctx);
    vkl_tensor_free(te);
    vkl_tensor_free(ids);
    vkl_tensor_free(ctx0);
    vkl_tensor_free(te0);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

static void diffusers_folder_f32(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sdxl/tiny-sdxl");
    check_model("refkit/sdxl/tiny-sdxl", NULL, VKL_F32);
}

static void sgm_file_f16_weights(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sdxl/tiny-sdxl-sgm-fp16.safetensors");
    check_model("refkit/sdxl/tiny-sdxl-sgm-fp16.safetensors", "refkit/sdxl/tiny-sdxl-sgm.yaml", VKL_F16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diffusers_folder_f32),
        cmocka_unit_test(sgm_file_f16_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
