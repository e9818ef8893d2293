/* Data-parallel training end to end: `mpirun -np 2 vklora train` on the tiny
 * SD model and `mpirun -np 2 vklora lm train` on the tiny LLaMA give the
 * adapter one process gives with the same global batch (one process with
 * --grad-accum 2); rank 0 alone writes; a state moves between 2 ranks and 1
 * and back; a rank that is killed ends the job quickly with a message.
 *
 * The bound is 1e-6 relative, and on lavapipe the files come out identical:
 * one process adds its two micro-batch gradients into a zeroed buffer,
 * (0 + w0 g0) + w1 g1, and two ranks hold w0 g0 and w1 g1 and add them, the
 * same two numbers in one addition (commutative in IEEE arithmetic); each
 * micro-batch's gradient comes from a graph of the same shape either way.
 * (Against one process with --batch 4 instead, the adapter differs by about
 * 1e-5 relative after 3 steps: reductions over 4 rows round differently from
 * two over 2, and AdamW's g / sqrt(v) magnifies the rounding of the tiny
 * gradients that come from cancellation.) */
#include "test_mpi_support.h"

#include <cjson/cJSON.h>
#include <time.h>

static char sd_common[2048];

static void prepare_images(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", vkl_test_dir,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), vkl_test_dir);
    assert_int_equal(system(cmd), 0);
    snprintf(sd_common, sizeof sd_common,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --batch 1 --seed 7 "
             "--quiet",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
}

static int run(int ranks, const char *env, const char *args, char **out)
{
    char pre[2048], full[8192];
    snprintf(pre, sizeof pre, "%s %s", env ? env : "", ranks > 1 ? mpi_prefix(ranks) : "");
    snprintf(full, sizeof full, "%s", args);
    char *o = NULL;
    int rc = vkl_test_cli(full, pre, &o);
    if (rc && rc != 130) print_error("exit %d:\n%s\n", rc, o ? o : "");
    if (out) *out = o;
    else free(o);
    return rc;
}

static void path_of(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", vkl_test_dir, name); }

static void sd_two_ranks_equal_one_process(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    mpi_prefix(2);
    prepare_images();
    char args[4096];
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 2 -o one.safetensors", sd_common);
    assert_int_equal(run(1, NULL, args, NULL), 0);
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 1 -o two.safetensors", sd_common);
    assert_int_equal(run(2, NULL, args, NULL), 0);
    char a[512], b[512];
    path_of(a, sizeof a, "one.safetensors");
    path_of(b, sizeof b, "two.safetensors");
    assert_same_adapter(a, b, 1e-6);
    char *la = vkl_test_slurp(vkl_test_dir, "one.csv"), *lb = vkl_test_slurp(vkl_test_dir, "two.csv");
    assert_non_null(la);
    assert_non_null(lb);
    /* one row per step: rank 1 wrote nothing into rank 0's log */
    assert_same_losses(la, lb, 3, 1e-6);
    free(la);
    free(lb);
    /* the state records the ranks, for a resume elsewhere */
    char *st = vkl_test_slurp(vkl_test_dir, "two.state/step-000003/state.json");
    assert_non_null(st);
    cJSON *j = cJSON_Parse(st);
    assert_int_equal(cJSON_GetObjectItem(j, "ranks")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(j, "grad_accum")->valueint, 1);
    cJSON_Delete(j);
    free(st);
}

/* 2 ranks stop at step 1 (an interrupt on rank 1 only), 1 rank with
 * --grad-accum 2 continues to step 2, 2 ranks finish step 3: the adapter and
 * the loss log are those of the uninterrupted run. */
static void sd_resume_across_rank_counts(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    mpi_prefix(2);
    prepare_images();
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 1 -o r.safetensors", sd_common);
    assert_int_equal(run(2, "VKLORA_TRAIN_INTERRUPT_AT=1 VKLORA_TRAIN_HOOK_RANK=1", args, &out), 130);
    assert_non_null(strstr(out, "interrupted at step 1"));
    free(out);
    /* the same global batch is needed: 1 rank x 1 is refused with the reason */
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 1 -o r.safetensors --resume r.state", sd_common);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "micro-batches per step"));
    free(out);
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 2 -o r.safetensors --resume r.state", sd_common);
    assert_int_equal(run(1, "VKLORA_TRAIN_INTERRUPT_AT=2", args, NULL), 130);
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 1 -o r.safetensors --resume r.state", sd_common);
    assert_int_equal(run(2, NULL, args, NULL), 0);
    char a[512], b[512];
    path_of(a, sizeof a, "one.safetensors");
    path_of(b, sizeof b, "r.safetensors");
    assert_same_adapter(a, b, 1e-6);
    char *la = vkl_test_slurp(vkl_test_dir, "one.csv"), *lb = vkl_test_slurp(vkl_test_dir, "r.csv");
    assert_same_losses(la, lb, 3, 1e-6);
    free(la);
    free(lb);
}

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

#define LM_MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "

/* Rows of different lengths (padding ignored by the loss): each rank's mean
 * counts by its number of tokens in the global mean. */
static void lm_two_ranks_equal_one_process(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_MODEL "/model.safetensors");
    mpi_prefix(2);
    char path[512];
    path_of(path, sizeof path, "lines.jsonl");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 7; i++) {
        fputs("{\"text\": \"", f);
        for (int k = 0; k <= i % 3; k++) fputs(i % 2 ? "You may convey. " : SENTENCE, f);
        fputs("\"}\n", f);
    }
    fclose(f);
    char args[4096];
    const char *opts = "--data lines.jsonl --seq-len 32 --steps 3 --lr 1e-2 --seed 7 --quiet";
    snprintf(args, sizeof args, "lm train --model '%s' %s --batch 2 --grad-accum 2 -o lm1", vkl_test_shared_path(LM_MODEL),
             opts);
    assert_int_equal(run(1, NULL, args, NULL), 0);
    snprintf(args, sizeof args, "lm train --model '%s' %s --batch 2 -o lm2", vkl_test_shared_path(LM_MODEL), opts);
    assert_int_equal(run(2, NULL, args, NULL), 0);
    char a[512], b[512];
    path_of(a, sizeof a, "lm1/adapter_model.safetensors");
    path_of(b, sizeof b, "lm2/adapter_model.safetensors");
    assert_same_adapter(a, b, 1e-6);
    char *la = vkl_test_slurp(vkl_test_dir, "lm1/train_log.csv"), *lb = vkl_test_slurp(vkl_test_dir, "lm2/train_log.csv");
    assert_non_null(la);
    assert_non_null(lb);
    assert_same_losses(la, lb, 3, 1e-6);
    free(la);
    free(lb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lm_two_ranks_equal_one_process),
        cmocka_unit_test(sd_two_ranks_equal_one_process),
        cmocka_unit_test(sd_resume_across_rank_counts),
        cmocka_unit_test(killed_rank_ends_the_job),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
