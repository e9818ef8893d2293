/* A rank of `mpirun -np 2 vklora train` that dies ends the job with a
 * message, well within 30 s, instead of leaving the other rank waiting in
 * the gradient sum. */
#include "test_mpi_support_sd.h"

#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Rank 1 dies (SIGKILL) after step 1 while rank 0 waits for it in the
 * gradient sum of step 2: the job ends, not hangs, with a message. */
static void killed_rank_ends_the_job(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    const char *bin = getenv("VKLORA_BINARY");
    if (!bin) skip();
    const char *pre = mpi_prefix(2);
    prepare_images();
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && VKLORA_TRAIN_KILL_AT=1 VKLORA_TRAIN_HOOK_RANK=1 VKLORA_DIST_TIMEOUT=20 %s '%s' %s "
             "--max-steps 4 -o k.safetensors 2>&1",
             vkl_test_dir, pre, bin, sd_common);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[1024], all[16384] = "";
    double killed = 0;
    while (fgets(line, sizeof line, p)) {
        if (!killed && strstr(line, "killed after step 1")) killed = now_s();
        strncat(all, line, sizeof all - strlen(all) - 1);
    }
    int st = pclose(p);
    double after = now_s() - killed;
    printf("  the job ended %.1f s after rank 1 was killed\n%s", after, all);
    assert_true(killed > 0);
    assert_true(st != 0);
    assert_true(after < 30);
    /* Open MPI's launcher names the rank and the signal */
    assert_non_null(strstr(all, "rank 1"));
    assert_non_null(strstr(all, "signal 9"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_rank_ends_the_job),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
