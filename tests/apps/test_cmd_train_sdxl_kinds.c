/* LyCORIS networks trained on the tiny SDXL model (refkit/sdxl): a LoKr on
 * the attention projections and the resnet 3x3 convolutions, and a DoRA,
 * written under kohya's SGM block names, load in vklora generate on SDXL at
 * run time and merged into the weights, and the two give the same final
 * latents (1e-4 of their scale), which differ from the base model's. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/sdxl/tiny-sdxl"
#define IMAGES "data/wesnoth-portraits/test16-128px"

/* the final latents generate saved as <stem>.safetensors */
static float *latents(const char *stem, int64_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", vkl_test_dir, stem);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    const vkl_st_tensor *t = vkl_st_find(f, "latents");
    assert_non_null(t);
    *n = (int64_t)t->nelem;
    float *v = malloc(sizeof(float) * t->nelem);
    assert_int_equal(vkl_st_read(f, t, VKL_F32, v, &e), 0);
    vkl_st_close(f);
    return v;
}

static void generate(const char *extra, const char *stem)
{
    char args[2048];
    snprintf(args, sizeof args,
             "generate --model '%s' --prompt 'wesnoth portrait style' --steps 2 --width 64 --height 64 --seed 4 "
             "--quiet %s --save-latents %s.safetensors -o %s.png",
             vkl_test_shared_path(MODEL), extra, stem, stem);
    char *o = NULL;
    int rc = vkl_test_cli(args, NULL, &o);
    if (rc) print_error("%s\n", o);
    free(o);
    assert_int_equal(rc, 0);
}

static void check_kind(const char *network, const char *name)
{
    char args[2048], *out = NULL;
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-2 --max-steps 1 "
             "--batch 1 --seed 5 --quiet %s -o %s.safetensors",
             vkl_test_shared_path(MODEL), network, name);
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char lora[256], runtime[256], merged[256];
    snprintf(lora, sizeof lora, "--lora %s.safetensors:1", name);
    snprintf(runtime, sizeof runtime, "%s-run", name);
    snprintf(merged, sizeof merged, "%s-merged", name);
    generate(lora, runtime);
    char lm[300];
    snprintf(lm, sizeof lm, "%s --merge-lora", lora);
    generate(lm, merged);
    int64_t n, nb, nm;
    float *base = latents("base", &nb), *a = latents(runtime, &n), *b = latents(merged, &nm);
    assert_int_equal(n, nb);
    assert_int_equal(n, nm);
    char what[128];
    snprintf(what, sizeof what, "%s merged vs run time", name);
    vkl_test_assert_scaled(what, b, a, (size_t)n, 1e-4);
    double moved = 0, scale = 0;
    for (int64_t i = 0; i < n; i++) {
        moved = fmax(moved, fabs(a[i] - base[i]));
        scale = fmax(scale, fabs(base[i]));
    }
    print_message("%s moves the final latents by %.3g (scale %.3g)\n", name, moved, scale);
    assert_true(moved > 1e-3 * scale);
    free(base);
    free(a);
    free(b);
}

static void lycoris_runtime_matches_merged(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    vkl_test_copy_images(IMAGES);
    generate("", "base");
    check_kind("--network lokr --network-conv", "lokr");
    check_kind("--network dora", "dora");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lycoris_runtime_matches_merged),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
