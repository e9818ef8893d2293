/* One LoRA training step of the tiny UNet against the reference kit
 * (refkit/sd/vectors/train_lora.safetensors): loss, the gradient of every
 * adapter tensor, min-SNR weighting, and the adapter after AdamW steps. */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "sd/sd_weights.h"
#include "train/sd_train_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sd/vectors/train_lora.safetensors"
#define INIT "refkit/sd/vectors/lora/train_lora_init.safetensors"

typedef struct {
    vkl_ctx *c;
    vkl_sd_source *src;
    vkl_weights *w;
    vkl_lora lora;
    vkl_lora_set *set;
    vkl_unet unet;
    float *noisy, *t, *ehs, *target, *snrw;
} fixture;

static void setup(fixture *f, int checkpoint)
{
    memset(f, 0, sizeof *f);
    f->c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path("refkit/sd/tiny-sd"), NULL, &f->src, &e), 0);
    f->w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(f->c, f->src, "unet.", VKL_F32, f->w, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(vkl_sd_source_config(f->src), &tg, &e), 0);
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(vkl_test_shared_path(INIT), &lo, &f->lora, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_lora_targets_free(&tg);
    vkl_lora_use use = {&f->lora, 1.0f, 1.0f};
    if (vkl_lora_set_build(f->c, &use, 1, &f->set, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    f->unet = (vkl_unet){&vkl_sd_source_config(f->src)->unet, f->w, f->set, checkpoint};
    int64_t n;
    f->noisy = vkl_test_ref_f32(VEC, "noisy_latents", &n);
    f->target = vkl_test_ref_f32(VEC, "target", &n);
    f->t = vkl_test_ref_f32(VEC, "timesteps", &n);
    f->ehs = vkl_test_ref_f32(VEC, "encoder_hidden_states", &n);
    f->snrw = vkl_test_ref_f32(VEC, "minsnr_weight", &n);
}

static void teardown(fixture *f)
{
    free(f->noisy); free(f->target); free(f->t); free(f->ehs); free(f->snrw);
    vkl_lora_set_free(f->set);
    vkl_lora_free(&f->lora);
    vkl_weights_free(f->w);
    vkl_sd_source_close(f->src);
    vkl_test_ctx_done(f->c);
}

static const vkl_sd_train_shape shape = {2, 4, 16, 16, 77, 32};

static void check_grads(fixture *f, vkl_sd_train_step *s, const char *prefix)
{
    vkl_err e = {{0}};
    double worst = 0;
    for (int i = 0; i < vkl_sd_train_step_param_count(s); i++) {
        const vkl_lora_slot *slot = vkl_lora_set_at(f->set, i / 2);
        const vkl_lora_module *m = vkl_lora_find(&f->lora, slot->module);
        char name[512];
        snprintf(name, sizeof name, "%s.%s.%s", prefix, m->kname, i % 2 ? "lora_up.weight" : "lora_down.weight");
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, name, &n);
        vkl_tensor *gt = vkl_sd_train_step_grad(s, i);
        assert_int_equal(vkl_tensor_nelem(gt), n);
        float *got = malloc(sizeof(float) * (size_t)n);
        assert_int_equal(vkl_tensor_download(f->c, gt, got, VKL_F32, &e), 0);
        double scale = 0, maxd = 0, num = 0, den = 0;
        for (int64_t k = 0; k < n; k++) {
            scale = fmax(scale, fabs(want[k]));
            maxd = fmax(maxd, fabs((double)got[k] - want[k]));
            num += ((double)got[k] - want[k]) * ((double)got[k] - want[k]);
            den += (double)want[k] * want[k];
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (maxd > 1e-4 * scale || rel > 1e-4) {
            print_error("%s: max abs diff %.3g (scale %.3g), relative L2 %.3g\n", name, maxd, scale, rel);
            fail();
        }
        if (rel > worst) worst = rel;
        free(want);
        free(got);
    }
    print_message("%s: %d adapter gradients, worst relative L2 error %.3g\n", prefix, vkl_sd_train_step_param_count(s),
                  worst);
}

static void loss_and_gradients(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    for (int ck = 0; ck < 2; ck++) {
        fixture f;
        setup(&f, ck);
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
    setup(&f, 1);
    vkl_adamw_opts o = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0};
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
        /* parameters after the step: AdamW's first steps move each element by
         * about lr * sign(g), so an element with a near-zero gradient may
         * differ by up to lr (README tolerance); the bulk must agree closely */
        double worst = 0, bulk = 0;
        int64_t total = 0, loose = 0;
        for (int i = 0; i < vkl_sd_train_step_param_count(s); i++) {
            const vkl_lora_slot *slot = vkl_lora_set_at(f.set, i / 2);
            const vkl_lora_module *m = vkl_lora_find(&f.lora, slot->module);
            char name[512];
            snprintf(name, sizeof name, "step%d.%s.%s", step, m->kname, i % 2 ? "lora_up.weight" : "lora_down.weight");
            float *w = vkl_test_ref_f32(VEC, name, &n);
            float *got = malloc(sizeof(float) * (size_t)n);
            assert_int_equal(vkl_tensor_download(f.c, vkl_sd_train_step_param(s, i), got, VKL_F32, &e), 0);
            for (int64_t k = 0; k < n; k++) {
                double d = fabs((double)got[k] - w[k]);
                worst = fmax(worst, d);
                if (d > 1e-6 * fmax(1, fabs(w[k]))) loose++;
                else bulk = fmax(bulk, d);
            }
            total += n;
            free(w);
            free(got);
        }
        print_message("AdamW step %d: %lld of %lld elements within 1e-6, worst %.3g\n", step,
                      (long long)(total - loose), (long long)total, worst);
        assert_true(worst <= 1.1e-3);
        assert_true(loose <= total / 100);
    }
    vkl_sd_train_step_free(s);
    vkl_adamw_free(opt);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loss_and_gradients),
        cmocka_unit_test(adamw_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
