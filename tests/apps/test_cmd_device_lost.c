/* A lost device (VK_ERROR_DEVICE_LOST: a driver reset, a GPU hang, an
 * unplugged eGPU), injected at the Nth submission with
 * VKLORA_FAULT_DEVICE_LOST_AT: `vklora generate` fails naming it and writes
 * no image; `vklora train` fails naming it and the state to resume from,
 * every file it left is whole, and the resumed run ends as the run that
 * never failed (same losses, same adapter bit for bit). */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void generate_fails_cleanly(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --steps 2 --width 32 --height 32 -o lost.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    for (int n = 1; n <= 3; n++) {
        char env[64];
        snprintf(env, sizeof env, "VKLORA_FAULT_DEVICE_LOST_AT=%d", n);
        int rc = vkl_test_cli(args, env, &out);
        if (rc != 1 || !strstr(out, "the device was lost")) print_error("submission %d: status %d\n%s\n", n, rc, out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "the device was lost"));
        free(out);
        char path[1200];
        snprintf(path, sizeof path, "%s/lost.png", vkl_test_dir);
        struct stat st;
        assert_int_not_equal(stat(path, &st), 0);
    }
}

static void train_resumes_after_a_lost_device(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    vkl_test_copy_images("data/wesnoth-portraits/test16-128px");
    char common[2048], args[4096], *out = NULL;
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --batch 1 --seed 7 "
             "--save-every 1 --max-steps 5 --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    snprintf(args, sizeof args, "%s -o ref.safetensors", common);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    /* the device goes at a later and later submission until one loss lands
     * after a state was saved (how many submissions a step makes is the
     * runtime's business) */
    char sdir[1200], latest[64];
    snprintf(sdir, sizeof sdir, "%s/k.state", vkl_test_dir);
    int resumed = 0;
    for (int n = 4; n <= 64 && !resumed; n += 4) {
        char env[64];
        snprintf(env, sizeof env, "VKLORA_FAULT_DEVICE_LOST_AT=%d", n);
        snprintf(args, sizeof args, "%s -o k.safetensors --force", common);
        int rc = vkl_test_cli(args, env, &out);
        if (rc == 0) { /* the whole run takes fewer submissions */
            free(out);
            break;
        }
        if (rc != 1 || !strstr(out, "the device was lost")) print_error("submission %d: status %d\n%s\n", n, rc, out);
        assert_int_equal(rc, 1);
        assert_non_null(strstr(out, "the device was lost"));
        vkl_test_safetensors_whole(vkl_test_dir);
        if (vkl_test_state_whole(sdir, latest, sizeof latest)) {
            /* the message says where to go on from */
            assert_non_null(strstr(out, "--resume"));
            assert_non_null(strstr(out, latest));
            free(out);
            snprintf(args, sizeof args, "%s -o k.safetensors --resume k.state", common);
            assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
            vkl_test_same_run("ref", "k");
            print_message("the device was lost at submission %d, after %s; resumed to the end\n", n, latest);
            resumed = 1;
        } else {
            free(out);
        }
    }
    assert_true(resumed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_fails_cleanly),
        cmocka_unit_test(train_resumes_after_a_lost_device),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
