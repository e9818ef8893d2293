/* A full disk while writing: the commands run under a file-size limit
 * (prlimit --fsize, with SIGXFSZ ignored, so a write past the limit fails
 * with EFBIG exactly where a full disk fails with ENOSPC). Each must fail
 * with a message naming the file and the reason, leave no half-written file
 * under a final name and no temporary behind, and keep what was saved
 * before: `vklora generate` writes no PNG at all; `vklora train` whose state
 * save fails keeps `latest` on the earlier whole state, from which the run
 * resumes (once there is room) to the same losses and adapter as a run that
 * never failed. */
#include "vkl_test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

/* Runs vklora with writes limited to files of at most bytes. */
static int run_limited(long bytes, const char *args, char **out)
{
    char env[256];
    snprintf(env, sizeof env, "sh -c 'trap \"\" XFSZ; exec prlimit --fsize=%ld \"$0\" \"$@\"'", bytes);
    return vkl_test_cli(args, env, out);
}

static void need_prlimit(void)
{
    if (system("prlimit --fsize=1000 true >/dev/null 2>&1")) {
        fprintf(stderr, "SKIPPED: prlimit (util-linux) cannot limit file sizes here\n");
        skip();
    }
}

/* Names in dir (hidden ones too) that contain part, joined by spaces. */
static void names_with(const char *dir, const char *part, char *buf, size_t cap)
{
    buf[0] = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *x;
    while ((x = readdir(d)))
        if (strstr(x->d_name, part)) {
            strncat(buf, x->d_name, cap - strlen(buf) - 2);
            strcat(buf, " ");
        }
    closedir(d);
}

static void generate_writes_nothing(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    need_prlimit();
    char args[2048], *out = NULL, left[1024];
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --steps 1 --width 32 --height 32 -o full.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    int rc = run_limited(300, args, &out);
    if (rc != 1 || !strstr(out, "full.png") || !strstr(out, "File too large")) print_error("status %d:\n%s\n", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "full.png"));
    assert_non_null(strstr(out, "File too large"));
    free(out);
    names_with(vkl_test_dir, "full", left, sizeof left);
    assert_string_equal(left, "");
}

static void train_keeps_the_last_whole_state(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    need_prlimit();
    vkl_test_copy_images("data/wesnoth-portraits/test16-128px");
    char common[2048], args[4096], *out = NULL;
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --batch 1 --seed 7 "
             "--save-every 1 --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    snprintf(args, sizeof args, "%s --max-steps 4 -o ref.safetensors", common);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    /* two steps with room, then the disk fills: an adapter (about 170 kB
     * here) still fits, the optimizer state (about 290 kB) does not */
    snprintf(args, sizeof args, "%s --max-steps 2 -o k.safetensors", common);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    snprintf(args, sizeof args, "%s --max-steps 4 -o k.safetensors --resume k.state", common);
    int rc = run_limited(200000, args, &out);
    if (rc != 1 || !strstr(out, "optimizer.safetensors") || !strstr(out, "File too large"))
        print_error("status %d:\n%s\n", rc, out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "optimizer.safetensors"));
    assert_non_null(strstr(out, "File too large"));
    free(out);
    vkl_test_safetensors_whole(vkl_test_dir);
    char sdir[1200], latest[64], left[1024];
    snprintf(sdir, sizeof sdir, "%s/k.state", vkl_test_dir);
    assert_int_equal(vkl_test_state_whole(sdir, latest, sizeof latest), 1);
    assert_string_equal(latest, "step-000002");
    /* no half state under a step name, no temporary folder left */
    names_with(sdir, "step-", left, sizeof left);
    assert_string_equal(left, "step-000002 ");
    /* room again: the run resumes from step 2 and ends as the run that never failed */
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    vkl_test_same_run("ref", "k");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_writes_nothing),
        cmocka_unit_test(train_keeps_the_last_whole_state),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
