/* Mixed-precision training of the tiny UNet against the reference kit
 * (refkit/sd/vectors/train_lora.safetensors, computed in f32 by torch):
 * with f16 activations the loss and every adapter gradient stay within a
 * tolerance derived from f16's 11-bit significand, the AdamW steps (with
 * the loss scale on the gradients) land close to the reference adapter, and
 * the planned arena is smaller than f32's. Under the "portable" profile (no
 * fp16 arithmetic) the same request trains in f32, exactly as f32 does. */
#include "sd_train_fixture.h"
#include "loss_scale.h"

/* Tolerances. Storing an activation as f16 rounds it with a relative error of
 * at most u = 2^-11 ~ 4.9e-4 (an 11-bit significand); the arithmetic stays
 * f32, so the error is the same on every device. The loss is a mean of 2048
 * squared differences whose rounding errors have random signs and largely
 * cancel: observed 1.1e-5, tolerance 2e-4 (~u/2). A gradient is a sum of
 * products of stored activations and f32 gradients in which terms of both
 * signs cancel, which multiplies the relative error by the sum's condition
 * number: observed relative L2 errors per tensor are 1e-3 to 5e-3 (median
 * ~2.5e-3, about 5u), tolerance 1e-2 (20u); the f32 test holds 1e-4. */
#define LOSS_TOL 2e-4
#define GRAD_TOL 1e-2

static vkl_sd_train_step *new_step(fixture *f, int ck, int fp16, vkl_adamw *opt, vkl_tensor *seed)
{
    vkl_sd_train_opts o = {ck, opt, NULL, 1.0f, NULL, 0, fp16, seed, NULL, NULL, 0, NULL};
    vkl_sd_train_step *s = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_train_step_new_ex(f->c, &f->unet, &shape, &o, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    return s;
}

static void check_loss(const char *what, float loss, const char *ref, double tol)
{
    int64_t n;
    float *want = vkl_test_ref_f32(VEC, ref, &n);
    double rel = fabs((double)loss - want[0]) / fabs(want[0]);
    print_message("%s: %.7g vs %.7g, relative error %.3g\n", what, loss, want[0], rel);
    assert_true(rel <= tol);
    free(want);
}

/* Every adapter gradient (divided by `scale`) against the reference. */
static double check_grads(fixture *f, vkl_sd_train_step *s, float scale)
{
    double worst = 0;
    for (int i = 0; i < vkl_sd_train_step_param_count(s); i++) {
        char name[512];
        double rel, maxd, ref_scale;
        grad_error(f, s, i, "grad", scale, name, sizeof name, &rel, &maxd, &ref_scale);
        if (rel > GRAD_TOL) {
            print_error("%s: relative L2 error %.3g (tolerance %.3g)\n", name, rel, GRAD_TOL);
            fail();
        }
        worst = fmax(worst, rel);
    }
    return worst;
}

static void fp16_loss_gradients_arena(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, NULL, 1);
    if (!vkl_sd_train_fp16_supported(f.c)) {
        teardown(&f);
        skip();
    }
    vkl_err e = {{0}};
    /* the seed carries the loss scale: gradients come out times S */
    vkl_tensor *seed = vkl_tensor_new(f.c, VKL_F32, 1, (int64_t[]){1}, &e);
    float S = 65536.0f;
    assert_int_equal(vkl_tensor_upload(f.c, seed, &S, VKL_F32, &e), 0);
    /* run without checkpointing (the trainer's default; the AdamW test runs
     * the checkpointed graph); the arena is compared for both */
    for (int ck = 0; ck < 2; ck++) {
        vkl_sd_train_step *s16 = new_step(&f, ck, 1, NULL, seed), *s32 = new_step(&f, ck, 0, NULL, NULL);
        assert_true(vkl_sd_train_step_fp16(s16));
        assert_false(vkl_sd_train_step_fp16(s32));
        if (!ck) {
            float loss;
            assert_int_equal(vkl_sd_train_step_run(s16, f.noisy, f.t, f.ehs, f.target, NULL, 1, 0, &loss, &e), 0);
            check_loss("fp16 loss", loss, "loss", LOSS_TOL);
            print_message("worst gradient relative L2 error %.3g (tolerance %.3g)\n", check_grads(&f, s16, S), GRAD_TOL);
        }
        uint64_t a16 = vkl_sd_train_step_arena_bytes(s16), a32 = vkl_sd_train_step_arena_bytes(s32);
        print_message("checkpointing %s: arena f16 %.1f KiB, f32 %.1f KiB (%.0f%%)\n", ck ? "on" : "off", a16 / 1024.0,
                      a32 / 1024.0, 100.0 * a16 / a32);
        assert_true(a16 < a32);
        vkl_sd_train_step_free(s16);
        vkl_sd_train_step_free(s32);
    }
    vkl_tensor_free(seed);
    teardown(&f);
}

/* Two AdamW steps with fp16 activations and the loss scale, as the trainer
 * runs them, against the reference adapter after steps 1 and 2 (lr 1e-3). */
