/* Model configuration: read from diffusers config.json, inferred from the
 * names and shapes of original single files (tiny reference model and
 * synthetic full-size SD 1.5 / 2.1 / XL key lists), refined by the yaml. */
#include "vkl_test.h"
#include "io/text.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "sd/sd_source.h"

#define FOLDER "refkit/sd/tiny-sd"
#define LDM "refkit/sd/tiny-sd-ldm.safetensors"
#define MANIFEST "refkit/sd/manifest.json"

static void read_folder(vkl_sd_config *c)
{
    vkl_err e = {{0}};
    if (vkl_sd_config_read_diffusers(vkl_test_shared_path(FOLDER), c, &e)) fail_msg("%s", e.msg);
}

static void diffusers_config_matches_readme(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(FOLDER);
    vkl_sd_config c;
    read_folder(&c);
    assert_int_equal(c.family, VKL_SD_FAMILY_SD1);
    const vkl_sd_unet_config *u = &c.unet;
    assert_int_equal(u->n_levels, 3);
    int boc[] = {32, 64, 64}, down[] = {1, 1, 0}, up[] = {0, 1, 1}, tl[] = {1, 1, 0};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(u->block_out_channels[i], boc[i]);
        assert_int_equal(u->down_attn[i], down[i]);
        assert_int_equal(u->up_attn[i], up[i]);
        assert_int_equal(u->heads[i], 8);
        assert_int_equal(u->transformer_layers[i], tl[i]);
    }
    assert_int_equal(u->layers_per_block, 2);
    assert_int_equal(u->mid_attn, 1);
    assert_int_equal(u->mid_heads, 8);
    assert_int_equal(u->cross_attention_dim, 32);
    assert_int_equal(u->norm_num_groups, 8);
    assert_int_equal(u->use_linear_projection, 0);
    assert_int_equal(u->time_proj_dim, 32);
    assert_int_equal(u->time_embed_dim, 128);
    assert_int_equal(u->flip_sin_to_cos, 1);
    assert_int_equal(u->freq_shift, 0);
    assert_int_equal(u->sample_size, 16);
    assert_true(u->norm_eps == 1e-5f && u->transformer_norm_eps == 1e-6f);
    const vkl_sd_vae_config *v = &c.vae;
    assert_int_equal(v->n_levels, 4);
    int vb[] = {16, 32, 32, 32};
    for (int i = 0; i < 4; i++) assert_int_equal(v->block_out_channels[i], vb[i]);
    assert_int_equal(v->latent_channels, 4);
    assert_int_equal(v->norm_num_groups, 8);
    assert_int_equal(v->layers_per_block, 2);
    assert_true(v->scaling_factor == 0.18215f);
    assert_true(v->norm_eps == 1e-6f);
    const vkl_sd_text_config *t = &c.te[0];
    assert_int_equal(c.n_text_encoders, 1);
    assert_int_equal(t->hidden, 32);
    assert_int_equal(t->layers, 3);
    assert_int_equal(t->heads, 4);
    assert_int_equal(t->intermediate, 37);
    assert_int_equal(t->act, VKL_SD_ACT_QUICK_GELU);
    assert_int_equal(t->max_positions, 77);
    assert_int_equal(t->vocab, 49408);
    assert_int_equal(c.sched.beta_schedule, VKL_SD_BETA_SCALED_LINEAR);
    assert_true(c.sched.beta_start == 0.00085f && c.sched.beta_end == 0.012f);
    assert_int_equal(c.sched.train_steps, 1000);
    assert_int_equal(c.sched.steps_offset, 1);
    assert_int_equal(c.sched.prediction, VKL_SD_PRED_EPSILON);
}

static void inferred_with_yaml_equals_json(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LDM);
    vkl_sd_config json;
    read_folder(&json);
    vkl_sd_source *s;
    vkl_err e = {{0}};
    if (vkl_sd_source_open(vkl_test_shared_path(LDM), NULL, &s, &e)) fail_msg("%s", e.msg);
    char diff[2048];
    int n = vkl_sd_config_diff(vkl_sd_source_config(s), &json, diff, sizeof diff);
    if (n) fail_msg("%d differences: %s", n, diff);
    vkl_sd_source_close(s);
}

