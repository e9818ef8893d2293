/* The CLIP text encoder against transformers' outputs for the tiny model
 * (refkit/sd/vectors/text_encoder.safetensors), from both checkpoint layouts
 * and with f32 and f16 weight storage. */
#include "vkl_test.h"
#include "sd/clip_text.h"
#include "sd/sd_weights.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sd/vectors/text_encoder.safetensors"

static void check_model(const char *model_rel, vkl_dtype wdt)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    if (vkl_sd_source_open(vkl_test_shared_path(model_rel), NULL, &src, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_weights *w = vkl_weights_new();
    if (vkl_sd_load_weights(c, src, "text_encoder.", wdt, w, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_clip_text m = {&cfg->te[0], w, "text_encoder.", NULL};
    int64_t n;
    int32_t *ids = vkl_test_ref_i32(VEC, "input_ids", &n);
    int64_t B = n / 77, shape[2] = {B, 77};
    vkl_tensor *tids = vkl_tensor_new(c, VKL_I32, 2, shape, &e);
    assert_int_equal(vkl_tensor_upload(c, tids, ids, VKL_I32, &e), 0);

    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *layers[8] = {0};
    vkl_tensor *last = vkl_clip_text_forward(g, &m, tids, 0, 1, layers);
    vkl_tensor *skip1 = vkl_clip_text_forward(g, &m, tids, 1, 1, NULL);
    vkl_graph_keep(g, last);
    vkl_graph_keep(g, skip1);
    for (int i = 0; i < cfg->te[0].layers; i++) vkl_graph_keep(g, layers[i]);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float *got = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(last));
    char what[128];
    for (int i = 0; i < cfg->te[0].layers; i++) {
        char name[32];
        snprintf(name, sizeof name, "hidden_states.%d", i + 1);
        float *want = vkl_test_ref_f32(VEC, name, &n);
        assert_int_equal(vkl_tensor_download(c, layers[i], got, VKL_F32, &e), 0);
        snprintf(what, sizeof what, "%s %s %s", model_rel, vkl_dtype_name(wdt), name);
        vkl_test_assert_scaled(what, got, want, (size_t)n, 1e-4);
        free(want);
    }
    float *want = vkl_test_ref_f32(VEC, "last_hidden_state", &n);
    assert_int_equal(vkl_tensor_download(c, last, got, VKL_F32, &e), 0);
    snprintf(what, sizeof what, "%s %s last_hidden_state", model_rel, vkl_dtype_name(wdt));
    vkl_test_assert_scaled(what, got, want, (size_t)n, 1e-4);
    free(want);
    /* clip skip: final_layer_norm(hidden_states[-2]) for every prompt (the
     * pipeline vector covers one prompt; the layer-2 states cover all) */
    float *h2 = vkl_test_ref_f32(VEC, "hidden_states.2", &n);
    assert_int_equal(vkl_tensor_download(c, skip1, got, VKL_F32, &e), 0);
    float *pipe = vkl_test_ref_f32(VEC, "pipeline_prompt_embeds_clip_skip1", &n);
    /* the pipeline prompt is the first prompt of the file */
    snprintf(what, sizeof what, "%s clip skip 1 (prompt 0)", model_rel);
    vkl_test_assert_scaled(what, got, pipe, (size_t)n, 1e-4);
    free(h2);
    free(pipe);
    free(got);
    free(ids);
    vkl_graph_free(g);
    vkl_tensor_free(tids);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

static void diffusers_folder_f32(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    check_model("refkit/sd/tiny-sd", VKL_F32);
}

static void single_file_f16_weights(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm.safetensors");
    check_model("refkit/sd/tiny-sd-ldm.safetensors", VKL_F16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diffusers_folder_f32),
        cmocka_unit_test(single_file_f16_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
