/* Adapters applied at run time against the reference kit
 * (refkit/sd/vectors/lora_expected.safetensors, computed by merging in
 * float64): UNet epsilon and text-encoder states at multipliers 1.0 and 0.6
 * for the kohya, kohya-fp16, diffusers and PEFT files of the same LoRA. The
 * multiplier changes between runs of one planned graph (no re-plan). */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "sd/clip_text.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"

#include <stdlib.h>
#include <string.h>

#define EXP "refkit/sd/vectors/lora_expected.safetensors"

static vkl_tensor *up(vkl_ctx *c, const char *rel, const char *name, vkl_dtype dt, int nd, const int64_t *s)
{
    int64_t n;
    void *x = dt == VKL_I32 ? (void *)vkl_test_ref_i32(rel, name, &n) : (void *)vkl_test_ref_f32(rel, name, &n);
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, s, &e);
    assert_int_equal(vkl_tensor_upload(c, t, x, dt, &e), 0);
    free(x);
    return t;
}

static void check(vkl_ctx *c, vkl_tensor *t, const char *name, const char *label)
{
    int64_t n;
    float *want = vkl_test_ref_f32(EXP, name, &n);
    float *got = malloc(sizeof(float) * (size_t)n);
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_download(c, t, got, VKL_F32, &e), 0);
    char what[256];
    snprintf(what, sizeof what, "%s %s", label, name);
    vkl_test_assert_scaled(what, got, want, (size_t)n, 1e-4);
    free(want);
    free(got);
}

static void one_file(vkl_ctx *c, const vkl_sd_source *src, vkl_weights *w, const char *file)
{
    vkl_err e = {{0}};
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(cfg, &tg, &e), 0);
    vkl_lora lora;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    char rel[256];
    snprintf(rel, sizeof rel, "refkit/sd/vectors/lora/%s", file);
    if (vkl_lora_load(vkl_test_shared_path(rel), &lo, &lora, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_lora_targets_free(&tg);
    vkl_lora_use use = {&lora, 1.0f, 1.0f};
    vkl_lora_set *set;
    assert_int_equal(vkl_lora_set_build(c, &use, 1, &set, &e), 0);

    vkl_unet unet = {&cfg->unet, w, set, 0};
    vkl_clip_text te = {&cfg->te[0], w, "text_encoder.", set};
    int64_t ss[4] = {2, 4, 16, 16}, cs[3] = {2, 77, 32}, is[2] = {6, 77};
    vkl_tensor *sample = up(c, EXP, "sample", VKL_F32, 4, ss), *ctx = up(c, EXP, "encoder_hidden_states", VKL_F32, 3, cs);
    vkl_tensor *ids = up(c, EXP, "te_input_ids", VKL_I32, 2, is);
    float tv[2] = {500, 500};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){2}, &e);
    assert_int_equal(vkl_tensor_upload(c, t, tv, VKL_F32, &e), 0);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *eps = vkl_unet_forward(g, &unet, sample, t, ctx, NULL);
    vkl_tensor *hs = vkl_clip_text_forward(g, &te, ids, 0, 1, NULL);
    vkl_graph_keep(g, eps);
    vkl_graph_keep(g, hs);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    float mults[2] = {1.0f, 0.6f};
    const char *eps_names[2] = {"eps_m1.0_t500", "eps_m0.6_t500"};
    const char *te_names[2] = {"te_last_hidden_state_m1.0", "te_last_hidden_state_m0.6"};
    for (int k = 0; k < 2; k++) {
        use.unet_mult = use.te_mult = mults[k];
        assert_int_equal(vkl_lora_set_multipliers(set, &use, 1, &e), 0);
        assert_int_equal(vkl_graph_run(g, &e), 0);
        check(c, eps, eps_names[k], file);
        check(c, hs, te_names[k], file);
    }
    vkl_graph_free(g);
    vkl_tensor_free(sample);
    vkl_tensor_free(ctx);
    vkl_tensor_free(ids);
    vkl_tensor_free(t);
    vkl_lora_set_free(set);
    vkl_lora_free(&lora);
}

static void every_format_every_multiplier(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(EXP);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path("refkit/sd/tiny-sd"), NULL, &src, &e), 0);
    vkl_weights *w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "", VKL_F32, w, &e), 0);
    const char *files[] = {"lora_kohya.safetensors", "lora_kohya_fp16.safetensors", "lora_diffusers.safetensors",
                           "lora_peft.safetensors"};
    for (int i = 0; i < 4; i++) one_file(c, src, w, files[i]);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(every_format_every_multiplier)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