/* Key list of one file of the manifest (names and shapes only). */
static void manifest_keys(const char *file, vkl_sd_keys *k)
{
    char *text;
    vkl_err e = {{0}};
    if (vkl_read_text_file(vkl_test_shared_path(MANIFEST), 64 << 20, &text, NULL, &e))
        fail_msg("%s", e.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *t = cJSON_GetObjectItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "files"), file),
                                         "tensors");
    assert_non_null(t);
    memset(k, 0, sizeof *k);
    const cJSON *it;
    cJSON_ArrayForEach(it, t) {
        int64_t shape[8];
        int nd = 0;
        const cJSON *d;
        cJSON_ArrayForEach(d, cJSON_GetObjectItem(it, "shape")) shape[nd++] = (int64_t)d->valuedouble;
        if (vkl_sd_keys_add(k, "", it->string, 0, nd, shape, NULL, &e)) fail_msg("%s", e.msg);
    }
    cJSON_Delete(j);
    if (vkl_sd_keys_finish(k, &e)) fail_msg("%s", e.msg);
}

/* From shapes alone, only what the original format does not record can
 * differ: norm groups (the original code hard-codes 32), trained sample sizes,
 * and the text encoder's heads (width 32 is not a multiple of CLIP's 64). */
static void shapes_only_differs_in_unrecorded_fields(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MANIFEST);
    VKL_REQUIRE_SHARED(FOLDER);
    vkl_sd_config json, inf;
    read_folder(&json);
    vkl_sd_keys k;
    manifest_keys("tiny-sd-ldm.safetensors", &k);
    assert_int_equal(k.n, 790);
    vkl_sd_family f;
    vkl_err e = {{0}};
    if (vkl_sd_detect_family(&k, &f, &e) || vkl_sd_config_infer_ldm(&k, f, &inf, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(f, VKL_SD_FAMILY_SD1);
    char diff[2048];
    int n = vkl_sd_config_diff(&inf, &json, diff, sizeof diff);
    assert_string_equal(diff, "unet.norm_num_groups: 32 vs 8; unet.sample_size: 64 vs 16; "
                              "vae.norm_num_groups: 32 vs 8; vae.sample_size: 512 vs 128; "
                              "text_encoder.heads: 0 vs 4");
    assert_int_equal(n, 5);
    /* With what the yaml says, the mapping accounts for every key. */
    inf.unet.norm_num_groups = inf.vae.norm_num_groups = 8;
    inf.te[0].heads = 4;
    vkl_sd_mapping m;
    if (vkl_sd_map(&inf, VKL_SD_LAYOUT_LDM, &k, &m, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m.n, 790);
    assert_int_equal(m.n_ignored, 0);
    vkl_sd_mapping_free(&m);
    vkl_sd_keys_free(&k);
}

/* ---- synthetic full-size checkpoints ---- */

static void sd15(vkl_sd_config *c) { assert_int_equal(vkl_sd_config_preset("sd1.5", c, NULL), 0); }
static void sd21(vkl_sd_config *c) { assert_int_equal(vkl_sd_config_preset("sd2.1", c, NULL), 0); }
static void sdxl(vkl_sd_config *c) { assert_int_equal(vkl_sd_config_preset("sdxl", c, NULL), 0); }

/* The single-file key list a checkpoint of config c has: VAE attention as
 * 1x1 convs, OpenCLIP q/k/v fused and its projection transposed, plus the
 * buffers real files carry. */
static void synth_keys(const vkl_sd_config *c, vkl_sd_keys *k)
{
    vkl_sd_params p;
    vkl_err e = {{0}};
    if (vkl_sd_params_build(c, &p, &e)) fail_msg("%s", e.msg);
    memset(k, 0, sizeof *k);
    for (int i = 0; i < p.n; i++) {
        vkl_sd_src_name s[2];
        assert_true(vkl_sd_ldm_source_name(c, p.v[i].name, s, 2) >= 1);
        int64_t shape[4];
        memcpy(shape, p.v[i].shape, sizeof shape);
        int nd = p.v[i].ndim;
        if (s[0].xform == VKL_SD_X_SPLIT) {
            if (s[0].part) continue;
            shape[0] *= 3;
        } else if (s[0].xform == VKL_SD_X_TRANSPOSE) {
            shape[0] = p.v[i].shape[1];
            shape[1] = p.v[i].shape[0];
        } else if (strstr(s[0].name, ".mid.attn_1.") && nd == 2) {
            shape[2] = shape[3] = 1;
            nd = 4;
        }
        if (vkl_sd_keys_add(k, "", s[0].name, 0, nd, shape, NULL, &e)) fail_msg("%s", e.msg);
        /* SD 2.x files hold all 24 OpenCLIP layers; the last is unused. */
        const char *r = strstr(s[0].name, "cond_stage_model.model.transformer.resblocks.0.");
        if (c->family == VKL_SD_FAMILY_SD2 && r) {
            char extra[600];
            snprintf(extra, sizeof extra, "cond_stage_model.model.transformer.resblocks.%d.%s",
                     c->te[0].layers, s[0].name + strlen("cond_stage_model.model.transformer.resblocks.0."));
            if (vkl_sd_keys_add(k, "", extra, 0, nd, shape, NULL, &e)) fail_msg("%s", e.msg);
        }
    }
    int64_t t1000[1] = {1000}, scalar[1] = {1}, pos[2] = {1, 77};
    vkl_sd_keys_add(k, "", "alphas_cumprod", 0, 1, t1000, NULL, &e);
    vkl_sd_keys_add(k, "", "model_ema.decay", 0, 0, scalar, NULL, &e);
    if (c->family == VKL_SD_FAMILY_SD1)
        vkl_sd_keys_add(k, "", "cond_stage_model.transformer.text_model.embeddings.position_ids", 0,
                        2, pos, NULL, &e);
    if (c->family == VKL_SD_FAMILY_SD2)
        vkl_sd_keys_add(k, "", "cond_stage_model.model.logit_scale", 0, 0, scalar, NULL, &e);
    vkl_sd_params_free(&p);
    if (vkl_sd_keys_finish(k, &e)) fail_msg("%s", e.msg);
}

static void expect_shape(const vkl_sd_keys *k, const char *name, int nd, int64_t a, int64_t b,
                         int64_t c, int64_t d)
{
    int n = 0;
    const int64_t *s = vkl_sd_keys_shape(k, name, &n);
    if (!s) fail_msg("%s missing", name);
    int64_t want[4] = {a, b, c, d};
    if (n != nd) fail_msg("%s: %d dims, want %d", name, n, nd);
    for (int i = 0; i < nd; i++)
        if (s[i] != want[i]) fail_msg("%s: dim %d is %lld, want %lld", name, i, (long long)s[i],
                                      (long long)want[i]);
}

/* Infers from the synthetic list and maps it; returns number of UNet entries. */
static int infer_and_map(const vkl_sd_config *want, const vkl_sd_keys *k, vkl_sd_family fam)
{
    vkl_sd_family f;
    vkl_sd_config got;
    vkl_err e = {{0}};
    if (vkl_sd_detect_family(k, &f, &e) || vkl_sd_config_infer_ldm(k, f, &got, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(f, fam);
    char diff[2048];
    int n = vkl_sd_config_diff(&got, want, diff, sizeof diff);
    if (n) fail_msg("%s: %d differences: %s", vkl_sd_family_name(fam), n, diff);
    vkl_sd_mapping m;
    if (vkl_sd_map(&got, VKL_SD_LAYOUT_LDM, k, &m, &e)) fail_msg("%s", e.msg);
    int unet = 0;
    for (int i = 0; i < m.n; i++) unet += !strncmp(m.v[i].name, "unet.", 5);
    vkl_sd_mapping_free(&m);
    return unet;
}

static void sd15_full_size(void **state)
{
    (void)state;
    vkl_sd_config c;
    sd15(&c);
    vkl_sd_keys k;
    synth_keys(&c, &k);
    const char *U = "model.diffusion_model.";
    char n[256];
#define K(s) (snprintf(n, sizeof n, "%s%s", U, s), n)
    expect_shape(&k, K("input_blocks.3.0.op.weight"), 4, 320, 320, 3, 3);
    expect_shape(&k, K("input_blocks.4.0.skip_connection.weight"), 4, 640, 320, 1, 1);
    expect_shape(&k, K("output_blocks.0.0.in_layers.0.weight"), 1, 2560, 0, 0, 0);
    expect_shape(&k, K("output_blocks.2.1.conv.weight"), 4, 1280, 1280, 3, 3);
    expect_shape(&k, K("output_blocks.5.2.conv.weight"), 4, 1280, 1280, 3, 3);
    expect_shape(&k, K("output_blocks.8.0.skip_connection.weight"), 4, 640, 960, 1, 1);
    expect_shape(&k, K("output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight"), 2, 320, 768, 0, 0);
    expect_shape(&k, K("middle_block.1.proj_in.weight"), 4, 1280, 1280, 1, 1);
#undef K
    expect_shape(&k, "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight", 4, 128, 256, 1, 1);
    expect_shape(&k, "first_stage_model.encoder.mid.attn_1.q.weight", 4, 512, 512, 1, 1);
    expect_shape(&k, "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc1.weight", 2,
                 3072, 768, 0, 0);
    /* diffusers' SD 1.5: 686 UNet, 248 VAE, 196 text encoder tensors */
    assert_int_equal(k.n, 686 + 248 + 196 + 3);
    assert_int_equal(infer_and_map(&c, &k, VKL_SD_FAMILY_SD1), 686);
    vkl_sd_keys_free(&k);
}

static void sd21_full_size(void **state)
{
    (void)state;
    vkl_sd_config c;
    sd21(&c);
    assert_int_equal(c.sched.prediction, VKL_SD_PRED_V);
    vkl_sd_keys k;
    synth_keys(&c, &k);
    expect_shape(&k, "model.diffusion_model.input_blocks.1.1.proj_in.weight", 2, 320, 320, 0, 0);
    expect_shape(&k, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
                 2, 320, 1024, 0, 0);
    expect_shape(&k, "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", 2, 3072,
                 1024, 0, 0);
    expect_shape(&k, "cond_stage_model.model.transformer.resblocks.23.attn.in_proj_weight", 2, 3072,
                 1024, 0, 0);
    expect_shape(&k, "cond_stage_model.model.positional_embedding", 2, 77, 1024, 0, 0);
    assert_int_equal(infer_and_map(&c, &k, VKL_SD_FAMILY_SD2), 686);
    vkl_sd_keys_free(&k);
}

static void sdxl_full_size(void **state)
{
    (void)state;
    vkl_sd_config c;
    sdxl(&c);
    vkl_sd_keys k;
    synth_keys(&c, &k);
    const char *U = "model.diffusion_model.";
    char n[256];
#define K(s) (snprintf(n, sizeof n, "%s%s", U, s), n)
    expect_shape(&k, K("label_emb.0.0.weight"), 2, 1280, 2816, 0, 0);
    expect_shape(&k, K("input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight"), 2, 640, 640, 0, 0);
    expect_shape(&k, K("input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"), 2, 1280, 2048, 0, 0);
    expect_shape(&k, K("output_blocks.2.2.conv.weight"), 4, 1280, 1280, 3, 3);
    expect_shape(&k, K("output_blocks.8.0.skip_connection.weight"), 4, 320, 640, 1, 1);
#undef K
    expect_shape(&k, "conditioner.embedders.1.model.text_projection", 2, 1280, 1280, 0, 0);
    expect_shape(&k, "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", 2,
                 3840, 1280, 0, 0);
    expect_shape(&k, "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
                 2, 768, 3072, 0, 0);
    infer_and_map(&c, &k, VKL_SD_FAMILY_SDXL);
    vkl_sd_keys_free(&k);
}

static void unknown_family_is_refused(void **state)
{
    (void)state;
    vkl_sd_keys k = {0};
    vkl_err e = {{0}};
    int64_t s[2] = {64, 32};
    vkl_sd_keys_add(&k, "", "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
                    0, 2, s, NULL, &e);
    vkl_sd_keys_finish(&k, &e);
    vkl_sd_family f;
    assert_int_equal(vkl_sd_detect_family(&k, &f, &e), -1);
    assert_non_null(strstr(e.msg, "unknown Stable Diffusion family"));
    assert_non_null(strstr(e.msg, "context width 32"));
    vkl_sd_keys_free(&k);
}

static void unsupported_json_options(void **state)
{
    (void)state;
    vkl_sd_config c;
    vkl_sd_config_family_defaults(&c, VKL_SD_FAMILY_SD1);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_unet_config_from_json("{\"block_out_channels\":[32],"
                                                  "\"class_embed_type\":\"timestep\"}",
                                                  "u.json", &c.unet, &e), -1);
    assert_non_null(strstr(e.msg, "class_embed_type"));
    assert_int_equal(vkl_sd_unet_config_from_json("{\"block_out_channels\":[32,64],"
                                                  "\"down_block_types\":[\"CrossAttnDownBlock2D\","
                                                  "\"SimpleCrossAttnDownBlock2D\"]}",
                                                  "u.json", &c.unet, &e), -1);
    assert_non_null(strstr(e.msg, "SimpleCrossAttnDownBlock2D"));
    assert_int_equal(vkl_sd_sched_config_from_json("{\"prediction_type\":\"sample\"}", "s.json",
                                                   &c.sched, &e), -1);
    assert_non_null(strstr(e.msg, "prediction_type \"sample\""));
    assert_int_equal(vkl_sd_unet_config_from_json("[1,2]", "u.json", &c.unet, &e), -1);
    assert_non_null(strstr(e.msg, "not a JSON object"));
}

/* The parts of SD 2.1's v2-inference-v.yaml that shapes cannot tell. */
static void yaml_heads_and_parameterization(void **state)
{
    (void)state;
    vkl_sd_config c;
    sd21(&c);
    for (int i = 0; i < 4; i++) c.unet.heads[i] = 1;
    c.sched.prediction = VKL_SD_PRED_EPSILON;
    const char *y = "model:\n"
                    "  target: ldm.models.diffusion.ddpm.LatentDiffusion\n"
                    "  params:\n"
                    "    parameterization: \"v\"   # v-prediction\n"
                    "    linear_start: 0.00085\n"
                    "    scale_factor: 0.18215\n"
                    "    unet_config:\n"
                    "      target: ldm.modules.diffusionmodules.openaimodel.UNetModel\n"
                    "      params:\n"
                    "        num_head_channels: 64\n"
                    "        attention_resolutions: [ 4, 2, 1 ]\n"
                    "        channel_mult:\n"
                    "        - 1\n"
                    "        - 2\n";
    vkl_err e = {{0}};
    if (vkl_sd_config_apply_ldm_yaml(y, "v2.yaml", &c, &e)) fail_msg("%s", e.msg);
    vkl_sd_config want;
    sd21(&want);
    char diff[1024];
    int n = vkl_sd_config_diff(&c, &want, diff, sizeof diff);
    if (n) fail_msg("%s", diff);
    assert_int_equal(vkl_sd_config_apply_ldm_yaml("model:\n\tparams: 1\n", "t.yaml", &c, &e), -1);
    assert_non_null(strstr(e.msg, "t.yaml:2"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diffusers_config_matches_readme),
        cmocka_unit_test(inferred_with_yaml_equals_json),
        cmocka_unit_test(shapes_only_differs_in_unrecorded_fields),
        cmocka_unit_test(sd15_full_size),
        cmocka_unit_test(sd21_full_size),
        cmocka_unit_test(sdxl_full_size),
        cmocka_unit_test(unknown_family_is_refused),
        cmocka_unit_test(unsupported_json_options),
        cmocka_unit_test(yaml_heads_and_parameterization),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
