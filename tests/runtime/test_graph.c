/* Graph planning: memory reuse of dead intermediates, replay, profiling,
 * build errors, and tensors larger than one storage binding (split into
 * windows) under a lowered binding limit, checked element by element. */
#include "vkl_test.h"
#include "ops.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

static void chain_reuses_memory_and_replays(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t shape[2] = {61, 129};
    int64_t n = shape[0] * shape[1];
    float *x = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 11);
    vkl_test_fill(&r, x, n, -1, 1);
    vkl_err e = {{0}};
    vkl_tensor *tx = vkl_tensor_new(c, VKL_F32, 2, shape, &e);
    assert_int_equal(vkl_tensor_upload(c, tx, x, VKL_F32, &e), 0);
    vkl_graph *g = vkl_graph_new(c);
    vkl_graph_enable_profiling(g);
    /* y = ((x*2 + x) silu ...) : ten steps, each intermediate dead after the next */
    vkl_tensor *t = tx;
    for (int i = 0; i < 10; i++) t = vkl_add(g, vkl_scale(g, t, 0.5f), tx);
    vkl_graph_keep(g, t);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    /* 20 intermediates of n floats, but at most 2 alive at once (+ the kept output) */
    assert_true(vkl_graph_arena_bytes(g) <= (uint64_t)(2 * ((n * 4 + 255) / 256 * 256)));
    assert_true(vkl_graph_unplanned_bytes(g) >= 20 * (uint64_t)n * 4u);
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        for (int k = 0; k < 10; k++) v = (float)((float)(v * 0.5) + x[i]);
        want[i] = (float)v;
    }
    for (int run = 0; run < 3; run++) {
        memset(got, 0, sizeof(float) * n);
        assert_int_equal(vkl_graph_run(g, &e), 0);
        assert_int_equal(vkl_tensor_download(c, t, got, VKL_F32, &e), 0);
        vkl_test_assert_close("chain", got, want, (size_t)n, 1e-6f, 1e-6f);
    }
    if (vkl_ctx_caps(c)->timestamps) assert_true(vkl_graph_last_gpu_ms(g) > 0);
    vkl_graph_free(g);
    vkl_tensor_free(tx);
    free(x); free(want); free(got);
    vkl_test_ctx_done(c);
}

