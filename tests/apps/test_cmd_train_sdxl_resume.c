/* vklora train on the tiny SDXL model (refkit/sdxl): the SGM single file
 * (its tokenizer folder given) interrupted after step 1 and resumed trains to
 * the diffusers folder's losses digit for digit. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"
#define IMAGES "data/wesnoth-portraits/test16-128px"

static char common[1024];

static void set_common(void)
{
    snprintf(common, sizeof common,
             "--images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --max-steps 2 --batch 2 --seed 3 --flip "
             "--quiet");
}

static int train(const char *model, const char *extra, const char *env)
{
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "train --model '%s' %s %s", vkl_test_shared_path(model), common, extra);
    int rc = vkl_test_cli(args, env, &out);
    if (rc && rc != 130) print_error("%s\n", out);
    free(out);
    return rc;
}

/* The SGM single file (its own tokenizer folder given) interrupted after
 * step 1 and resumed gives the diffusers folder's losses digit for digit. */
static void single_file_resumes_to_folder_losses(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(KIT "tiny-sdxl-sgm.safetensors");
    set_common();
    vkl_test_copy_images(IMAGES);
    assert_int_equal(train(KIT "tiny-sdxl", "-o a.safetensors", NULL), 0);
    char *a = vkl_test_slurp(vkl_test_dir, "a.csv");
    char extra[1024];
    snprintf(extra, sizeof extra, "--tokenizer '%s' -o b.safetensors", vkl_test_shared_path(KIT "tiny-sdxl/tokenizer"));
    assert_int_equal(train(KIT "tiny-sdxl-sgm.safetensors", extra, "VKLORA_TRAIN_INTERRUPT_AT=1"), 130);
    snprintf(extra, sizeof extra, "--tokenizer '%s' -o b.safetensors --resume b.state",
             vkl_test_shared_path(KIT "tiny-sdxl/tokenizer"));
    assert_int_equal(train(KIT "tiny-sdxl-sgm.safetensors", extra, NULL), 0);
    char *b = vkl_test_slurp(vkl_test_dir, "b.csv");
    assert_non_null(a);
    assert_non_null(b);
    vkl_test_csv_first_columns(a, 3);
    vkl_test_csv_first_columns(b, 3);
    print_message("folder:\n%s\nsingle file, resumed:\n%s\n", a, b);
    assert_string_equal(a, b);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_file_resumes_to_folder_losses),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
