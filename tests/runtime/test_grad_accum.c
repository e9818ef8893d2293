/* Gradient accumulation on the device (runtime/grad_accum.h and
 * vkl_accumulate_into): sums over replays, strided and f16 sources, windows
 * past a 64 KiB binding, clearing buffers that hold NaN, the optimiser step
 * on the sums against AdamW's first-step formula, and refused destinations. */
#include "vkl_test.h"
#include "grad_accum.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void sums_clear_and_update(const char *profile)
{
    vkl_ctx *c = vkl_test_ctx(profile);
    vkl_err e = {{0}};
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 17);
    /* [129, 257] f32 spans three 64 KiB windows; the second parameter's
     * gradient arrives transposed (a strided view) and the third as f16 */
    int64_t s0[2] = {129, 257}, s1[2] = {5, 13}, s1t[2] = {13, 5}, s2[1] = {37};
    int64_t n0 = s0[0] * s0[1], n1 = 65, n2 = 37;
    vkl_tensor *p[3] = {vkl_tensor_new(c, VKL_F32, 2, s0, &e), vkl_tensor_new(c, VKL_F32, 2, s1, &e),
                        vkl_tensor_new(c, VKL_F32, 1, s2, &e)};
    vkl_tensor *g0 = vkl_tensor_new(c, VKL_F32, 2, s0, &e), *g1 = vkl_tensor_new(c, VKL_F32, 2, s1t, &e),
               *g2 = vkl_tensor_new(c, VKL_F16, 1, s2, &e);
    float *h0 = malloc(sizeof(float) * n0), *p0 = malloc(sizeof(float) * n0), *got = malloc(sizeof(float) * n0);
    float h1[65], h2[37], p1[65], p2[37];
    vkl_test_fill(&r, h0, n0, -1, 1);
    vkl_test_fill(&r, p0, n0, -1, 1);
    vkl_test_fill(&r, h1, 65, -1, 1);
    vkl_test_fill(&r, p1, 65, -1, 1);
    vkl_test_fill(&r, p2, 37, -1, 1);
    for (int i = 0; i < 37; i++) h2[i] = (float)(i - 18) / 8.0f; /* exact in f16 */
    assert_int_equal(vkl_tensor_upload(c, g0, h0, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, g1, h1, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, g2, h2, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, p[0], p0, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, p[1], p1, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_upload(c, p[2], p2, VKL_F32, &e), 0);
    vkl_grad_accum *a = vkl_grad_accum_new(c, p, 3, &e);
    assert_non_null(a);

    vkl_graph *micro = vkl_graph_new(c);
    vkl_tensor *grads[3] = {g0, vkl_permute(micro, g1, (int[]){1, 0}), g2};
    assert_int_equal(vkl_grad_accum_append_add(a, micro, grads, 0.25f, &e), 0);
    assert_int_equal(vkl_graph_plan(micro, &e), 0);
    for (int k = 0; k < 4; k++) assert_int_equal(vkl_graph_run(micro, &e), 0);
    /* four replays of 0.25 * g: exactly g (each partial sum is exact) */
    float w1[65];
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 13; j++) w1[i * 13 + j] = h1[j * 5 + i];
    assert_int_equal(vkl_tensor_download(c, vkl_grad_accum_buffer(a, 0), got, VKL_F32, &e), 0);
    assert_memory_equal(got, h0, sizeof(float) * n0);
    assert_int_equal(vkl_tensor_download(c, vkl_grad_accum_buffer(a, 1), got, VKL_F32, &e), 0);
    assert_memory_equal(got, w1, sizeof w1);
    assert_int_equal(vkl_tensor_download(c, vkl_grad_accum_buffer(a, 2), got, VKL_F32, &e), 0);
    assert_memory_equal(got, h2, sizeof h2);

    /* the optimiser steps on the sums; AdamW's first step is
     * p (1 - lr wd) - lr g / (|g| + eps) */
    vkl_adamw_opts o = {0.01f, 0.9f, 0.999f, 1e-8f, 0.1f, 0, 32};
    vkl_adamw *opt = vkl_adamw_new(c, p, 3, NULL, &o, &e);
    assert_non_null(opt);
    vkl_graph *update = vkl_grad_accum_update_graph(a, opt, &e);
    if (!update) print_error("%s\n", e.msg);
    assert_non_null(update);
    assert_int_equal(vkl_adamw_prepare(opt, 1, 0.01f, &e), 0);
    assert_int_equal(vkl_graph_run(update, &e), 0);
    const float *pin[3] = {p0, p1, p2}, *gin[3] = {h0, w1, h2};
    int64_t cnt[3] = {n0, n1, n2};
    for (int t = 0; t < 3; t++) {
        float *want = malloc(sizeof(float) * cnt[t]);
        for (int64_t i = 0; i < cnt[t]; i++) {
            double g = gin[t][i];
            want[i] = (float)(pin[t][i] * (1 - 0.01 * 0.1) - 0.01 * g / (fabs(g) + 1e-8));
        }
        assert_int_equal(vkl_tensor_download(c, p[t], got, VKL_F32, &e), 0);
        vkl_test_assert_close("AdamW on the accumulated gradient", got, want, (size_t)cnt[t], 1e-6f, 1e-6f);
        /* and the buffers are clear for the next cycle */
        assert_int_equal(vkl_tensor_download(c, vkl_grad_accum_buffer(a, t), got, VKL_F32, &e), 0);
        for (int64_t i = 0; i < cnt[t]; i++) assert_true(got[i] == 0.0f);
        free(want);
    }

    /* a cycle whose gradient went NaN still leaves clean zeros behind */
    for (int64_t i = 0; i < n0; i++) got[i] = i % 3 ? NAN : INFINITY;
    assert_int_equal(vkl_tensor_upload(c, vkl_grad_accum_buffer(a, 0), got, VKL_F32, &e), 0);
    vkl_graph *clear = vkl_graph_new(c);
    assert_int_equal(vkl_grad_accum_append_clear(a, clear, &e), 0);
    assert_int_equal(vkl_graph_plan(clear, &e), 0);
    assert_int_equal(vkl_graph_run(clear, &e), 0);
    assert_int_equal(vkl_tensor_download(c, vkl_grad_accum_buffer(a, 0), got, VKL_F32, &e), 0);
    for (int64_t i = 0; i < n0; i++) assert_true(got[i] == 0.0f);

    vkl_graph_free(clear);
    vkl_graph_free(update);
    vkl_graph_free(micro);
    vkl_adamw_free(opt);
    vkl_grad_accum_free(a);
    for (int t = 0; t < 3; t++) vkl_tensor_free(p[t]);
    vkl_tensor_free(g0);
    vkl_tensor_free(g1);
    vkl_tensor_free(g2);
    free(h0);
    free(p0);
    free(got);
    vkl_test_ctx_done(c);
}

static void accumulate_in_profiles(void **state)
{
    (void)state;
    for (int i = 0; i < vkl_test_profile_count; i++) sums_clear_and_update(vkl_test_profiles[i]);
    sums_clear_and_update("binding=64K");
}

static void bad_destinations(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t s[1] = {8}, s2[1] = {9};
    vkl_tensor *p = vkl_tensor_new(c, VKL_F32, 1, s, &e), *q = vkl_tensor_new(c, VKL_F32, 1, s2, &e);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *tmp = vkl_fill(g, 1, s, 1.0f);
    assert_null(vkl_accumulate_into(g, p, tmp, 1, 1));
    assert_non_null(strstr(vkl_graph_error(g), "persistent"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_accumulate_into(g, q, p, 1, 1));
    assert_non_null(strstr(vkl_graph_error(g), "differ in size"));
    vkl_graph_free(g);
    vkl_tensor_free(p);
    vkl_tensor_free(q);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accumulate_in_profiles),
        cmocka_unit_test(bad_destinations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
