/* An SDXL-architecture model of other shapes than the reference kit's (two
 * levels, transformer depths 0/3, other head counts, text encoders of other
 * widths and depths, another time-id width), written with random weights from
 * its config files: every size must come from the files. It loads, its
 * configuration is read as written, and it generates finite images for which
 * the zero negative conditioning, the encoded "" and clip skip each make a
 * difference; an add_embedding whose width disagrees with the encoders is
 * refused by name. */
#include "vkl_test.h"
#include "sd/pipeline.h"
#include "sd/sd_folder_write.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KIT "refkit/sdxl/tiny-sdxl/"

static cJSON *get_json(const char *rel)
{
    char *text = vkl_test_slurp(vkl_test_shared(), rel);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    return j;
}

static void put_json(const char *dir, const char *part, const char *name, cJSON *j)
{
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, part);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/%s", dir, part, name);
    char *text = cJSON_Print(j);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    cJSON_Delete(j);
}

static void set_num(cJSON *j, const char *k, double v) { cJSON_ReplaceItemInObject(j, k, cJSON_CreateNumber(v)); }

static void set_ints(cJSON *j, const char *k, const int *v, int n)
{
    cJSON_ReplaceItemInObject(j, k, cJSON_CreateIntArray(v, n));
}

static void set_strs(cJSON *j, const char *k, const char *const *v, int n)
{
    cJSON_ReplaceItemInObject(j, k, cJSON_CreateStringArray(v, n));
}

static void write_configs(const char *dir, int add_in)
{
    /* the kit's tokenizers, scheduler, VAE and model index as they are */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cp -r '%s' '%s' && cp -r '%s' '%s' && cp -r '%s' '%s' && mkdir -p '%s/vae' && "
                              "cp '%s' '%s/vae/' && cp '%s' '%s/'",
             vkl_test_shared_path(KIT "tokenizer"), dir, vkl_test_shared_path(KIT "tokenizer_2"), dir,
             vkl_test_shared_path(KIT "scheduler"), dir, dir, vkl_test_shared_path(KIT "vae/config.json"), dir,
             vkl_test_shared_path(KIT "model_index.json"), dir);
    assert_int_equal(system(cmd), 0);
    cJSON *u = get_json(KIT "unet/config.json");
    int boc[] = {32, 48}, depth[] = {1, 3}, heads[] = {2, 6};
    const char *down[] = {"DownBlock2D", "CrossAttnDownBlock2D"}, *up[] = {"CrossAttnUpBlock2D", "UpBlock2D"};
    set_ints(u, "block_out_channels", boc, 2);
    set_ints(u, "transformer_layers_per_block", depth, 2);
    set_ints(u, "attention_head_dim", heads, 2);
    set_strs(u, "down_block_types", down, 2);
    set_strs(u, "up_block_types", up, 2);
    set_num(u, "layers_per_block", 1);
    set_num(u, "cross_attention_dim", 24 + 40);
    set_num(u, "addition_time_embed_dim", 4);
    set_num(u, "projection_class_embeddings_input_dim", add_in);
    set_num(u, "sample_size", 8);
    put_json(dir, "unet", "config.json", u);
    cJSON *t = get_json(KIT "text_encoder/config.json");
    set_num(t, "hidden_size", 24);
    set_num(t, "num_attention_heads", 2);
    set_num(t, "num_hidden_layers", 3);
    set_num(t, "intermediate_size", 30);
    put_json(dir, "text_encoder", "config.json", t);
    t = get_json(KIT "text_encoder_2/config.json");
    set_num(t, "hidden_size", 40);
    set_num(t, "num_attention_heads", 5);
    set_num(t, "num_hidden_layers", 4);
    set_num(t, "intermediate_size", 50);
    set_num(t, "projection_dim", 16);
    put_json(dir, "text_encoder_2", "config.json", t);
}

static vkl_sd_model *make_model(vkl_ctx *c, const char *tmp, int add_in)
{
    char cfg[512], model[512];
    snprintf(cfg, sizeof cfg, "%s/configs%d", tmp, add_in);
    snprintf(model, sizeof model, "%s/model%d", tmp, add_in);
    assert_int_equal(mkdir(cfg, 0755), 0);
    write_configs(cfg, add_in);
    vkl_err e = {{0}};
    if (vkl_sd_write_random_folder(cfg, NULL, model, VKL_F32, 11, 0, &e)) fail_msg("%s", e.msg);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    vkl_sd_model *m = NULL;
    if (vkl_sd_model_load(c, model, &mo, &m, &e)) fail_msg("%s", e.msg);
    return m;
}

static float *gen(vkl_sd_model *m, const char *negative, int clip_skip)
{
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.prompt = "a red heart!";
    o.negative = negative;
    o.clip_skip = clip_skip;
    o.width = o.height = 64;
    o.cfg = 5;
    o.seed = 9;
    o.sampler.steps = 2;
    vkl_gen_result r;
    vkl_err e = {{0}};
    if (vkl_sd_generate(m, &o, &r, &e)) fail_msg("%s", e.msg);
    size_t n = (size_t)3 * 64 * 64;
    float *img = malloc(sizeof(float) * n);
    memcpy(img, r.images, sizeof(float) * n);
    for (size_t i = 0; i < n; i++) assert_true(isfinite(img[i]));
    vkl_gen_result_free(&r);
    return img;
}

static void other_shapes(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(KIT "unet/config.json");
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model *m = make_model(c, tmp, 16 + 6 * 4);
    const vkl_sd_config *cfg = m->cfg;
    assert_int_equal(cfg->family, VKL_SD_FAMILY_SDXL);
    assert_int_equal(cfg->unet.n_levels, 2);
    assert_int_equal(cfg->unet.down_attn[0], 0);
    assert_int_equal(cfg->unet.transformer_layers[1], 3);
    assert_int_equal(cfg->unet.heads[1], 6);
    assert_int_equal(cfg->te[1].layers, 4);
    assert_int_equal(vkl_sd_context_width(m), 64);
    assert_int_equal(vkl_sd_pooled_width(m), 16);
    assert_int_equal(vkl_clip_pad(m->tok2), 0);

    float *zero = gen(m, NULL, 1), *empty = gen(m, "", 1), *skip2 = gen(m, NULL, 2);
    size_t n = (size_t)3 * 64 * 64;
    float d1 = vkl_test_max_abs_diff(zero, empty, n), d2 = vkl_test_max_abs_diff(zero, skip2, n);
    print_message("zero vs \"\" negative: %g; clip skip 1 vs 2: %g\n", d1, d2);
    assert_true(d1 > 1e-4f);
    assert_true(d2 > 1e-4f);
    free(zero);
    free(empty);
    free(skip2);
    vkl_sd_model_free(m);

    /* add_embedding 41 wide for 16 + 6 x 4 inputs: refused, naming it */
    m = make_model(c, tmp, 41);
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.width = o.height = 64;
    o.sampler.steps = 1;
    vkl_gen_result r;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_generate(m, &o, &r, &e), -1);
    print_message("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "add_embedding"));
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(other_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
