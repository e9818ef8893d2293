/* Out of memory, end to end: with the device profile's memory budget
 * (VKLORA_PROFILE=memory=BYTES, a small card on any device) generate,
 * train and lm train stop with a message that says memory ran out and what
 * makes that command fit, exit 1, and leave no output behind; a budget the
 * work fits in changes nothing. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int exists(const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", vkl_test_dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void expect_oom(const char *args, const char *budget, const char *hint, const char *const *outputs)
{
    char env[64], *out = NULL;
    snprintf(env, sizeof env, "VKLORA_PROFILE=memory=%s", budget);
    int rc = vkl_test_cli(args, env, &out);
    if (rc != 1 || !strstr(out, "out of device memory") || !strstr(out, hint)) {
        print_error("%s\nexit %d:\n%s\n", args, rc, out ? out : "");
        fail();
    }
    free(out);
    for (int i = 0; outputs[i]; i++)
        if (exists(outputs[i])) {
            print_error("%s left %s behind\n", args, outputs[i]);
            fail();
        }
}

static void generate_out_of_memory(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char args[1024];
    snprintf(args, sizeof args, "generate --quiet --model '%s' --prompt cat --steps 2 --width 64 --height 64 -o o.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    const char *outs[] = {"o.png", NULL};
    expect_oom(args, "4M", "--lowvram", outs);
    /* the same with room: budgeted blocks are only smaller, nothing else */
    char *out = NULL;
    int rc = vkl_test_cli(args, "VKLORA_PROFILE=memory=256M", &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    assert_true(exists("o.png"));
}

static void train_out_of_memory(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    char args[1024];
    vkl_test_copy_images("data/wesnoth-portraits/test16-128px");
    snprintf(args, sizeof args,
             "train --quiet --model '%s' --images images --resolution 64 --rank 4 --max-steps 2 -o t.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    const char *outs[] = {"t.safetensors", "t.csv", "t.json", "t.state", NULL};
    expect_oom(args, "4M", "--checkpointing", outs);
}

static void lm_train_out_of_memory(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama");
    char cmd[1024], args[1024];
    snprintf(cmd, sizeof cmd, "printf 'one two three four five six seven eight nine ten\\n%%.0s' $(seq 40) > '%s/d.txt'",
             vkl_test_dir);
    assert_int_equal(system(cmd), 0);
    snprintf(args, sizeof args, "lm train --quiet --model '%s' --data d.txt --seq-len 16 --batch 2 --max-steps 2 -o ad",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    const char *outs[] = {"ad", NULL};
    expect_oom(args, "256K", "--seq-len", outs); /* the tiny LLaMA holds about 1 MiB */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_out_of_memory),
        cmocka_unit_test(train_out_of_memory),
        cmocka_unit_test(lm_train_out_of_memory),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
