/* Crash consistency of `vklora train`: the tiny model trains with a state and
 * an adapter saved every step and is killed with SIGKILL at 20 moments spread
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
#include "io/safetensors.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define KILLS 20

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

/* every finished-looking .safetensors (no temporary marker) must open */
static int check_files_whole(void)
{
    DIR *d = opendir(vkl_test_dir);
    assert_non_null(d);
    struct dirent *x;
    int n = 0;
    while ((x = readdir(d))) {
        const char *dot = strrchr(x->d_name, '.');
        if (!dot || strcmp(dot, ".safetensors") || strstr(x->d_name, ".tmp")) continue;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", vkl_test_dir, x->d_name);
        vkl_st_file *f = NULL;
        vkl_err e = {0};
        if (vkl_st_open(path, &f, &e)) {
            print_error("a killed run left %s half-written under its final name: %s\n", x->d_name, e.msg);
            fail();
        }
        vkl_st_close(f);
        n++;
    }
    closedir(d);
    return n;
}

/* `latest` names a whole step folder, or there is no state yet */
static int state_saved(void)
{
    char *latest = vkl_test_slurp(vkl_test_dir, "k.state/latest");
    if (!latest) return 0;
    latest[strcspn(latest, "\n")] = 0;
    char path[700];
    snprintf(path, sizeof path, "%s/k.state/%s", vkl_test_dir, latest);
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) {
        print_error("k.state/latest names %s, which is not there\n", latest);
        fail();
    }
    free(latest);
    return 1;
}

static void same_adapter(const char *a, const char *b)
{
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/%s", vkl_test_dir, a);
    snprintf(pb, sizeof pb, "%s/%s", vkl_test_dir, b);
    vkl_st_file *fa = NULL, *fb = NULL;
    vkl_err e = {0};
    assert_int_equal(vkl_st_open(pa, &fa, &e), 0);
    assert_int_equal(vkl_st_open(pb, &fb, &e), 0);
    assert_int_equal(vkl_st_count(fa), vkl_st_count(fb));
    for (int i = 0; i < vkl_st_count(fa); i++) {
        const vkl_st_tensor *ta = vkl_st_at(fa, i), *tb = vkl_st_find(fb, ta->name);
        assert_non_null(tb);
        assert_int_equal(ta->nbytes, tb->nbytes);
        void *da = malloc(ta->nbytes), *db = malloc(tb->nbytes);
        assert_int_equal(vkl_st_read(fa, ta, ta->dtype, da, &e), 0);
        assert_int_equal(vkl_st_read(fb, tb, tb->dtype, db, &e), 0);
        if (memcmp(da, db, ta->nbytes)) {
            print_error("%s differs after the killed and resumed run\n", ta->name);
            fail();
        }
        free(da);
        free(db);
    }
    vkl_st_close(fa);
    vkl_st_close(fb);
}

static void killed_twenty_times_loses_nothing(void **state)
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
    for (int k = 0; k <= KILLS; k++) {
        /* the last run goes to the end */
        double secs = 0;
        if (k < KILLS) {
            rng = rng * 1103515245u + 12345u;
            secs = 0.3 + (whole - 0.3) * (double)((rng >> 8) % 10000) / 10000.0;
        }
        int have_state = !fresh && state_saved();
        const char *how = have_state ? "-o k.safetensors --resume k.state" : "-o k.safetensors --force";
        resumed += have_state;
        char *out = NULL;
        int rc = run_train(how, secs, &out);
        if (rc == 137) {
            killed++;
            fresh = 0;
            check_files_whole();
            state_saved();
        } else if (rc == 0) {
            /* the run got to the end before its moment came: it must be the whole run */
            finished++;
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
        cmocka_unit_test(killed_twenty_times_loses_nothing),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
