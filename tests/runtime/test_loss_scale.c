/* Dynamic loss scaling (runtime/loss_scale.h) and the optimiser's unscaling
 * (vkl_adamw_set_grad_scale): GradScaler's growth and backoff rules exactly;
 * scaled gradients give the unscaled step's parameters, moments and norm;
 * an overflowing gradient skips the step without touching parameters or
 * moments, and the scale halves. */
#include "vkl_test.h"
#include "loss_scale.h"
#include "optim.h"

#include <math.h>
#include <string.h>

static void growth_and_backoff(void **state)
{
    (void)state;
    vkl_loss_scaler s;
    vkl_loss_scaler_init(&s);
    assert_true(s.scale == 65536.0f);
    for (int i = 0; i < 1999; i++) assert_int_equal(vkl_loss_scaler_update(&s, 0), 0);
    assert_true(s.scale == 65536.0f);
    assert_int_equal(s.good, 1999);
    vkl_loss_scaler_update(&s, 0); /* the 2000th finite step in a row doubles S */
    assert_true(s.scale == 131072.0f);
    assert_int_equal(s.good, 0);
    for (int i = 0; i < 10; i++) vkl_loss_scaler_update(&s, 0);
    assert_int_equal(vkl_loss_scaler_update(&s, 1), 1); /* overflow: halve, restart the count */
    assert_true(s.scale == 65536.0f);
    assert_int_equal(s.good, 0);
    /* 16 more overflows reach the minimum 1; there a skip is a divergence */
    for (int i = 0; i < 16; i++) assert_int_equal(vkl_loss_scaler_update(&s, 1), 1);
    assert_true(s.scale == 1.0f);
    assert_int_equal(vkl_loss_scaler_update(&s, 1), 0);
    assert_true(s.scale == 1.0f);
    /* growth stops at the maximum */
    s.scale = s.max_scale;
    s.good = s.interval - 1;
    vkl_loss_scaler_update(&s, 0);
    assert_true(s.scale == s.max_scale);
}

/* One AdamW step on P from gradient values g (times scale), clipping at 1. */
typedef struct {
    vkl_ctx *c;
    vkl_tensor *P, *G;
    vkl_adamw *a;
    vkl_graph *g;
} rig;

static void rig_new(rig *r, vkl_ctx *c)
{
    vkl_err e = {{0}};
    int64_t n = 4;
    float p0[4] = {1, 2, 3, 4};
    r->c = c;
    r->P = vkl_tensor_new(c, VKL_F32, 1, &n, &e);
    r->G = vkl_tensor_new(c, VKL_F32, 1, &n, &e);
    assert_int_equal(vkl_tensor_upload(c, r->P, p0, VKL_F32, &e), 0);
    vkl_adamw_opts o = {0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1.0f, 32};
    r->a = vkl_adamw_new(c, &r->P, 1, NULL, &o, &e);
    assert_non_null(r->a);
    r->g = vkl_graph_new(c);
    assert_int_equal(vkl_adamw_append(r->a, r->g, &r->G, &e), 0);
    assert_int_equal(vkl_graph_plan(r->g, &e), 0);
}

static void rig_step(rig *r, int t, const float *grad, float scale, float *norm, int *skipped)
{
    vkl_err e = {{0}};
    float gs[4];
    for (int i = 0; i < 4; i++) gs[i] = grad[i] * scale;
    assert_int_equal(vkl_tensor_upload(r->c, r->G, gs, VKL_F32, &e), 0);
    assert_int_equal(vkl_adamw_set_grad_scale(r->a, scale, &e), 0);
    assert_int_equal(vkl_adamw_prepare(r->a, t, 0.1f, &e), 0);
    assert_int_equal(vkl_graph_run(r->g, &e), 0);
    assert_int_equal(vkl_adamw_result(r->a, norm, skipped, &e), 0);
}