static void build_errors_are_reported(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t s1[2] = {3, 4}, s2[2] = {5, 4};
    vkl_tensor *a = vkl_tensor_new(c, VKL_F32, 2, s1, &e), *b = vkl_tensor_new(c, VKL_F32, 2, s2, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_add(g, a, b));
    assert_null(vkl_silu(g, NULL)); /* later ops given NULL stay quiet */
    assert_true(vkl_graph_failed(g));
    assert_int_equal(vkl_graph_plan(g, &e), -1);
    assert_non_null(strstr(e.msg, "do not broadcast"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_matmul(g, a, b));
    assert_non_null(strstr(vkl_graph_error(g), "inner dimensions"));
    vkl_graph_free(g);
    vkl_tensor_free(a);
    vkl_tensor_free(b);
    vkl_test_ctx_done(c);
}

/* With bindings limited to 64 KiB every op below must split its work into
 * windows; tensors are ~1 MiB. */
static void tensors_larger_than_a_binding(void **state)
{
    (void)state;
    const char *profiles[2] = {"binding=64K", "portable,binding=64K"};
    for (int p = 0; p < 2; p++) {
        vkl_ctx *c = vkl_test_ctx(profiles[p]);
        vkl_err e = {{0}};
        int64_t shape[2] = {300, 1001};
        int64_t n = shape[0] * shape[1];
        float *x = malloc(sizeof(float) * n), *bias = malloc(sizeof(float) * 1001);
        vkl_test_rng r;
        vkl_test_rng_seed(&r, 12);
        vkl_test_fill(&r, x, n, -1, 1);
        vkl_test_fill(&r, bias, 1001, -1, 1);
        int64_t bshape[1] = {1001};
        vkl_tensor *tx = vkl_tensor_new(c, VKL_F32, 2, shape, &e), *tb = vkl_tensor_new(c, VKL_F32, 1, bshape, &e);
        assert_int_equal(vkl_tensor_upload(c, tx, x, VKL_F32, &e), 0);
        assert_int_equal(vkl_tensor_upload(c, tb, bias, VKL_F32, &e), 0);
        int64_t ws[2] = {1001, 7};
        float *w = malloc(sizeof(float) * 1001 * 7);
        vkl_test_fill(&r, w, 1001 * 7, -1, 1);
        vkl_tensor *tw = vkl_tensor_new(c, VKL_F32, 2, ws, &e);
        assert_int_equal(vkl_tensor_upload(c, tw, w, VKL_F32, &e), 0);

        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *sum = vkl_add(g, tx, tb);            /* broadcast bias, 1.2 MB output */
        vkl_tensor *act = vkl_silu(g, sum);
        vkl_tensor *h = vkl_convert(g, act, VKL_F16);
        vkl_tensor *back = vkl_convert(g, h, VKL_F32);
        vkl_tensor *rs = vkl_sum_rows(g, back);
        vkl_tensor *mm = vkl_matmul(g, back, tw);        /* [300,1001] x [1001,7] */
        vkl_graph_keep(g, back);
        vkl_graph_keep(g, rs);
        vkl_graph_keep(g, mm);
        if (vkl_graph_plan(g, &e)) {
            print_error("plan: %s\n", e.msg);
            fail();
        }
        assert_true(vkl_graph_dispatch_count(g) > vkl_graph_node_count(g)); /* windows happened */
        assert_int_equal(vkl_graph_run(g, &e), 0);

        float *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
        int64_t xs[4] = {0, 0, 1001, 1}, bs[4] = {0, 0, 0, 1}, ys[4] = {1, 1, 300, 1001};
        vkl_ref_binary(0, x, xs, bias, bs, want, ys);
        for (int64_t i = 0; i < n; i++)
            want[i] = vkl_f16_to_f32(vkl_f32_to_f16((float)vkl_ref_unary1(1, want[i])));
        assert_int_equal(vkl_tensor_download(c, back, got, VKL_F32, &e), 0);
        vkl_test_assert_close("windowed elementwise", got, want, (size_t)n, 1e-3f, 1e-3f);
        float rw[300], rg[300];
        vkl_ref_reduce_rows(0, want, 300, 1001, rw);
        assert_int_equal(vkl_tensor_download(c, rs, rg, VKL_F32, &e), 0);
        vkl_test_assert_close("windowed sum_rows", rg, rw, 300, 1e-2f, 1e-4f);
        float mw[300 * 7], mg[300 * 7];
        int64_t as[4] = {0, 0, 1001, 1}, bst[4] = {0, 0, 7, 1};
        vkl_ref_matmul(want, as, w, bst, NULL, mw, 1, 1, 300, 7, 1001);
        assert_int_equal(vkl_tensor_download(c, mm, mg, VKL_F32, &e), 0);
        vkl_test_assert_close("windowed matmul", mg, mw, 300 * 7, 1e-3f, 1e-4f);
        free(x); free(bias); free(w); free(want); free(got);
        vkl_graph_free(g);
        vkl_tensor_free(tx);
        vkl_tensor_free(tb);
        vkl_tensor_free(tw);
        vkl_test_ctx_done(c);
    }
}

/* Intermediates that together exceed one allocation are planned into several
 * (pages of the arena); one intermediate larger than an allocation is a clear
 * error at planning. */
static void arena_larger_than_one_allocation(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx("binding=16K,alloc=64K");
    int64_t shape[2] = {61, 129};
    int64_t n = shape[0] * shape[1];
    float *x = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n), *got = malloc(sizeof(float) * n);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 12);
    vkl_test_fill(&r, x, n, -1, 1);
    vkl_err e = {{0}};
    vkl_tensor *tx = vkl_tensor_new(c, VKL_F32, 2, shape, &e);
    assert_non_null(tx);
    assert_int_equal(vkl_tensor_upload(c, tx, x, VKL_F32, &e), 0);
    vkl_graph *g = vkl_graph_new(c);
    /* eight products alive at once (31.5 KiB each), then summed */
    vkl_tensor *part[8];
    for (int i = 0; i < 8; i++) part[i] = vkl_scale(g, tx, (float)(i + 1));
    vkl_tensor *sum = part[0];
    for (int i = 1; i < 8; i++) sum = vkl_add(g, sum, part[i]);
    vkl_graph_keep(g, sum);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    assert_true(vkl_graph_arena_bytes(g) > 64 * 1024);
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        for (int k = 1; k < 8; k++) v = v + x[i] * (float)(k + 1);
        want[i] = v;
    }
    assert_int_equal(vkl_graph_run(g, &e), 0);
    assert_int_equal(vkl_tensor_download(c, sum, got, VKL_F32, &e), 0);
    vkl_test_assert_close("paged arena", got, want, (size_t)n, 1e-5f, 1e-6f);
    vkl_graph_free(g);

    /* a 123 KiB intermediate: no allocation can hold it */
    g = vkl_graph_new(c);
    vkl_tensor *half = vkl_concat(g, tx, vkl_scale(g, tx, 2.0f), 0);
    vkl_tensor *big = vkl_concat(g, half, vkl_scale(g, half, 3.0f), 0);
    vkl_graph_keep(g, vkl_scale(g, big, 1.0f));
    memset(&e, 0, sizeof e);
    assert_int_equal(vkl_graph_plan(g, &e), -1);
    assert_non_null(strstr(e.msg, "larger than one allocation"));
    vkl_graph_free(g);
    vkl_tensor_free(tx);
    free(x); free(want); free(got);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chain_reuses_memory_and_replays),
        cmocka_unit_test(build_errors_are_reported),
        cmocka_unit_test(tensors_larger_than_a_binding),
        cmocka_unit_test(arena_larger_than_one_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
