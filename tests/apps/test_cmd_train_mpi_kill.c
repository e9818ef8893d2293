/* A rank of `mpirun -np 2 vklora train` that dies, or hangs, ends the job
 * with a message, well within 30 s (the hang: past the collectives' deadline
 * $VKLORA_DIST_TIMEOUT), instead of leaving the other rank waiting in the
 * gradient sum; a real SIGTERM sent to one rank (as a job scheduler does)
 * stops every rank at the end of the step with the state saved, and the run
 * resumes from it. */
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

/* One rank stopped (SIGSTOP) after step 1: the other waits in the gradient
 * sum of step 2 until the 10 s deadline (long enough for the ranks' start-up
 * to differ on a busy machine), then ends the job with a message. */
static void hung_rank_ends_the_job_at_the_deadline(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    const char *bin = getenv("VKLORA_BINARY");
    if (!bin) skip();
    const char *pre = mpi_prefix(2);
    prepare_images();
    char cmd[8192];
    /* the ranks are the two processes writing hang-mpi.safetensors (which
     * one stops does not matter); the script prints the seconds from the
     * stop to the end of the job */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && (VKLORA_DIST_TIMEOUT=10 %s '%s' %s --max-steps 50 -o hang-mpi.safetensors > hang.out 2>&1; "
             "echo \"exit $?\" >> hang.out) & "
             "cd '%s' && for i in $(seq 1 600); do sleep 0.5; [ -f hang-mpi.csv ] && [ $(wc -l < hang-mpi.csv) -ge 2 ] "
             "&& break; done; t1=$(date +%%s.%%N); kill -STOP $(pgrep -f '^[^ ]*vklora train .*hang-mpi[.]safetensors' | tail -1); wait; "
             "t2=$(date +%%s.%%N); awk \"BEGIN { print $t2 - $t1 }\"",
             vkl_test_dir, pre, bin, sd_common, vkl_test_dir);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    double after = -1;
    char line[256];
    while (fgets(line, sizeof line, p)) after = atof(line);
    pclose(p);
    char *out = vkl_test_slurp(vkl_test_dir, "hang.out");
    assert_non_null(out);
    printf("  the job ended %.1f s after a rank stopped\n%s", after, out);
    assert_non_null(strstr(out, "no answer from the other ranks"));
    assert_null(strstr(out, "exit 0"));
    assert_true(after >= 10 && after < 10 + 30);
    free(out);
}

/* SIGTERM to one rank's process (not the launcher): the ranks agree to stop
 * after the step in flight, rank 0 saves the state, every rank exits 130;
 * the job then resumes from that state to the end. */
static void sigterm_to_one_rank_stops_all_with_the_state(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    const char *bin = getenv("VKLORA_BINARY");
    if (!bin) skip();
    const char *pre = mpi_prefix(2);
    prepare_images();
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && (%s '%s' %s --max-steps 50 -o term-mpi.safetensors > term.out 2>&1; "
             "echo \"exit $?\" >> term.out) & "
             "cd '%s' && for i in $(seq 1 600); do sleep 0.5; [ -f term-mpi.csv ] && [ $(wc -l < term-mpi.csv) -ge 2 ] "
             "&& break; done; kill -TERM $(pgrep -f '^[^ ]*vklora train .*term-mpi[.]safetensors' | tail -1); wait",
             vkl_test_dir, pre, bin, sd_common, vkl_test_dir);
    assert_int_equal(system(cmd), 0);
    char *out = vkl_test_slurp(vkl_test_dir, "term.out");
    assert_non_null(out);
    printf("%s", out);
    assert_non_null(strstr(out, "exit 130"));
    free(out);
    char sdir[1200], latest[64];
    snprintf(sdir, sizeof sdir, "%s/term-mpi.state", vkl_test_dir);
    assert_int_equal(vkl_test_state_whole(sdir, latest, sizeof latest), 1);
    int step = atoi(latest + strlen("step-"));
    assert_true(step >= 1 && step < 50);
    /* resumed, two ranks again, to a few steps past the stop */
    snprintf(cmd, sizeof cmd, "cd '%s' && %s '%s' %s --max-steps %d -o term-mpi.safetensors --resume term-mpi.state 2>&1",
             vkl_test_dir, pre, bin, sd_common, step + 2);
    assert_int_equal(system(cmd), 0);
    char *csv = vkl_test_slurp(vkl_test_dir, "term-mpi.csv");
    int rows = 0;
    for (char *c = csv; (c = strchr(c, '\n')); c++) rows++;
    assert_int_equal(rows, 1 + step + 2);
    free(csv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_rank_ends_the_job),
        cmocka_unit_test(hung_rank_ends_the_job_at_the_deadline),
        cmocka_unit_test(sigterm_to_one_rank_stops_all_with_the_state),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
