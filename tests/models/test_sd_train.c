/* One LoRA training step of the tiny UNet against the reference kit
 * (refkit/sd/vectors/train_lora.safetensors): loss, the gradient of every
 * adapter tensor, min-SNR weighting, the adapter after AdamW steps, and the
 * same steps from gradients accumulated over micro-batches. */
#include "sd_train_fixture.h"

static void check_grads(fixture *f, vkl_sd_train_step *s, const char *prefix)
{
    double worst = 0;
    for (int i = 0; i < vkl_sd_train_step_param_count(s); i++) {
        char name[512];
        double rel, maxd, scale;
        grad_error(f, s, i, prefix, 1.0f, name, sizeof name, &rel, &maxd, &scale);
        if (maxd > 1e-4 * scale || rel > 1e-4) {
            print_error("%s: max abs diff %.3g (scale %.3g), relative L2 %.3g\n", name, maxd, scale, rel);
            fail();
        }
        if (rel > worst) worst = rel;
    }
    print_message("%s: %d adapter gradients, worst relative L2 error %.3g\n", prefix, vkl_sd_train_step_param_count(s),
                  worst);
}

/* The adapter after optimiser step `step` against the reference kit's
 * AdamW steps (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 1e-2, batch 2). */
static void check_params(fixture *f, int step)
{
    vkl_err e = {{0}};
    /* AdamW's first steps move each element by about lr * sign(g), so an
     * element with a near-zero gradient may differ by up to lr (README
     * tolerance); the bulk must agree closely */
    double worst = 0, bulk = 0;
    int64_t total = 0, loose = 0;
    for (int s = 0; s < vkl_lora_set_count(f->set); s++) {
        const vkl_lora_slot *slot = vkl_lora_set_at(f->set, s);
        const vkl_lora_module *m = vkl_lora_find(&f->lora, slot->module);
        for (int k = 0; k < 2; k++) {
            char name[512];
            snprintf(name, sizeof name, "step%d.%s.%s", step, m->kname, k ? "lora_up.weight" : "lora_down.weight");
            int64_t n;
            float *w = vkl_test_ref_f32(VEC, name, &n);
            float *got = malloc(sizeof(float) * (size_t)n);
            assert_int_equal(vkl_tensor_download(f->c, k ? slot->b_cat : slot->a_cat, got, VKL_F32, &e), 0);
            for (int64_t j = 0; j < n; j++) {
                double d = fabs((double)got[j] - w[j]);
                worst = fmax(worst, d);
                if (d > 1e-6 * fmax(1, fabs(w[j]))) loose++;
                else bulk = fmax(bulk, d);
            }
            total += n;
            free(w);
            free(got);
        }
    }
    print_message("AdamW step %d: %lld of %lld elements within 1e-6, worst %.3g\n", step, (long long)(total - loose),
                  (long long)total, worst);
    assert_true(worst <= 1.1e-3);
    assert_true(loose <= total / 100);
}

static void loss_and_gradients(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    for (int ck = 0; ck < 2; ck++) {
        fixture f;
        setup(&f, NULL, ck);
        vkl_sd_train_step *s = NULL;
        vkl_err e = {{0}};
        if (vkl_sd_train_step_new(f.c, &f.unet, &shape, ck, NULL, &s, &e)) {
            print_error("%s\n", e.msg);
            fail();
        }
        float loss;
        assert_int_equal(vkl_sd_train_step_run(s, f.noisy, f.t, f.ehs, f.target, NULL, 1, 0, &loss, &e), 0);
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, "loss", &n);
        vkl_test_assert_scaled(ck ? "loss (checkpointed)" : "loss", &loss, want, 1, 1e-4);
        free(want);
        check_grads(&f, s, "grad");
        /* min-SNR weighted loss and its gradients */
        assert_int_equal(vkl_sd_train_step_run(s, f.noisy, f.t, f.ehs, f.target, f.snrw, 1, 0, &loss, &e), 0);
        want = vkl_test_ref_f32(VEC, "loss_minsnr5", &n);
        vkl_test_assert_scaled("loss_minsnr5", &loss, want, 1, 1e-4);
        free(want);
        check_grads(&f, s, "grad_minsnr5");
        vkl_sd_train_step_free(s);
        teardown(&f);
    }
}

static void adamw_steps(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, NULL, 1);
    vkl_adamw_opts o = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0, 32};
    vkl_sd_train_step *s = NULL;
    vkl_err e = {{0}};
    vkl_tensor **params;
    int np;
    assert_int_equal(vkl_sd_train_params(f.set, &params, &np, &e), 0);
    vkl_adamw *opt = vkl_adamw_new(f.c, params, np, NULL, &o, &e);
    assert_non_null(opt);
    free(params);
    if (vkl_sd_train_step_new(f.c, &f.unet, &shape, 1, opt, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    for (int step = 1; step <= 2; step++) {
        float loss;
        assert_int_equal(vkl_sd_train_step_run(s, f.noisy, f.t, f.ehs, f.target, NULL, step, 1e-3f, &loss, &e), 0);
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, step == 1 ? "loss" : "loss_step2", &n);
        vkl_test_assert_scaled(step == 1 ? "loss before step 1" : "loss before step 2", &loss, want, 1, 1e-4);
        free(want);
        check_params(&f, step);
    }
    vkl_sd_train_step_free(s);
    vkl_adamw_free(opt);
    teardown(&f);
}

