/* AdaLoRA's host side against values computed here from PEFT's definitions:
 *   - PEFT's budget schedule at hand-computed steps (cubic decrease, masking
 *     every deltaT steps, warm-up and final phases) and the config checks;
 *   - the rank allocator: triplet scores from E's elements, A's row means and
 *     B's column means; the smoothing with its uncertainty term (an order
 *     that importance alone would reverse); masking to the budget; the final
 *     pattern re-applied after total_step - tfinal. */
#include "vkl_test.h"
#include "lora/lora_adalora.h"

#include <string.h>

static void test_schedule(void **state)
{
    (void)state;
    vkl_adalora_config c;
    vkl_adalora_config_default(&c);
    c.tinit = 10;
    c.tfinal = 20;
    c.total_step = 100;
    c.delta_t = 3;
    /* 6 modules: init budget 72, target 48; by hand from PEFT's budget_schedule:
     * int((72 - 48) * (1 - (step - 10) / 70)^3 + 48), masking when step % 3 == 0 */
    static const struct {
        int step, budget, mask;
    } want[] = {{1, 72, 0},  {10, 72, 0}, {11, 70, 0}, {12, 70, 1}, {30, 56, 1}, {50, 49, 0},
                {79, 48, 0}, {80, 48, 0}, {81, 48, 1}, {100, 48, 1}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        int mask = -1, b = vkl_adalora_budget(&c, 72, 48, want[i].step, &mask);
        printf("  step %3d: budget %d mask %d (want %d %d)\n", want[i].step, b, mask, want[i].budget, want[i].mask);
        assert_int_equal(b, want[i].budget);
        assert_int_equal(mask, want[i].mask);
    }
    vkl_err e = {{0}};
    vkl_adalora_config bad = c;
    bad.tinit = 80;
    assert_int_not_equal(vkl_adalora_config_check(&bad, &e), 0);
    printf("  refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "tinit"));
    bad = c;
    bad.target_r = 13;
    assert_int_not_equal(vkl_adalora_config_check(&bad, &e), 0);
    assert_non_null(strstr(e.msg, "target_r"));
    bad = c;
    bad.orth_reg_weight = 0;
    assert_int_not_equal(vkl_adalora_config_check(&bad, &e), 0);
    assert_int_equal(vkl_adalora_config_check(&c, &e), 0);
}

/* Two modules of 4 ranks (in 3, out 2), every value 1, gradients chosen so
 * that rank q's triplet score is proportional to E's |g|^2 + mean of A's row
 * |g|^2 + mean of B's column |g|^2 (one step: avg = 0.15 |g|, unc = 0.15 *
 * 0.85 |g|). */
static void test_allocator_scores(void **state)
{
    (void)state;
    enum { N = 2, R = 4, IN = 3, OUT = 2 };
    vkl_adalora_config c;
    vkl_adalora_config_default(&c);
    c.init_r = R;
    c.target_r = 1;
    c.tinit = 0;
    c.tfinal = 1;
    c.total_step = 5;
    int in[N] = {IN, IN}, out[N] = {OUT, OUT};
    vkl_adalora_alloc *al = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_adalora_alloc_new(&c, N, in, out, &al, &e), 0);
    float a[N][R * IN], ev[N][R], b[N][OUT * R], ga[N][R * IN] = {{0}}, ge[N][R], gb[N][OUT * R] = {{0}};
    const float es[N][R] = {{4, 1, 7, 2}, {3, 8, 5, 6}};
    vkl_adalora_view v[N];
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < R * IN; k++) a[i][k] = 1;
        for (int k = 0; k < OUT * R; k++) b[i][k] = 1;
        for (int k = 0; k < R; k++) ev[i][k] = 1, ge[i][k] = es[i][k];
        v[i] = (vkl_adalora_view){.a = a[i], .b = b[i], .ga = ga[i], .gb = gb[i], .ge = ge[i], .e = ev[i]};
    }
    /* module 0 rank 0: A's row 0 scores 100 per element (mean 100); module 1 rank 0:
     * B's column 0 scores 400 (a B row would mix ranks and fail this) */
    for (int j = 0; j < IN; j++) ga[0][0 * IN + j] = 10;
    for (int o = 0; o < OUT; o++) gb[1][o * R + 0] = 20;
    /* scores x const: m0 {116, 1, 49, 4}, m1 {409, 64, 25, 36}; the budget of 8 ranks falls to
     * target 2: step 1 int(6 x (3/4)^3 + 2) = 4, step 2 int(6 x (1/2)^3 + 2) = 2 */
    int budget = 0, changed = 0;
    assert_int_equal(vkl_adalora_alloc_step(al, 1, v, &budget, &changed, &e), 0);
    assert_int_equal(budget, 4);
    assert_true(changed);
    const unsigned char want0[R] = {1, 0, 1, 0}, want1[R] = {1, 1, 0, 0};
    const unsigned char *p0 = vkl_adalora_alloc_pattern(al, 0), *p1 = vkl_adalora_alloc_pattern(al, 1);
    assert_non_null(p0);
    assert_memory_equal(p0, want0, R);
    assert_memory_equal(p1, want1, R);
    for (int k = 0; k < R; k++) {
        assert_true(ev[0][k] == (want0[k] ? 1.0f : 0.0f));
        assert_true(ev[1][k] == (want1[k] ? 1.0f : 0.0f));
    }
    assert_int_equal(vkl_adalora_alloc_total_rank(al), 4);
    /* steps 2 to 4 (4 = total - tfinal, the final mask): the two best, 409 and 116 */
    const unsigned char f0[R] = {1, 0, 0, 0}, f1[R] = {1, 0, 0, 0};
    for (int t = 2; t <= 4; t++) {
        assert_int_equal(vkl_adalora_alloc_step(al, t, v, &budget, &changed, &e), 0);
        assert_int_equal(budget, 2);
        assert_memory_equal(vkl_adalora_alloc_pattern(al, 0), f0, R);
        assert_memory_equal(vkl_adalora_alloc_pattern(al, 1), f1, R);
    }
    assert_int_equal(vkl_adalora_alloc_total_rank(al), 2);
    /* step 5: the pattern is re-applied to values the optimiser moved */
    for (int k = 0; k < R; k++) ev[0][k] = ev[1][k] = 0.5f;
    assert_int_equal(vkl_adalora_alloc_step(al, 5, v, &budget, &changed, &e), 0);
    assert_true(changed);
    for (int k = 0; k < R; k++) {
        assert_true(ev[0][k] == (f0[k] ? 0.5f : 0.0f));
        assert_true(ev[1][k] == (f1[k] ? 0.5f : 0.0f));
    }
    vkl_adalora_alloc_free(al);
}

