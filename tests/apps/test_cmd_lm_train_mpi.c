/* `mpirun -np 2 vklora lm train` on the tiny LLaMA gives the adapter one
 * process gives with the same global batch (--grad-accum 2), bit for bit on
 * lavapipe: one process adds its two micro-batch gradients into a zeroed
 * buffer, (0 + w0 g0) + w1 g1, and two ranks hold w0 g0 and w1 g1 and add
 * them, the same two numbers in one addition; each micro-batch's gradient
 * comes from a graph of the same shape either way (w: the micro-batch's
 * share of the step's predicted tokens). The bound asserted is 1e-6
 * relative. Against one process with --batch 4 instead, the adapter differs
 * by about 1e-5 relative after 3 steps: reductions over 4 rows round
 * differently from two over 2, and AdamW's g / sqrt(v) magnifies the
 * rounding of the tiny gradients that come from cancellation.
 *
 * Also: a --save-every state moves from 2 ranks to 1 process and back with
 * the same global batch and continues the uninterrupted run's loss curve
 * (the same additions in the same order, so the same 1e-6 bound), another
 * split of the global batch is refused with the numbers to use, and
 * `lm train --device A,B` gives each rank its entry (bad lists refused). */
#include "test_mpi_support.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

#define LM_MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "

/* Rows of different lengths (padding ignored by the loss): each rank's mean
 * counts by its number of tokens in the global mean. */
static void write_lines(void)
{
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
}

static void lm_two_ranks_equal_one_process(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_MODEL "/model.safetensors");
    mpi_prefix(2);
    write_lines();
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

/* The reference: one process, --grad-accum 2, 3 steps. The same run in
 * pieces: 2 ranks save step 1, one process (--grad-accum 2) resumes to step
 * 2, 2 ranks (each on its entry of --device cpu,cpu) finish step 3. */
static void lm_resume_across_rank_counts(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_MODEL "/model.safetensors");
    mpi_prefix(2);
    write_lines();
    char args[4096], opts[1024], *out = NULL;
    snprintf(opts, sizeof opts, "lm train --model '%s' --data lines.jsonl --seq-len 32 --lr 1e-2 --seed 7 --batch 2",
             vkl_test_shared_path(LM_MODEL));
    snprintf(args, sizeof args, "%s --quiet --max-steps 3 --grad-accum 2 -o ref", opts);
    assert_int_equal(run(1, NULL, args, NULL), 0);

    snprintf(args, sizeof args, "%s --quiet --max-steps 1 --save-every 1 -o r", opts);
    assert_int_equal(run(2, NULL, args, NULL), 0);
    /* rank 0 alone wrote the state; it records the split of the global batch */
    char *st = vkl_test_slurp(vkl_test_dir, "r.state/state.json");
    assert_non_null(st);
    cJSON *j = cJSON_Parse(st);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "ranks")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(j, "grad_accum")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(j, "step")->valueint, 1);
    cJSON_Delete(j);
    free(st);

    /* another global batch is another run: 1 process x --grad-accum 1 is refused with the numbers */
    snprintf(args, sizeof args, "%s --quiet --max-steps 2 --save-every 1 --resume -o r", opts);
    assert_int_equal(run(1, NULL, args, &out), 1);
    assert_non_null(strstr(out, "2 rank(s) x --grad-accum 1 = 2 micro-batches per step, this run has 1 x 1 = 1"));
    free(out);

    snprintf(args, sizeof args, "%s --quiet --max-steps 2 --save-every 1 --grad-accum 2 --resume -o r", opts);
    assert_int_equal(run(1, NULL, args, NULL), 0);
    snprintf(args, sizeof args, "%s --max-steps 3 --device cpu,cpu --resume -o r", opts);
    assert_int_equal(run(2, NULL, args, &out), 0);
    printf("%s", out);
    assert_non_null(strstr(out, "resuming from step 2 of 3"));
    assert_non_null(strstr(out, "rank 0 of 2 (local 0): "));
    assert_non_null(strstr(out, "rank 1 of 2 (local 1): "));
    assert_non_null(strstr(out, "(--device entry 2 (cpu))"));
    free(out);

    char a[512], b[512];
    path_of(a, sizeof a, "ref/adapter_model.safetensors");
    path_of(b, sizeof b, "r/adapter_model.safetensors");
    assert_same_adapter(a, b, 1e-6);
    char *la = vkl_test_slurp(vkl_test_dir, "ref/train_log.csv"), *lb = vkl_test_slurp(vkl_test_dir, "r/train_log.csv");
    assert_non_null(la);
    assert_non_null(lb);
    /* one row per step, each written once, the resumed rows the reference's */
    assert_same_losses(la, lb, 3, 1e-6);
    free(la);
    free(lb);
}

/* Device lists that name no device, or hold an empty entry, are refused
 * before anything runs (as lm train's option and as the global one), with
 * the entry named. */
static void lm_bad_device_lists_refused(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_MODEL "/model.safetensors");
    static const struct {
        int global;
        const char *list, *says;
    } cases[] = {
        {0, "cpu,nosuch", "--device cpu,nosuch: entry 2, nosuch matches none of the"},
        {0, "cpu,,cpu", "--device cpu,,cpu: entry 2 is empty"},
        {0, ",cpu", "--device ,cpu: entry 1 is empty"},
        {0, "cpu,", "--device cpu,: entry 2 is empty"},
        {0, "cpu,99", "--device cpu,99: entry 2, 99: only"},
        {1, "cpu,nosuch", "--device cpu,nosuch: entry 2, nosuch matches none of the"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[4096], *out = NULL, dir[64], p[512];
        snprintf(dir, sizeof dir, "bad%zu", i);
        snprintf(args, sizeof args, "%s%s lm train --model '%s' --data lines.jsonl --max-steps 1 -o %s %s%s",
                 cases[i].global ? "--device " : "", cases[i].global ? cases[i].list : "",
                 vkl_test_shared_path(LM_MODEL), dir, cases[i].global ? "" : "--device ",
                 cases[i].global ? "" : cases[i].list);
        assert_int_equal(vkl_test_cli(args, NULL, &out), 2);
        if (!strstr(out, cases[i].says)) print_error("%s: expected '%s' in:\n%s\n", cases[i].list, cases[i].says, out);
        assert_non_null(strstr(out, cases[i].says));
        free(out);
        struct stat sb;
        path_of(p, sizeof p, dir);
        assert_int_not_equal(stat(p, &sb), 0); /* nothing written */
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lm_two_ranks_equal_one_process),
        cmocka_unit_test(lm_resume_across_rank_counts),
        cmocka_unit_test(lm_bad_device_lists_refused),
    };

    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
