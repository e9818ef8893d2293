/* The UNet against diffusers' outputs for the tiny model
 * (refkit/sd/vectors/unet.safetensors): epsilon at several timesteps
 * (integer, per-sample and fractional) and the intermediate activations,
 * from both checkpoint layouts. */
#include "vkl_test.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sd/vectors/unet.safetensors"

static vkl_tensor *upload_ref(vkl_ctx *c, const char *name, int nd, const int64_t *shape)
{
    int64_t n;
    float *x = vkl_test_ref_f32(VEC, name, &n);
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, nd, shape, &e);
    assert_non_null(t);
    assert_int_equal(vkl_tensor_nelem(t), n);
    assert_int_equal(vkl_tensor_upload(c, t, x, VKL_F32, &e), 0);
    free(x);
    return t;
}

static void compare(vkl_ctx *c, vkl_tensor *t, const char *name, const char *label)
{
    int64_t n;
    float *want = vkl_test_ref_f32(VEC, name, &n);
    assert_int_equal(vkl_tensor_nelem(t), n);
    float *got = malloc(sizeof(float) * (size_t)n);
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_download(c, t, got, VKL_F32, &e), 0);
    char what[160];
    snprintf(what, sizeof what, "%s %s", label, name);
    vkl_test_assert_scaled(what, got, want, (size_t)n, 1e-4);
    free(want);
    free(got);
}

static void check(const char *model_rel, vkl_dtype wdt)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    /* the fp16 copy has no yaml of its own: the fp32 file's states what shapes cannot */
    vkl_sd_source_opts so = {strstr(model_rel, "fp16") ? vkl_test_shared_path("refkit/sd/tiny-sd-ldm.yaml") : NULL, 0};
    if (vkl_sd_source_open(vkl_test_shared_path(model_rel), &so, &src, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_weights *w = vkl_weights_new();
    if (vkl_sd_load_weights(c, src, "unet.", wdt, w, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_unet m = {&cfg->unet, w, NULL, 0};
    int64_t ss[4] = {2, 4, 16, 16}, cs[3] = {2, 77, 32}, ts[1] = {2};
    vkl_tensor *sample = upload_ref(c, "sample", 4, ss), *ctx = upload_ref(c, "encoder_hidden_states", 3, cs);
    struct { const char *out; float t[2]; } cases[] = {
        {"eps_t999", {999, 999}}, {"eps_t500", {500, 500}}, {"eps_t1", {1, 1}}, {"eps_mixed", {999, 1}}, {"eps_float", {0, 0}}};
    int64_t n;
    float *tf = vkl_test_ref_f32(VEC, "timesteps_float", &n);
    cases[4].t[0] = tf[0];
    cases[4].t[1] = tf[1];
    free(tf);
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        vkl_tensor *tt = vkl_tensor_new(c, VKL_F32, 1, ts, &e);
        assert_int_equal(vkl_tensor_upload(c, tt, cases[k].t, VKL_F32, &e), 0);
        vkl_graph *g = vkl_graph_new(c);
        vkl_unet_taps taps;
        memset(&taps, 0, sizeof taps);
        vkl_tensor *eps = vkl_unet_forward(g, &m, sample, tt, ctx, k == 1 ? &taps : NULL);
        vkl_graph_keep(g, eps);
        if (k == 1) {
            vkl_tensor *all[] = {taps.time_proj, taps.time_embedding, taps.conv_in, taps.down[0], taps.down[1],
                                 taps.down[2], taps.mid, taps.up[0], taps.up[1], taps.up[2], taps.conv_norm_out};
            for (size_t i = 0; i < sizeof all / sizeof *all; i++) vkl_graph_keep(g, all[i]);
        }
        if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
            print_error("%s\n", e.msg);
            fail();
        }
        if (k == 1) {
            compare(c, taps.time_proj, "act_t500.time_proj", model_rel);
            compare(c, taps.time_embedding, "act_t500.time_embedding", model_rel);
            compare(c, taps.conv_in, "act_t500.conv_in", model_rel);
            compare(c, taps.down[0], "act_t500.down_blocks.0", model_rel);
            compare(c, taps.down[1], "act_t500.down_blocks.1", model_rel);
            compare(c, taps.down[2], "act_t500.down_blocks.2", model_rel);
            compare(c, taps.mid, "act_t500.mid_block", model_rel);
            compare(c, taps.up[0], "act_t500.up_blocks.0", model_rel);
            compare(c, taps.up[1], "act_t500.up_blocks.1", model_rel);
            compare(c, taps.up[2], "act_t500.up_blocks.2", model_rel);
            compare(c, taps.conv_norm_out, "act_t500.conv_norm_out", model_rel);
        }
        compare(c, eps, cases[k].out, model_rel);
        vkl_graph_free(g);
        vkl_tensor_free(tt);
    }
    vkl_tensor_free(sample);
    vkl_tensor_free(ctx);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

static void diffusers_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    check("refkit/sd/tiny-sd", VKL_F32);
}

static void single_file_f16(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm-fp16.safetensors");
    check("refkit/sd/tiny-sd-ldm-fp16.safetensors", VKL_F16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diffusers_folder),
        cmocka_unit_test(single_file_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