/* Gradient accumulation: two micro-batches of one sample each (loss / 2,
 * gradients summed on the device) give the gradients and AdamW updates of
 * the reference kit's batch of two, for two optimiser steps, so the buffers
 * are also cleared between cycles. */
static void accumulation_matches_batch(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, NULL, 1);
    vkl_err e = {{0}};
    vkl_tensor **params;
    int np;
    assert_int_equal(vkl_sd_train_params(f.set, &params, &np, &e), 0);
    vkl_adamw_opts o = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0, 32};
    vkl_adamw *opt = vkl_adamw_new(f.c, params, np, NULL, &o, &e);
    vkl_grad_accum *acc = vkl_grad_accum_new(f.c, params, np, &e);
    free(params);
    assert_non_null(opt);
    assert_non_null(acc);
    vkl_sd_train_shape one = shape;
    one.batch = 1;
    vkl_sd_train_opts so = {1, NULL, acc, 0.5f, NULL, 0, 0, NULL, NULL, NULL, 0, NULL};
    vkl_sd_train_step *s = NULL;
    if (vkl_sd_train_step_new_ex(f.c, &f.unet, &one, &so, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_graph *update = vkl_grad_accum_update_graph(acc, opt, &e);
    if (!update) {
        print_error("%s\n", e.msg);
        fail();
    }
    size_t lat = (size_t)shape.channels * shape.height * shape.width, txt = (size_t)shape.tokens * shape.context;
    for (int step = 1; step <= 2; step++) {
        double loss_sum = 0;
        for (int b = 0; b < 2; b++) {
            vkl_sd_train_batch mb = {f.noisy + lat * b, f.t + b, f.ehs + txt * b, f.target + lat * b, NULL, NULL, NULL, NULL};
            float loss;
            assert_int_equal(vkl_sd_train_step_run_batch(s, &mb, step, 0, &loss, &e), 0);
            loss_sum += loss;
        }
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, step == 1 ? "loss" : "loss_step2", &n);
        float mean = (float)(loss_sum / 2);
        vkl_test_assert_scaled(step == 1 ? "mean micro-batch loss, step 1" : "mean micro-batch loss, step 2", &mean,
                               want, 1, 1e-4);
        free(want);
        if (step == 1) {
            /* the summed buffers are the batch gradient */
            double worst = 0;
            for (int i = 0; i < np; i++) {
                const vkl_lora_slot *slot = vkl_lora_set_at(f.set, i / 2);
                const vkl_lora_module *m = vkl_lora_find(&f.lora, slot->module);
                char name[512];
                snprintf(name, sizeof name, "grad.%s.%s", m->kname, i % 2 ? "lora_up.weight" : "lora_down.weight");
                float *g = vkl_test_ref_f32(VEC, name, &n);
                float *got = malloc(sizeof(float) * (size_t)n);
                assert_int_equal(vkl_tensor_download(f.c, vkl_grad_accum_buffer(acc, i), got, VKL_F32, &e), 0);
                double num = 0, den = 0;
                for (int64_t k = 0; k < n; k++) {
                    num += ((double)got[k] - g[k]) * ((double)got[k] - g[k]);
                    den += (double)g[k] * g[k];
                }
                double rel = den > 0 ? sqrt(num / den) : sqrt(num);
                if (rel > 1e-4) {
                    print_error("%s: accumulated gradient off by relative L2 %.3g\n", name, rel);
                    fail();
                }
                worst = fmax(worst, rel);
                free(g);
                free(got);
            }
            print_message("accumulated gradients: worst relative L2 error %.3g\n", worst);
        }
        assert_int_equal(vkl_adamw_prepare(opt, step, 1e-3f, &e), 0);
        assert_int_equal(vkl_graph_run(update, &e), 0);
        check_params(&f, step);
        /* the update cleared the buffers for the next cycle */
        for (int i = 0; i < np; i += np - 1) {
            vkl_tensor *bt = vkl_grad_accum_buffer(acc, i);
            float *got = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(bt));
            assert_int_equal(vkl_tensor_download(f.c, bt, got, VKL_F32, &e), 0);
            for (int64_t k = 0; k < vkl_tensor_nelem(bt); k++) assert_true(got[k] == 0.0f);
            free(got);
        }
    }
    vkl_graph_free(update);
    vkl_sd_train_step_free(s);
    vkl_grad_accum_free(acc);
    vkl_adamw_free(opt);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loss_and_gradients),
        cmocka_unit_test(adamw_steps),
        cmocka_unit_test(accumulation_matches_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
