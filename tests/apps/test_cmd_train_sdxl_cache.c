/* The latent cache on disk keeps SD 1.x and SDXL apart: an SD 1.x model and
 * an SDXL model reached under the same name (m) train on one image folder
 * with --cache-latents-to-disk (default resolutions, 512 and 1024: both
 * bucket the 128-pixel images at 128x128); the SDXL run must encode again
 * (another VAE, another scaling factor) instead of reading the SD 1.x entry,
 * and a second SDXL run reads its own entry back unchanged. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

#define IMAGES "data/wesnoth-portraits/test16-128px"

static void train(const char *model_dir)
{
    char args[2048], *out = NULL;
    snprintf(args, sizeof args,
             "train --model %s/m --images images --max-steps 1 --batch 1 --seed 2 "
             "--cache-latents-to-disk --force --quiet -o out.safetensors",
             model_dir);
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
}

/* All cache entries of the folder, concatenated into the file `name`. */
static void save_entries(const char *name)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd '%s' && ls images/*.vklora-latents.safetensors > /dev/null && "
             "cat images/*.vklora-latents.safetensors > %s", vkl_test_dir, name);
    assert_int_equal(system(cmd), 0);
}

static int same_files(const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "cd '%s' && cmp -s %s %s", vkl_test_dir, a, b);
    return system(cmd) == 0;
}

static void families_never_share_entries(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED("refkit/sdxl/tiny-sdxl");
    vkl_test_copy_images(IMAGES);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cd '%s' && mkdir -p sd xl && ln -sfn '%s' sd/m && ln -sfn '%s' xl/m", vkl_test_dir,
             vkl_test_shared_path("refkit/sd/tiny-sd"), vkl_test_shared_path("refkit/sdxl/tiny-sdxl"));
    assert_int_equal(system(cmd), 0);
    train("sd");
    save_entries("sd.bin");
    train("xl");
    save_entries("xl.bin");
    assert_false(same_files("sd.bin", "xl.bin"));
    /* SDXL's default resolution, recorded as kohya does */
    char path[512];
    snprintf(path, sizeof path, "%s/out.safetensors", vkl_test_dir);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    assert_string_equal(vkl_st_meta_get(f, "ss_resolution"), "(1024, 1024)");
    vkl_st_close(f);
    train("xl");
    save_entries("xl2.bin");
    assert_true(same_files("xl.bin", "xl2.bin"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(families_never_share_entries),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
