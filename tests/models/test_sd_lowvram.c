/* A lowvram model generates the same images as a resident one (txt2img and
 * img2img, bit for bit: same graphs on the same weights) with a lower
 * allocator peak, holds nothing on the device between calls, and keeps
 * pinned networks. */
#include "vkl_test.h"
#include "sd/pipeline.h"

#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/sd/tiny-sd"

static vkl_ctx *ctx;

static int setup(void **state)
{
    (void)state;
    if (vkl_test_shared_exists(MODEL)) ctx = vkl_test_ctx(NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (ctx) vkl_test_ctx_done(ctx);
    return 0;
}

static uint64_t current(void)
{
    vkl_mem_stats ms;
    vkl_mem_get_stats(ctx, &ms);
    return ms.total_current;
}

static vkl_sd_model *load(int lowvram)
{
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.lowvram = lowvram;
    vkl_sd_model *m = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(ctx, vkl_test_shared_path(MODEL), &mo, &m, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    return m;
}

static void opts(vkl_gen_opts *o, const float *init_image)
{
    vkl_gen_opts_default(o);
    o->prompt = "a photograph of an astronaut riding a horse";
    o->negative = "blurry";
    o->width = o->height = 128;
    o->cfg = 7.5f;
    o->seed = 42;
    o->sampler.steps = 3;
    o->init_image = init_image;
    o->strength = 0.7f;
}

static void generate(vkl_sd_model *m, const float *init_image, vkl_gen_result *r)
{
    vkl_gen_opts o;
    opts(&o, init_image);
    vkl_err e = {{0}};
    if (vkl_sd_generate(m, &o, r, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
}

static void assert_same(const char *what, const vkl_gen_result *a, const vkl_gen_result *b)
{
    size_t nl = (size_t)4 * 16 * 16, ni = (size_t)3 * 128 * 128;
    printf("%s: max |diff| latents %g, image %g\n", what, vkl_test_max_abs_diff(a->latents, b->latents, nl),
           vkl_test_max_abs_diff(a->images, b->images, ni));
    assert_memory_equal(a->latents, b->latents, sizeof(float) * nl);
    assert_memory_equal(a->images, b->images, sizeof(float) * ni);
}

/* Device bytes each network's weights take, measured on the allocator. */
static void part_bytes(vkl_sd_model *m, uint64_t bytes[3])
{
    vkl_err e = {{0}};
    for (int i = 0; i < 3; i++) {
        uint64_t before = current();
        assert_int_equal(vkl_sd_model_acquire(m, 1 << i, &e), 0);
        bytes[i] = current() - before;
        vkl_sd_model_release(m, 1 << i);
        assert_int_equal(current(), before);
    }
}

static void same_images_lower_peak(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL);
    float *init = malloc(sizeof(float) * 3 * 128 * 128);
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 7);
    vkl_test_fill(&rng, init, (size_t)3 * 128 * 128, -1, 1);

    uint64_t empty = current();
    vkl_sd_model *m = load(0);
    assert_int_equal(m->resident, VKL_SD_PART_ALL);
    vkl_gen_result t2i, i2i;
    generate(m, NULL, &t2i);
    generate(m, init, &i2i);
    assert_int_equal(m->resident, VKL_SD_PART_ALL);
    vkl_sd_model_free(m);
    assert_int_equal(current(), empty);

    m = load(1);
    assert_int_equal(m->resident, 0);
    assert_int_equal(current(), empty); /* nothing uploaded at load */
    uint64_t w[3];
    part_bytes(m, w);
    vkl_gen_result lt2i, li2i;
    generate(m, NULL, &lt2i);
    assert_int_equal(m->resident, 0);
    assert_int_equal(current(), empty); /* nothing left between calls */
    generate(m, init, &li2i);
    assert_int_equal(current(), empty);
    assert_same("txt2img lowvram vs resident", &lt2i, &t2i);
    assert_same("img2img lowvram vs resident", &li2i, &i2i);

    /* Every phase of a lowvram run holds one network, so its peak is below
     * the resident run's by at least the two networks other than the largest. */
    uint64_t all = w[0] + w[1] + w[2], largest = w[0] > w[1] ? w[0] : w[1];
    largest = w[2] > largest ? w[2] : largest;
    printf("weights: text encoder %.2f MiB, UNet %.2f MiB, VAE %.2f MiB\n", w[0] / 1048576.0, w[1] / 1048576.0,
           w[2] / 1048576.0);
    printf("peak txt2img: resident %.2f MiB, lowvram %.2f MiB; img2img: resident %.2f MiB, lowvram %.2f MiB\n",
           t2i.peak_device_bytes / 1048576.0, lt2i.peak_device_bytes / 1048576.0, i2i.peak_device_bytes / 1048576.0,
           li2i.peak_device_bytes / 1048576.0);
    assert_true(lt2i.peak_device_bytes + (all - largest) <= t2i.peak_device_bytes);
    assert_true(li2i.peak_device_bytes + (all - largest) <= i2i.peak_device_bytes);
    vkl_sd_model_free(m);
    vkl_gen_result_free(&t2i);
    vkl_gen_result_free(&i2i);
    vkl_gen_result_free(&lt2i);
    vkl_gen_result_free(&li2i);
    free(init);
}

/* Pinned networks (merged adapters live in them) survive the releases. */
static void pinned_stay(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL);
    uint64_t empty = current();
    vkl_sd_model *m = load(1);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_model_pin(m, VKL_SD_PART_TE, &e), 0);
    vkl_tensor *emb = vkl_weights_find(m->w, "text_encoder.text_model.embeddings.token_embedding.weight");
    assert_non_null(emb);
    uint64_t pinned = current();
    assert_true(pinned > empty);
    vkl_gen_result r;
    generate(m, NULL, &r);
    assert_int_equal(m->resident, VKL_SD_PART_TE);
    assert_ptr_equal(vkl_weights_find(m->w, "text_encoder.text_model.embeddings.token_embedding.weight"), emb);
    assert_int_equal(current(), pinned);
    vkl_gen_result_free(&r);
    vkl_sd_model_free(m);
    assert_int_equal(current(), empty);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(same_images_lower_peak),
        cmocka_unit_test(pinned_stay),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
