/* The context's tuning: the device decides the defaults, the environment
 * overrides are read once when the context is made (changing them later
 * does not change a live context), and a test may edit its context's
 * choices directly. */
#include "vkl_test.h"
#include "ops.h"
#include "tuning.h"

#include <stdlib.h>

static void read_once_at_creation(void **state)
{
    (void)state;
    setenv("VKLORA_MATMUL_VARIANT", "scalar", 1);
    setenv("VKLORA_MATMUL_TILE", "16,4,8", 1);
    setenv("VKLORA_ATTN_GRAD", "unfused", 1);
    vkl_ctx *c = vkl_test_ctx(NULL);
    const vkl_tuning *t = vkl_ctx_tuning(c);
    assert_int_equal(t->matmul, VKL_MM_SCALAR);
    assert_int_equal(t->mm_wg, 16);
    assert_int_equal(t->mm_tm, 4);
    assert_int_equal(t->mm_tn, 8);
    assert_int_equal(t->attn_grad, VKL_ATTN_GRAD_UNFUSED);
    unsetenv("VKLORA_MATMUL_VARIANT");
    unsetenv("VKLORA_MATMUL_TILE");
    unsetenv("VKLORA_ATTN_GRAD");
    assert_int_equal(t->matmul, VKL_MM_SCALAR); /* the live context keeps its choice */
    vkl_ctx_tuning_edit(c)->matmul = VKL_MM_TILED;
    uint32_t wg, tm, tn;
    vkl_matmul_tile(c, &wg, &tm, &tn);
    assert_int_equal(wg, 256);
    vkl_test_ctx_done(c);
    c = vkl_test_ctx(NULL);
    t = vkl_ctx_tuning(c);
    int cpu = vkl_ctx_caps(c)->type == VKL_DEV_CPU;
    assert_int_equal(t->cpu, cpu);
    assert_int_equal(t->matmul, cpu ? VKL_MM_REG : VKL_MM_TILED);
    assert_int_equal(t->attn_grad, VKL_ATTN_GRAD_AUTO);
    assert_true(cpu ? t->loop_budget > 0 && t->loop_budget < 65535 : t->loop_budget == 0);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(read_once_at_creation)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
