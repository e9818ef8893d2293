/* Crash consistency of `vklora train`: the tiny model trains with a state and
 * an adapter saved every step and is killed with SIGKILL at 10 moments (more while too few land inside a run
 * or none leaves a state) spread
 * over the run (start-up, steps, state saves, adapter saves, renames: the
 * moments are drawn from a fixed seed over the measured length of a whole
 * run, so they land everywhere without knowing where each phase is). After
 * every kill:
 *   - every .safetensors file in the folder (temporaries aside) is whole,
 *   - `latest` in the state folder names a folder that exists,
 * and the next run resumes from that state (or starts again with --force
 * when none was saved yet). Each run that gets to the end must give the
 * uninterrupted run's losses digit for digit and its adapter bit for bit. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* 10 moments over a 6-step run with a save every step still land before
 * the first state, between saves and during saves and renames */
/* At least KILLS kill moments are drawn; more (up to MAX_DRAWS) while
 * fewer than half of them have landed inside a run, as on a machine whose
 * speed changed since the whole run was timed. */
#define KILLS 10
#define MAX_DRAWS 24

static char common[2048];

static void prepare(void)
{
    vkl_test_copy_images("data/wesnoth-portraits/test16-128px");
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --max-steps 6 "
             "--batch 1 --seed 7 --save-every 1 --keep-last 2 --quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Runs `vklora train` with extra options; killed with SIGKILL after `secs`
 * seconds when secs > 0 (coreutils' timeout, whose status is then 137). */
static int run_train(const char *extra, double secs, char **out)
{
    char args[4096], env[64] = "";
    snprintf(args, sizeof args, "%s %s", common, extra);
    if (secs > 0) snprintf(env, sizeof env, "timeout -s KILL %.2f", secs);
    char *o = NULL;
    int rc = vkl_test_cli(args, env, &o);
    if (out) *out = o;
    else free(o);
    return rc;
}

static char *losses(const char *name)
{
    char *s = vkl_test_slurp(vkl_test_dir, name);
    assert_non_null(s);
    vkl_test_csv_first_columns(s, 3);
    return s;
}

static void check_files_whole(void) { vkl_test_safetensors_whole(vkl_test_dir); }

/* `latest` names a whole step folder, or there is no state yet */
static int state_saved(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/k.state", vkl_test_dir);
    return vkl_test_state_whole(dir, NULL, 0);
}

static void same_adapter(const char *a, const char *b)
{
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/%s", vkl_test_dir, a);
    snprintf(pb, sizeof pb, "%s/%s", vkl_test_dir, b);
    vkl_test_same_safetensors(pa, pb);
}

static void killed_ten_times_loses_nothing(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    prepare();
    double t0 = now();
    assert_int_equal(run_train("-o full.safetensors", 0, NULL), 0);
    double whole = now() - t0;
    char *want = losses("full.csv");

    unsigned rng = 12345;
    int killed = 0, resumed = 0, finished = 0, fresh = 1;
    double stretch = 1; /* grows while kills land before the first state (a machine slower than at the whole run) */
    /* after the drawn moments, more are bisected between the latest seen to
     * land before any state (lo) and the earliest seen after the end (hi),
     * until a kill leaves a state to resume: the machine's speed may have
     * changed since the whole run was timed */
    double lo = 0, hi = whole * 4;
    for (int k = 0;; k++) {
        int have_state = !fresh && state_saved();
        /* the last run goes to the end */
        int last = (k >= KILLS && killed >= KILLS / 2 && (resumed >= 1 || have_state)) || k >= MAX_DRAWS;
        double secs = 0;
        if (!last && k < KILLS) {
            rng = rng * 1103515245u + 12345u;
            secs = 0.3 + (whole * stretch - 0.3) * (double)((rng >> 8) % 10000) / 10000.0;
        } else if (!last) {
            secs = (lo + hi) / 2;
        }
        const char *how = have_state ? "-o k.safetensors --resume k.state" : "-o k.safetensors --force";
        resumed += have_state;
        char *out = NULL;
        int rc = run_train(how, secs, &out);
        if (rc == 137) {
            killed++;
            fresh = 0;
            check_files_whole();
            if (state_saved() <= 0 && stretch < 4) stretch *= 1.3;
            if (state_saved() <= 0 && !have_state && secs > lo) lo = secs;
        } else if (rc == 0) {
            /* the run got to the end before its moment came: it must be the whole run */
            finished++;
            if (secs > 0 && !have_state && secs < hi) hi = secs;
            char *got = losses("k.csv");
            assert_string_equal(want, got);
            free(got);
            same_adapter("full.safetensors", "k.safetensors");
            check_files_whole();
            fresh = 1; /* the next kill interrupts a new run */
        } else {
            print_error("run %d (%s, killed after %.2f s) failed with status %d:\n%s\n", k, how, secs, rc,
                        out ? out : "");
            fail();
        }
        free(out);
        if (last) break;
    }
    print_message("%d kills, %d resumes, %d runs to the end (a whole run takes %.1f s)\n", killed, resumed, finished,
                  whole);
    assert_true(killed >= KILLS / 2);
    assert_true(resumed >= 1 && finished >= 1);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(killed_ten_times_loses_nothing),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