/* One module, 2 ranks, one kept. Rank 0's importance is 1 at steps 1 and 2;
 * rank 1's is 0 then d. With beta 0.85: rank 0 scores 0.2775 x 0.21675 =
 * 0.060148, rank 1 0.15 d x 0.1275 d = 0.019125 d^2: rank 1 wins for d =
 * 1.8 (0.061965) and loses for d = 1.7 (0.055271), while the smoothed
 * importance alone (0.2775 against 0.15 d = 0.27) would keep rank 0 both times. */
static void uncertainty_case(float d, int want_kept)
{
    vkl_adalora_config c;
    vkl_adalora_config_default(&c);
    c.init_r = 2;
    c.target_r = 1;
    c.tinit = 2;
    c.tfinal = 1;
    c.total_step = 4;
    int in = 1, out = 1;
    vkl_adalora_alloc *al = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_adalora_alloc_new(&c, 1, &in, &out, &al, &e), 0);
    float a[2] = {1, 1}, b[2] = {1, 1}, z[2] = {0, 0}, ev[2] = {1, 1}, ge[2] = {1, 0};
    vkl_adalora_view v = {.a = a, .b = b, .ga = z, .gb = z, .ge = ge, .e = ev};
    int budget, changed;
    assert_int_equal(vkl_adalora_alloc_step(al, 1, &v, &budget, &changed, &e), 0);
    assert_false(changed); /* warm-up: no masking */
    assert_null(vkl_adalora_alloc_pattern(al, 0));
    ge[1] = d;
    assert_int_equal(vkl_adalora_alloc_step(al, 2, &v, &budget, &changed, &e), 0);
    assert_int_equal(vkl_adalora_alloc_step(al, 3, &v, &budget, &changed, &e), 0); /* the final mask */
    assert_int_equal(budget, 1);
    const unsigned char *p = vkl_adalora_alloc_pattern(al, 0);
    printf("  d = %.2f: kept rank %d\n", d, p[1] ? 1 : 0);
    assert_int_equal(p[want_kept], 1);
    assert_int_equal(p[1 - want_kept], 0);
    vkl_adalora_alloc_free(al);
}

static void test_allocator_uncertainty(void **state)
{
    (void)state;
    uncertainty_case(1.8f, 1);
    uncertainty_case(1.7f, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_allocator_scores),
        cmocka_unit_test(test_allocator_uncertainty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