static void fp16_adamw_steps(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, NULL, 1);
    if (!vkl_sd_train_fp16_supported(f.c)) {
        teardown(&f);
        skip();
    }
    vkl_err e = {{0}};
    vkl_tensor **params;
    int np;
    assert_int_equal(vkl_sd_train_params(f.set, &params, &np, &e), 0);
    vkl_adamw_opts o = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0, 32};
    vkl_adamw *opt = vkl_adamw_new(f.c, params, np, NULL, &o, &e);
    free(params);
    assert_non_null(opt);
    vkl_loss_scaler sc;
    vkl_loss_scaler_init(&sc);
    vkl_tensor *seed = vkl_tensor_new(f.c, VKL_F32, 1, (int64_t[]){1}, &e);
    vkl_sd_train_step *s = new_step(&f, 1, 1, opt, seed);
    for (int step = 1; step <= 2; step++) {
        assert_int_equal(vkl_tensor_upload(f.c, seed, &sc.scale, VKL_F32, &e), 0);
        assert_int_equal(vkl_adamw_set_grad_scale(opt, sc.scale, &e), 0);
        float loss, gn;
        int skipped;
        assert_int_equal(vkl_sd_train_step_run(s, f.noisy, f.t, f.ehs, f.target, NULL, step, 1e-3f, &loss, &e), 0);
        assert_int_equal(vkl_sd_train_step_stats(s, &gn, &skipped, &e), 0);
        assert_false(skipped);
        assert_int_equal(vkl_loss_scaler_update(&sc, skipped), 0);
        check_loss(step == 1 ? "fp16 loss before step 1" : "fp16 loss before step 2", loss,
                   step == 1 ? "loss" : "loss_step2", LOSS_TOL);
        /* AdamW's first steps move each element by about lr * sign(g): an
         * element whose gradient is within the f16 error of zero may move
         * the other way, off by up to 2 lr (2e-3). Elsewhere an update of
         * size lr carries the gradients' relative error (~5e-3): 5e-6, so
         * the bulk must agree to 1e-5. Step 2's update is m/sqrt(v) over two
         * gradients, sensitive where they have opposite signs and similar
         * sizes: 2.3% of elements are past 1e-5 (f32: under 1% past 1e-6);
         * at most 5% may be */
        double worst = 0;
        int64_t total = 0, loose = 0;
        for (int i = 0; i < vkl_lora_set_count(f.set); i++) {
            const vkl_lora_slot *slot = vkl_lora_set_at(f.set, i);
            const vkl_lora_module *m = vkl_lora_find(&f.lora, slot->module);
            for (int k = 0; k < 2; k++) {
                char name[512];
                snprintf(name, sizeof name, "step%d.%s.%s", step, m->kname, k ? "lora_up.weight" : "lora_down.weight");
                int64_t n;
                float *w = vkl_test_ref_f32(VEC, name, &n);
                float *got = malloc(sizeof(float) * (size_t)n);
                assert_int_equal(vkl_tensor_download(f.c, k ? slot->b_cat : slot->a_cat, got, VKL_F32, &e), 0);
                for (int64_t j = 0; j < n; j++) {
                    double d = fabs((double)got[j] - w[j]);
                    worst = fmax(worst, d);
                    if (d > 1e-5 * fmax(1, fabs(w[j]))) loose++;
                }
                total += n;
                free(w);
                free(got);
            }
        }
        print_message("fp16 AdamW step %d (loss scale %g): %lld of %lld elements within 1e-5, worst %.3g\n", step,
                      sc.scale, (long long)(total - loose), (long long)total, worst);
        assert_true(worst <= 2.2e-3);
        assert_true(loose <= total / 20);
    }
    vkl_sd_train_step_free(s);
    vkl_tensor_free(seed);
    vkl_adamw_free(opt);
    teardown(&f);
}

/* No fp16 arithmetic: asking for fp16 gives the f32 graph (same arena, the
 * f32 test's tolerance). */
static void portable_falls_back(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, "portable", 1);
    assert_false(vkl_sd_train_fp16_supported(f.c));
    vkl_sd_train_step *s16 = new_step(&f, 1, 1, NULL, NULL), *s32 = new_step(&f, 1, 0, NULL, NULL);
    assert_false(vkl_sd_train_step_fp16(s16));
    assert_true(vkl_sd_train_step_arena_bytes(s16) == vkl_sd_train_step_arena_bytes(s32));
    vkl_err e = {{0}};
    float loss;
    assert_int_equal(vkl_sd_train_step_run(s16, f.noisy, f.t, f.ehs, f.target, NULL, 1, 0, &loss, &e), 0);
    check_loss("portable, fp16 asked: loss", loss, "loss", 1e-4);
    vkl_sd_train_step_free(s16);
    vkl_sd_train_step_free(s32);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fp16_loss_gradients_arena),
        cmocka_unit_test(fp16_adamw_steps),
        cmocka_unit_test(portable_falls_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
