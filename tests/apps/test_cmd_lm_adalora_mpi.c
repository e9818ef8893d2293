/* `lm train --network adalora` with split steps: the rank allocator reads the
 * gradient summed over micro-batches (and ranks) that the update used.
 *   - one process, --batch 2 --grad-accum 2 against --batch 4: the same
 *     masks (rank_pattern) and losses within 1e-5 (reductions over 4 rows
 *     round differently from two over 2);
 *   - mpirun -np 2 --batch 2 against one process --batch 2 --grad-accum 2:
 *     the same adapter (1e-6 relative; bit for bit on lavapipe) and masks,
 *     every rank masking the same ranks from the same summed gradient. */
#include "test_mpi_support.h"

#include <cjson/cJSON.h>

#define LM_MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "
#define OPTS                                                                                                          \
    "--data story.txt --seq-len 32 --max-steps 8 --lr 3e-2 --seed 7 --quiet --network adalora --init-r 6 "           \
    "--target-r 3 --tinit 2 --tfinal 2 --alpha 32"

static void write_story(void)
{
    char path[512];
    path_of(path, sizeof path, "story.txt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 40; i++) fputs(SENTENCE, f);
    fclose(f);
}

static void train(int ranks, const char *extra, const char *out)
{
    char args[4096];
    snprintf(args, sizeof args, "lm train --model '%s' " OPTS " %s -o %s", vkl_test_shared_path(LM_MODEL), extra, out);
    assert_int_equal(run(ranks, NULL, args, NULL), 0);
}

/* The rank_pattern of out's config as text, and its total of kept ranks. */
static char *pattern(const char *out, int *kept)
{
    char name[256];
    snprintf(name, sizeof name, "%s/adapter_config.json", out);
    char *text = vkl_test_slurp(vkl_test_dir, name);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    const cJSON *rp = cJSON_GetObjectItem(j, "rank_pattern"), *m;
    assert_true(cJSON_IsObject(rp));
    *kept = 0;
    cJSON_ArrayForEach(m, rp)
    {
        const cJSON *x;
        cJSON_ArrayForEach(x, m) *kept += cJSON_IsTrue(x);
    }
    char *s = cJSON_PrintUnformatted(rp);
    cJSON_Delete(j);
    return s;
}

static void compare(const char *a, const char *b, double tol, int steps)
{
    int ka, kb;
    char *pa = pattern(a, &ka), *pb = pattern(b, &kb);
    printf("  %s: %d ranks kept, %s: %d\n", a, ka, b, kb);
    assert_string_equal(pa, pb);
    assert_int_equal(ka, 3 * 6);
    free(pa);
    free(pb);
    char fa[512], fb[512], la[256], lb[256];
    snprintf(la, sizeof la, "%s/adapter_model.safetensors", a);
    snprintf(lb, sizeof lb, "%s/adapter_model.safetensors", b);
    path_of(fa, sizeof fa, la);
    path_of(fb, sizeof fb, lb);
    assert_same_adapter(fa, fb, tol);
    snprintf(la, sizeof la, "%s/train_log.csv", a);
    snprintf(lb, sizeof lb, "%s/train_log.csv", b);
    char *xa = vkl_test_slurp(vkl_test_dir, la), *xb = vkl_test_slurp(vkl_test_dir, lb);
    assert_same_losses(xa, xb, steps, tol);
    free(xa);
    free(xb);
}

static void grad_accum_equals_batch(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_MODEL "/model.safetensors");
    write_story();
    train(1, "--batch 4", "b4");
    train(1, "--batch 2 --grad-accum 2", "acc");
    int ka, kb;
    char *pa = pattern("b4", &ka), *pb = pattern("acc", &kb);
    assert_string_equal(pa, pb);
    assert_int_equal(ka, 18);
    free(pa);
    free(pb);
    char *xa = vkl_test_slurp(vkl_test_dir, "b4/train_log.csv"), *xb = vkl_test_slurp(vkl_test_dir, "acc/train_log.csv");
    assert_same_losses(xa, xb, 8, 1e-5);
    free(xa);
    free(xb);
}

static void two_ranks_equal_one_process(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_MODEL "/model.safetensors");
    mpi_prefix(2);
    write_story();
    train(1, "--batch 2 --grad-accum 2", "one");
    train(2, "--batch 2", "two");
    compare("one", "two", 1e-6, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(grad_accum_equals_batch),
        cmocka_unit_test(two_ranks_equal_one_process),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
