/* Random SDXL (and SD 1.x) weights written in both layouts: the SGM single file
 * (vkl_sd_write_random_checkpoint: OpenCLIP's fused in_proj, transposed
 * text_projection, label_emb, SGM block numbering) and the diffusers folder
 * (vkl_sd_write_random_folder) hold the same values for the same
 * architecture and seed, so both must generate the same image; the single
 * file is read back with the kit's SGM yaml. */
#include "vkl_test.h"
#include "sd/pipeline.h"
#include "sd/sd_folder_write.h"
#include "sd/sd_random.h"

#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"

static float *gen(vkl_ctx *c, const char *path, const char *yaml, const char *tok)
{
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    mo.yaml = yaml;
    mo.tokenizer = tok;
    vkl_sd_model *m = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(c, path, &mo, &m, &e)) fail_msg("%s", e.msg);
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    o.prompt = "a lighthouse at dusk";
    o.negative = "fog";
    o.width = o.height = 64;
    o.cfg = 5;
    o.seed = 4;
    o.sampler.steps = 2;
    vkl_gen_result r;
    if (vkl_sd_generate(m, &o, &r, &e)) fail_msg("%s: %s", path, e.msg);
    float *img = malloc(sizeof(float) * 3 * 64 * 64);
    memcpy(img, r.images, sizeof(float) * 3 * 64 * 64);
    vkl_gen_result_free(&r);
    vkl_sd_model_free(m);
    return img;
}

/* kit: the reference folder whose configs are used; yaml_rel: its single
 * file's yaml */
static void check_kit(const char *kit_rel, const char *yaml_rel)
{
    VKL_REQUIRE_SHARED(yaml_rel);
    char tmp[256], folder[512], file[512];
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(folder, sizeof folder, "%s/folder", tmp);
    snprintf(file, sizeof file, "%s/random-sgm.safetensors", tmp);
    vkl_err e = {{0}};
    /* the kit's folder as the configs: its weight files are not copied */
    if (vkl_sd_write_random_folder(vkl_test_shared_path(kit_rel), NULL, folder, VKL_F32, 21, 0, &e))
        fail_msg("%s", e.msg);
    vkl_sd_config cfg;
    if (vkl_sd_config_read_diffusers(folder, &cfg, &e)) fail_msg("%s", e.msg);
    if (vkl_sd_write_random_checkpoint(&cfg, file, VKL_F32, 21, &e)) fail_msg("%s", e.msg);
    vkl_ctx *c = vkl_test_ctx(NULL);
    char yaml[1024], tok[1024];
    snprintf(yaml, sizeof yaml, "%s", vkl_test_shared_path(yaml_rel));
    snprintf(tok, sizeof tok, "%s/tokenizer", folder);
    float *a = gen(c, folder, NULL, NULL), *b = gen(c, file, yaml, tok);
    float d = vkl_test_max_abs_diff(a, b, (size_t)3 * 64 * 64);
    print_message("%s: folder vs single file of the same random weights: max abs diff %g\n", kit_rel, d);
    assert_true(d <= 1e-6f);
    free(a);
    free(b);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(tmp);
}

static void sdxl_sgm(void **s)
{
    (void)s;
    check_kit(KIT "tiny-sdxl", KIT "tiny-sdxl-sgm.yaml");
}

/* the LDM writer that SD 1.x shares with it */
static void sd1_ldm(void **s)
{
    (void)s;
    check_kit("refkit/sd/tiny-sd", "refkit/sd/tiny-sd-ldm.yaml");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sdxl_sgm),
        cmocka_unit_test(sd1_ldm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
