/* SDXL's two text encoders against transformers / diffusers
 * (refkit/sdxl/vectors/text_encoders.safetensors): per-layer states of both,
 * the concatenated penultimate-layer context (prompt_embeds) and the pooled,
 * projected embedding, from the diffusers folder (f32 weights) and the SGM
 * single file (OpenCLIP's fused in_proj and transposed projection; f16). */
#include "vkl_test.h"
#include "sd/sd_weights.h"
#include "sd/sdxl_text.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/text_encoders.safetensors"
#define TOL 1e-4

static vkl_tensor *ids_tensor(vkl_ctx *c, const int32_t *ids, int64_t B, int64_t L)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){B, L}, &e);
    assert_non_null(t);
    assert_int_equal(vkl_tensor_upload(c, t, ids, VKL_I32, &e), 0);
    return t;
}

static void compare(vkl_ctx *c, vkl_tensor *t, const char *ref, const char *label)
{
    int64_t n;
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
    assert_int_equal(cfg->family, VKL_SD_FAMILY_SDXL);
    assert_int_equal(cfg->n_text_encoders, 2);
    vkl_weights *w = vkl_weights_new();
    if (vkl_sd_load_weights(c, src, "text_encoder.", wdt, w, &e) ||
        vkl_sd_load_weights(c, src, "text_encoder_2.", wdt, w, &e))
        fail_msg("%s", e.msg);
    vkl_clip_text te1 = {&cfg->te[0], w, "text_encoder.", NULL};
    vkl_clip_text te2 = {&cfg->te[1], w, "text_encoder_2.", NULL};
    assert_int_equal(cfg->te[1].act, VKL_SD_ACT_GELU);
    assert_true(cfg->te[1].projection_dim > 0);

    int64_t n;
    int32_t *ids1 = vkl_test_ref_i32(VEC, "input_ids", &n);
    int32_t *ids2 = vkl_test_ref_i32(VEC, "input_ids_2", &n);
    int64_t B = n / 77, L = 77;
    int32_t *rows = malloc(sizeof *rows * (size_t)B);
    vkl_clip_pool_rows(&cfg->te[1], ids2, (int)B, (int)L, rows);
    vkl_tensor *t1 = ids_tensor(c, ids1, B, L), *t2 = ids_tensor(c, ids2, B, L);
    vkl_tensor *trows = vkl_tensor_new(c, VKL_I32, 1, (int64_t[]){B}, &e);
    assert_int_equal(vkl_tensor_upload(c, trows, rows, VKL_I32, &e), 0);

    vkl_graph *g = vkl_graph_new(c);
    int n1 = cfg->te[0].layers, n2 = cfg->te[1].layers;
    vkl_tensor **l1 = calloc((size_t)n1, sizeof *l1), **l2 = calloc((size_t)n2, sizeof *l2);
    vkl_tensor *last1 = vkl_clip_text_forward(g, &te1, t1, 0, 1, l1);
    vkl_tensor *last2 = vkl_clip_text_forward(g, &te2, t2, 0, 1, l2);
    vkl_tensor *pooled = NULL;
    vkl_tensor *ctx = vkl_sdxl_text_forward(g, &te1, &te2, t1, t2, trows, 0, &pooled);
    vkl_tensor *ctx_nopool = vkl_sdxl_text_forward(g, &te1, &te2, t1, t2, NULL, 0, NULL);
    vkl_graph_keep(g, last1);
    vkl_graph_keep(g, last2);
    vkl_graph_keep(g, ctx);
    vkl_graph_keep(g, ctx_nopool);
    vkl_graph_keep(g, pooled);
    for (int i = 0; i < n1; i++) vkl_graph_keep(g, l1[i]);
    for (int i = 0; i < n2; i++) vkl_graph_keep(g, l2[i]);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) fail_msg("%s", e.msg);

    char label[256], name[64];
    snprintf(label, sizeof label, "%s %s", model_rel, vkl_dtype_name(wdt));
    for (int i = 0; i < n1; i++) {
        snprintf(name, sizeof name, "te1.hidden_states.%d", i + 1);
        compare(c, l1[i], name, label);
    }
    for (int i = 0; i < n2; i++) {
        snprintf(name, sizeof name, "te2.hidden_states.%d", i + 1);
        compare(c, l2[i], name, label);
    }
    compare(c, last1, "te1.last_hidden_state", label);
    compare(c, last2, "te2.last_hidden_state", label);
    compare(c, ctx, "prompt_embeds", label);
    compare(c, ctx_nopool, "prompt_embeds", label);
    compare(c, pooled, "pooled_prompt_embeds", label);
    compare(c, pooled, "te2.text_embeds", label);

    free(l1);
    free(l2);
    free(rows);
    free(ids1);
    free(ids2);
    vkl_graph_free(g);
    vkl_tensor_free(t1);
    vkl_tensor_free(t2);
    vkl_tensor_free(trows);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

/* argmax pooling (eos_token_id 2) and first-EOS pooling give different rows
 * when a prompt holds a larger id than EOS would be; here the pad-0 rows of
 * tokenizer_2 make both pick the first EOS. */
static void pool_rows_rule(void **state)
{
    (void)state;
    vkl_sd_text_config c = {0};
    int32_t ids[2 * 5] = {49406, 5, 49407, 0, 0, 49406, 49407, 49407, 49407, 49407};
    int32_t rows[2];
    c.eos_id = 2;
    vkl_clip_pool_rows(&c, ids, 2, 5, rows);
    assert_int_equal(rows[0], 2);
    assert_int_equal(rows[1], 5 + 1);
    c.eos_id = 5; /* a config whose eos id is 5: the first 5 */
    vkl_clip_pool_rows(&c, ids, 2, 5, rows);
    assert_int_equal(rows[0], 1);
    assert_int_equal(rows[1], 5); /* absent: position 0 */
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
    /* the fp16 file has no sidecar: the fp32 file's yaml states the norm groups */
    check_model("refkit/sdxl/tiny-sdxl-sgm-fp16.safetensors", "refkit/sdxl/tiny-sdxl-sgm.yaml", VKL_F16);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_rows_rule),
        cmocka_unit_test(diffusers_folder_f32),
        cmocka_unit_test(sgm_file_f16_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
