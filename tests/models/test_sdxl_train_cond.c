/* The SDXL conditioning of `vklora train`: kohya's size/crop time ids of a
 * bucketed sample (values worked out by hand from get_crop_ltrb), and the
 * captions through both text encoders against the reference kit's training
 * inputs (refkit/sdxl/vectors/train_lora.safetensors: encoder_hidden_states
 * and text_embeds of its two prompts), the second time from the cache. */
#include "vkl_test.h"
#include "train/sdxl_train_cond.h"

#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/train_lora.safetensors"

static void expect_ids(int iw, int ih, int bw, int bh, int flip, const float want[6])
{
    float got[6];
    vkl_sdxl_time_ids(iw, ih, bw, bh, flip, got);
    for (int i = 0; i < 6; i++)
        if (got[i] != want[i])
            fail_msg("image %dx%d in bucket %dx%d%s: time id %d is %g, want %g", iw, ih, bw, bh, flip ? " flipped" : "", i,
                     got[i], want[i]);
}

static void time_ids(void **state)
{
    (void)state;
    /* the same aspect ratio: no offset */
    expect_ids(1024, 1024, 512, 512, 0, (float[]){1024, 1024, 0, 0, 512, 512});
    /* wider image (ar 1.667 in a 1.6 bucket): fitted by width, 307.2 high,
     * top = floor(12.8 / 2) = 6; mirrored the left offset stays 0 */
    expect_ids(1000, 600, 512, 320, 0, (float[]){600, 1000, 6, 0, 320, 512});
    expect_ids(1000, 600, 512, 320, 1, (float[]){600, 1000, 6, 0, 320, 512});
    /* taller image (ar 0.7 in a 0.75 bucket): fitted by height, 358.4 wide,
     * left = floor(25.6 / 2) = 12, right = 370.4; mirrored: int(384 - 370.4) = 13 */
    expect_ids(700, 1000, 384, 512, 0, (float[]){1000, 700, 0, 12, 512, 384});
    expect_ids(700, 1000, 384, 512, 1, (float[]){1000, 700, 0, 13, 512, 384});
    /* odd sizes. 517x333 (ar 1.5526) in a 512x320 bucket (1.6): fitted by
     * height, 320 * 517 / 333 = 496.817 wide, left = floor(15.183 / 2) = 7,
     * right = 503.817; mirrored: int(512 - 503.817) = 8, not 7 */
    expect_ids(517, 333, 512, 320, 0, (float[]){333, 517, 0, 7, 320, 512});
    expect_ids(517, 333, 512, 320, 1, (float[]){333, 517, 0, 8, 320, 512});
    /* 333x517 in 320x512: fitted by width, 320 * 517 / 333 = 496.817 high,
     * top = floor(15.183 / 2) = 7; the full width leaves left 0 either way */
    expect_ids(333, 517, 320, 512, 0, (float[]){517, 333, 7, 0, 512, 320});
    expect_ids(333, 517, 320, 512, 1, (float[]){517, 333, 7, 0, 512, 320});
    /* 641x383 in 576x320: 320 * 641 / 383 = 535.561 wide, left =
     * floor(40.439 / 2) = 20, right = 555.561; mirrored: int(20.439) = 20 */
    expect_ids(641, 383, 576, 320, 1, (float[]){383, 641, 0, 20, 320, 576});
    /* square odd image in a square bucket: no offset */
    expect_ids(999, 999, 512, 512, 1, (float[]){999, 999, 0, 0, 512, 512});
}

static void compare_rows(const float *got, const float *want, size_t n, const char *what)
{
    vkl_test_assert_scaled(what, got, want, n, 1e-4);
}

static void captions(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    vkl_sd_model *m = NULL;
    if (vkl_sd_model_load(c, vkl_test_shared_path("refkit/sdxl/tiny-sdxl"), &mo, &m, &e)) fail_msg("%s", e.msg);
    char *caps[2] = {"a photograph of an astronaut riding a horse",
                     "A cat, sitting on a mat; (oil painting) by Greg Rutkowski & Alphonse Mucha"};
    int64_t n;
    float *ehs = vkl_test_ref_f32(VEC, "encoder_hidden_states", &n);
    assert_int_equal(n, 2 * 77 * 80);
    float *te = vkl_test_ref_f32(VEC, "text_embeds", &n);
    assert_int_equal(n, 2 * 32);
    float ctx[2 * 77 * 80], pooled[2 * 32];
    vkl_sdxl_text_cache *cache = vkl_sdxl_text_cache_new(1 << 20);
    assert_non_null(cache);
    if (vkl_sdxl_encode_captions(m, cache, caps, NULL, 2, 0, ctx, pooled, &e)) fail_msg("%s", e.msg);
    compare_rows(ctx, ehs, 2 * 77 * 80, "caption states");
    compare_rows(pooled, te, 2 * 32, "pooled caption embeddings");
    /* again, the second caption twice: all from the cache, nothing encoded */
    char *again[3] = {caps[1], caps[0], caps[1]};
    float ctx3[3 * 77 * 80], pooled3[3 * 32];
    memset(ctx3, 0, sizeof ctx3);
    assert_int_equal(vkl_sdxl_encode_captions(m, cache, again, NULL, 3, 0, ctx3, pooled3, &e), 0);
    int encoded, hits;
    vkl_sdxl_text_cache_stats(cache, &encoded, &hits);
    assert_int_equal(encoded, 2);
    assert_int_equal(hits, 3);
    assert_memory_equal(ctx3, ctx + 77 * 80, sizeof(float) * 77 * 80);
    assert_memory_equal(ctx3 + 77 * 80, ctx, sizeof(float) * 77 * 80);
    assert_memory_equal(ctx3 + 2 * 77 * 80, ctx + 77 * 80, sizeof(float) * 77 * 80);
    assert_memory_equal(pooled3 + 32, pooled, sizeof(float) * 32);
    /* a cache too small to keep anything still gives the same states */
    vkl_sdxl_text_cache *tiny = vkl_sdxl_text_cache_new(16);
    assert_int_equal(vkl_sdxl_encode_captions(m, tiny, again, NULL, 3, 0, ctx3, pooled3, &e), 0);
    compare_rows(ctx3 + 77 * 80, ehs, 77 * 80, "caption states without room in the cache");
    vkl_sdxl_text_cache_stats(tiny, &encoded, &hits);
    assert_int_equal(hits, 0);
    vkl_sdxl_text_cache_free(tiny);
    vkl_sdxl_text_cache_free(cache);
    free(ehs);
    free(te);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(time_ids),
        cmocka_unit_test(captions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