static void rig_read(rig *r, float *p, float *m, float *v)
{
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_download(r->c, r->P, p, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_download(r->c, vkl_adamw_m(r->a, 0), m, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_download(r->c, vkl_adamw_v(r->a, 0), v, VKL_F32, &e), 0);
}

static void rig_free(rig *r)
{
    vkl_graph_free(r->g);
    vkl_adamw_free(r->a);
    vkl_tensor_free(r->P);
    vkl_tensor_free(r->G);
}

static void scaled_step_matches_plain(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    rig plain, scaled;
    rig_new(&plain, c);
    rig_new(&scaled, c);
    /* norm 5 (clipped to 1), then a small gradient of norm 0.05 (not clipped) */
    const float g1[4] = {3, 0, 4, 0}, g2[4] = {0.03f, -0.04f, 0, 0};
    const float *gs[2] = {g1, g2};
    float want_norm[2] = {5.0f, 0.05f};
    for (int t = 1; t <= 2; t++) {
        float n0, n1;
        int s0, s1;
        rig_step(&plain, t, gs[t - 1], 1.0f, &n0, &s0);
        rig_step(&scaled, t, gs[t - 1], 65536.0f, &n1, &s1);
        assert_false(s0);
        assert_false(s1);
        /* the reported norm is the true one */
        assert_true(fabsf(n0 - want_norm[t - 1]) < 1e-5f * want_norm[t - 1]);
        assert_true(fabsf(n1 - want_norm[t - 1]) < 1e-5f * want_norm[t - 1]);
        float p0[4], m0[4], v0[4], p1[4], m1[4], v1[4];
        rig_read(&plain, p0, m0, v0);
        rig_read(&scaled, p1, m1, v1);
        /* S is a power of two: scaling and unscaling are exact in f32, up to
         * the square root's rounding in the norm */
        vkl_test_assert_close("parameters with loss scale", p1, p0, 4, 1e-6f, 1e-6f);
        vkl_test_assert_close("first moments with loss scale", m1, m0, 4, 1e-9f, 1e-6f);
        vkl_test_assert_close("second moments with loss scale", v1, v0, 4, 1e-12f, 1e-6f);
    }
    rig_free(&plain);
    rig_free(&scaled);
    vkl_test_ctx_done(c);
}

static void overflow_skips_and_halves(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    rig r;
    rig_new(&r, c);
    vkl_loss_scaler s;
    vkl_loss_scaler_init(&s);
    const float g1[4] = {3, 0, 4, 0};
    float norm;
    int skipped;
    rig_step(&r, 1, g1, s.scale, &norm, &skipped);
    assert_false(skipped);
    assert_int_equal(vkl_loss_scaler_update(&s, skipped), 0);
    float p[4], m[4], v[4];
    rig_read(&r, p, m, v);
    /* two forced overflows: a finite gradient whose scaled square overflows
     * f32 (1e30 * 65536), and an infinite one */
    const float huge[4] = {1e30f, 0, 0, 0}, inf[4] = {0, INFINITY, 0, 0};
    const float *bad[2] = {huge, inf};
    float want_scale[2] = {32768.0f, 16384.0f};
    for (int k = 0; k < 2; k++) {
        rig_step(&r, 2, bad[k], s.scale, &norm, &skipped);
        assert_true(skipped);
        assert_int_equal(vkl_loss_scaler_update(&s, skipped), 1);
        assert_true(s.scale == want_scale[k]);
        float p2[4], m2[4], v2[4];
        rig_read(&r, p2, m2, v2);
        assert_memory_equal(p2, p, sizeof p);
        assert_memory_equal(m2, m, sizeof m);
        assert_memory_equal(v2, v, sizeof v);
    }
    /* the next finite step runs at the lowered scale */
    rig_step(&r, 2, g1, s.scale, &norm, &skipped);
    assert_false(skipped);
    assert_true(fabsf(norm - 5.0f) < 1e-5f);
    vkl_err e = {{0}};
    assert_int_equal(vkl_adamw_set_grad_scale(r.a, 0.0f, &e), -1);
    assert_non_null(strstr(e.msg, "scale"));
    rig_free(&r);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(growth_and_backoff),
        cmocka_unit_test(scaled_step_matches_plain),
        cmocka_unit_test(overflow_skips_and_halves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
