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
 * rounding of the tiny gradients that come from cancellation. */
#include "test_mpi_support.h"

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
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
