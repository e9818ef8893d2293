/* Crash consistency of `vklora lm train`, as tests/apps/test_cmd_train_kill.c
 * for `vklora train`: the tiny LLaMA trains with its state saved every step
 * and is killed with SIGKILL at 10 seeded moments (more while too few land
 * inside a run or none leaves a state) spread over the measured
 * length of a whole run (start-up, steps, state saves, the folder swap, the
 * output's rename). After every kill the state folder, when there is one,
 * must be whole (its tensors open, its JSON parses), and the next run
 * resumes from it (or starts again with --force when none was saved yet).
 * Each run that gets to the end must give the uninterrupted run's losses
 * digit for digit and its adapter bit for bit. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* At least KILLS kill moments are drawn; more (up to MAX_DRAWS) while
 * fewer than half of them have landed inside a run, as on a machine whose
 * speed changed since the whole run was timed. */
#define KILLS 10
#define MAX_DRAWS 24

static char common[2048];

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int run_train(const char *out, const char *extra, double secs, char **log)
{
    char args[4096], env[64] = "";
    snprintf(args, sizeof args, "%s -o %s %s", common, out, extra);
    if (secs > 0) snprintf(env, sizeof env, "timeout -s KILL %.2f", secs);
    char *o = NULL;
    int rc = vkl_test_cli(args, env, &o);
    if (log) *log = o;
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

static int exists(const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", vkl_test_dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

/* a state folder left by a kill is whole: tensors readable, JSON parsed;
 * returns its step (0: no state) */
static int state_whole(void)
{
    if (!exists("k.state")) return 0;
    char p[600];
    snprintf(p, sizeof p, "%s/k.state/state.safetensors", vkl_test_dir);
    vkl_st_file *f = NULL;
    vkl_err e = {0};
    if (vkl_st_open(p, &f, &e)) {
        print_error("a killed run left k.state without whole tensors: %s\n", e.msg);
        fail();
    }
    vkl_st_close(f);
    char *js = vkl_test_slurp(vkl_test_dir, "k.state/state.json");
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    if (!j || !cJSON_IsNumber(cJSON_GetObjectItem(j, "step"))) {
        print_error("a killed run left k.state/state.json unreadable\n");
        fail();
    }
    int step = (int)cJSON_GetObjectItem(j, "step")->valuedouble;
    cJSON_Delete(j);
    free(js);
    return step;
}

static void same_bytes(const char *a, const char *b)
{
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/%s", vkl_test_dir, a);
    snprintf(pb, sizeof pb, "%s/%s", vkl_test_dir, b);
    FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
    assert_non_null(fa);
    assert_non_null(fb);
    int ca, cb;
    long at = 0;
    do {
        ca = fgetc(fa);
        cb = fgetc(fb);
        if (ca != cb) {
            print_error("%s and %s differ at byte %ld\n", a, b, at);
            fail();
        }
        at++;
    } while (ca != EOF);
    fclose(fa);
    fclose(fb);
}

static void killed_ten_times_loses_nothing(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    char p[600];
    snprintf(p, sizeof p, "%s/d.jsonl", vkl_test_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("{\"text\": \"You may convey verbatim copies of the Program.\"}\n"
          "{\"text\": \"You may charge any price or no price for each copy.\"}\n"
          "{\"text\": \"You may offer support or warranty protection for a fee.\"}\n",
          f);
    fclose(f);
    snprintf(common, sizeof common,
             "--quiet lm train --model '%s' --data d.jsonl --seq-len 32 --batch 1 --lr 1e-2 --seed 5 --steps 24 "
             "--save-every 1",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    double t0 = now();
    char *log = NULL;
    int rc = run_train("full", "", 0, &log);
    if (rc) fail_msg("the whole run failed (%d): %s", rc, log);
    free(log);
    double whole = now() - t0;
    char *want = losses("full/train_log.csv");

    unsigned rng = 4242;
    int killed = 0, resumed = 0, finished = 0, fresh = 1, saved = 0; /* saved: the run's last state seen */
    double stretch = 1; /* grows while kills land before the first state (a machine slower than at the whole run) */
    /* after the drawn moments, more are bisected between the latest seen to
     * land before any state (lo) and the earliest seen after the end (hi),
     * until a kill leaves a state to resume: the machine's speed may have
     * changed since the whole run was timed */
    double lo = 0, hi = whole * 4;
    for (int k = 0;; k++) {
        int have = !fresh && state_whole() > 0;
        /* the last run goes to the end */
        int last = (k >= KILLS && killed >= KILLS / 2 && (resumed >= 1 || have)) || k >= MAX_DRAWS;
        double secs = 0;
        if (!last && k < KILLS) {
            rng = rng * 1103515245u + 12345u;
            secs = 0.3 + (whole * stretch - 0.3) * (double)((rng >> 8) % 10000) / 10000.0;
        } else if (!last) {
            secs = (lo + hi) / 2;
        }
        if (fresh) {
            saved = 0;
            char cmd[700];
            snprintf(cmd, sizeof cmd, "rm -rf '%s/k.state'", vkl_test_dir); /* a new run, not the finished one's */
            assert_int_equal(system(cmd), 0);
        }
        resumed += have;
        rc = run_train("k", have ? "--resume" : "--force", secs, &log);
        if (rc == 137) {
            killed++;
            fresh = 0;
            /* a state once saved is never lost or set back by a later kill */
            int step = state_whole();
            if (step < saved) {
                print_error("after kill %d the state is at step %d; step %d had been saved\n", k, step, saved);
                fail();
            }
            saved = step;
            if (step <= 0 && stretch < 4) stretch *= 1.3;
            if (step <= 0 && !have && secs > lo) lo = secs;
        } else if (rc == 0) {
            finished++;
            if (secs > 0 && !have && secs < hi) hi = secs;
            char *got = losses("k/train_log.csv");
            assert_string_equal(want, got);
            free(got);
            same_bytes("full/adapter_model.safetensors", "k/adapter_model.safetensors");
            fresh = 1;
        } else {
            print_error("run %d (%s, killed after %.2f s) failed with status %d:\n%s\n", k,
                        have ? "--resume" : "--force", secs, rc, log ? log : "");
            fail();
        }
        free(log);
        log = NULL;
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
