/* The pad rule on an SD 2.x-style model: a tiny diffusers folder with an
 * OpenCLIP-style (gelu) text encoder, linear projections and a tokenizer that
 * pads with "!" (refkit/sdxl's tokenizer_2). Its prompt conditioning must be
 * the encoder's output on transformers' ids for that tokenizer
 * (refkit/sdxl/vectors/tokenizer.safetensors input_ids_2), which differ from
 * the EOS-padded ids the model was fed before. */
#include "vkl_test.h"
#include "sd/pipeline.h"
#include "sd/sd_folder_write.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IDS "refkit/sdxl/vectors/tokenizer.safetensors"
#define PROMPTS "refkit/sdxl/vectors/tokenizer_prompts.json"

static char tmp[256];

static void put_json(const char *dir, const char *name, cJSON *j)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    char *text = cJSON_Print(j);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
}

static cJSON *get_json(const char *rel)
{
    char *text = vkl_test_slurp(vkl_test_shared(), rel);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    return j;
}

/* configs of the SD 1.x kit's tiny model made SD 2.x-style */
static void write_configs(const char *dir)
{
    const char *parts[] = {"scheduler", "unet", "vae", "text_encoder"};
    for (int i = 0; i < 4; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, parts[i]);
        assert_int_equal(mkdir(p, 0755), 0);
    }
    cJSON *j = get_json("refkit/sd/tiny-sd/model_index.json");
    put_json(dir, "model_index.json", j);
    cJSON_Delete(j);
    j = get_json("refkit/sd/tiny-sd/scheduler/scheduler_config.json");
    put_json(dir, "scheduler/scheduler_config.json", j);
    cJSON_Delete(j);
    j = get_json("refkit/sd/tiny-sd/vae/config.json");
    put_json(dir, "vae/config.json", j);
    cJSON_Delete(j);
    j = get_json("refkit/sd/tiny-sd/unet/config.json");
    cJSON_ReplaceItemInObject(j, "use_linear_projection", cJSON_CreateTrue());
    put_json(dir, "unet/config.json", j);
    cJSON_Delete(j);
    j = get_json("refkit/sd/tiny-sd/text_encoder/config.json");
    cJSON_ReplaceItemInObject(j, "hidden_act", cJSON_CreateString("gelu"));
    put_json(dir, "text_encoder/config.json", j);
    cJSON_Delete(j);
}

static void encoder_rows(vkl_sd_model *m, const int32_t *ids, int n, float *out)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(m->ctx, VKL_I32, 2, (int64_t[]){n, 77}, &e);
    assert_int_equal(vkl_tensor_upload(m->ctx, t, ids, VKL_I32, &e), 0);
    vkl_graph *g = vkl_graph_new(m->ctx);
    vkl_tensor *y = vkl_clip_text_forward(g, &m->te, t, 0, 1, NULL);
    vkl_graph_keep(g, y);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e) || vkl_tensor_download(m->ctx, y, out, VKL_F32, &e))
        fail_msg("%s", e.msg);
    vkl_graph_free(g);
    vkl_tensor_free(t);
}

static void sd2_style_model_pads_with_bang(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IDS);
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd/unet/config.json");
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    char cfg[512], model[512];
    snprintf(cfg, sizeof cfg, "%s/configs", tmp);
    snprintf(model, sizeof model, "%s/sd2-tiny", tmp);
    assert_int_equal(mkdir(cfg, 0755), 0);
    write_configs(cfg);
    vkl_err e = {{0}};
    if (vkl_sd_write_random_folder(cfg, vkl_test_shared_path("refkit/sdxl/tiny-sdxl/tokenizer_2"), model, VKL_F32, 7,
                                   0, &e))
        fail_msg("%s", e.msg);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    vkl_sd_model *m = NULL;
    if (vkl_sd_model_load(c, model, &mo, &m, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m->cfg->family, VKL_SD_FAMILY_SD2);
    assert_int_equal(vkl_clip_pad(m->tok), 0);

    cJSON *pj = get_json(PROMPTS);
    cJSON *prompts = cJSON_GetObjectItem(pj, "prompts");
    int64_t n;
    int32_t *ids2 = vkl_test_ref_i32(IDS, "input_ids_2", &n);
    int32_t *ids1 = vkl_test_ref_i32(IDS, "input_ids", &n);
    int32_t *len = vkl_test_ref_i32(IDS, "untruncated_length_2", &n);
    int D = m->cfg->te[0].hidden;
    float *want = malloc(sizeof(float) * 77 * D), *eos = malloc(sizeof(float) * 77 * D);
    const int pick[] = {0, 3, 26}; /* plain, "hello, world!", "!!!???" */
    for (int k = 0; k < 3; k++) {
        int i = pick[k];
        assert_true(len[i] <= 75);
        float *z = NULL;
        int chunks = 0;
        if (vkl_sd_encode_prompt(m, cJSON_GetArrayItem(prompts, i)->valuestring, 1, 1, 1, &z, &chunks, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(chunks, 1);
        encoder_rows(m, ids2 + i * 77, 1, want);
        char what[64];
        snprintf(what, sizeof what, "SD 2.x-style prompt %d", i);
        vkl_test_assert_scaled(what, z, want, (size_t)77 * D, 1e-6);
        /* the EOS-padded ids give clearly other conditioning: the pad matters */
        encoder_rows(m, ids1 + i * 77, 1, eos);
        float d = vkl_test_max_abs_diff(eos, want, (size_t)77 * D), s = 0;
        for (int q = 0; q < 77 * D; q++) s = fabsf(want[q]) > s ? fabsf(want[q]) : s;
        print_message("prompt %d: EOS padding moves the conditioning by %.3g of its scale\n", i, d / s);
        assert_true(d > 1e-2 * s);
        free(z);
    }
    free(want);
    free(eos);
    free(ids1);
    free(ids2);
    free(len);
    cJSON_Delete(pj);

    /* and the model generates (a 2-step smoke run of the whole pipeline) */
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.prompt = "hello, world!";
    o.width = o.height = 64;
    o.sampler.steps = 2;
    o.seed = 3;
    vkl_gen_result r;
    if (vkl_sd_generate(m, &o, &r, &e)) fail_msg("%s", e.msg);
    for (int q = 0; q < 3 * 64 * 64; q++) assert_true(isfinite(r.images[q]));
    vkl_gen_result_free(&r);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sd2_style_model_pads_with_bang),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
