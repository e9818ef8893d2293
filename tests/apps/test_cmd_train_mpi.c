/* Data-parallel training end to end: `mpirun -np 2 vklora train` on the tiny
 * SD model gives the adapter one process gives with the same global batch
 * (one process with --grad-accum 2); rank 0 alone writes; a state moves from
 * 2 ranks to 1 and back. (test_cmd_lm_train_mpi: the language model;
 * test_cmd_train_mpi_kill: a rank that dies.)
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
#include "test_mpi_support_sd.h"

#include <cjson/cJSON.h>
/* The reference: one process, --grad-accum 2, 3 steps. Then the same run in
 * pieces: 2 ranks (--grad-accum 1) stop at step 1 (an interrupt on rank 1
 * only stops both), 1 rank with --grad-accum 2 continues to step 2, 2 ranks
 * finish step 3: the adapter and the loss log are the reference's. */
static void sd_ranks_and_resumes_equal_one_process(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    mpi_prefix(2);
    prepare_images();
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 2 -o one.safetensors", sd_common);
    assert_int_equal(run(1, NULL, args, NULL), 0);

    snprintf(args, sizeof args, "%s --max-steps 3 --grad-accum 1 -o r.safetensors", sd_common);
    assert_int_equal(run(2, "VKLORA_TRAIN_INTERRUPT_AT=1 VKLORA_TRAIN_HOOK_RANK=1", args, &out), 130);
    assert_non_null(strstr(out, "interrupted at step 1"));
    free(out);
    /* rank 0 alone wrote the state; it records the split of the global batch */
    char *st = vkl_test_slurp(vkl_test_dir, "r.state/step-000001/state.json");
    assert_non_null(st);
    cJSON *j = cJSON_Parse(st);
    assert_int_equal(cJSON_GetObjectItem(j, "ranks")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(j, "grad_accum")->valueint, 1);
    cJSON_Delete(j);
    free(st);

    /* another global batch is another run: 1 rank x --grad-accum 1 is refused with the reason */
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
    assert_non_null(la);
    assert_non_null(lb);
    /* one row per step, none twice: rank 1 never wrote into rank 0's log */
    assert_same_losses(la, lb, 3, 1e-6);
    free(la);
    free(lb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sd_ranks_and_resumes_equal_one_process),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
