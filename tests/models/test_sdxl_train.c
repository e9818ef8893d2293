/* One SDXL LoRA training step against the reference kit
 * (refkit/sdxl/vectors/train_lora.safetensors): the UNet with its added
 * conditioning (pooled text embedding, size/crop time ids), the loss, the
 * gradient of every adapter tensor, min-SNR weighting and two AdamW steps,
 * with and without checkpointing; the noisy latents and min-SNR weights from
 * the model's own noise schedule; and a new SDXL network named as kohya's
 * sdxl_train_network names it. */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "lora/lora_init.h"
#include "sd/schedule.h"
#include "sd/sd_weights.h"
#include "train/sd_train_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/train_lora.safetensors"
#define INIT "refkit/sdxl/vectors/lora/train_lora_init.safetensors"
#define MODEL "refkit/sdxl/tiny-sdxl"

typedef struct {
    vkl_ctx *c;
    vkl_sd_source *src;
    vkl_weights *w;
    vkl_lora lora;
    vkl_lora_set *set;
    vkl_unet unet;
    float *noisy, *t, *ehs, *pooled, *time_ids, *target, *snrw;
} fixture;

/* the kit's batch: latents [2,4,16,16], text states [2,77,80], pooled [2,32] */
static const vkl_sd_train_shape shape = {2, 4, 16, 16, 77, 80, 32};

static void setup(fixture *f, int checkpoint)
{
    memset(f, 0, sizeof *f);
    f->c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(MODEL), NULL, &f->src, &e), 0);
    f->w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(f->c, f->src, "unet.", VKL_F32, f->w, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(vkl_sd_source_config(f->src), &tg, &e), 0);
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(vkl_test_shared_path(INIT), &lo, &f->lora, &e)) fail_msg("%s", e.msg);
    vkl_lora_targets_free(&tg);
    assert_int_equal(f->lora.n, 136);
    vkl_lora_use use = {&f->lora, 1.0f, 1.0f};
    if (vkl_lora_set_build(f->c, &use, 1, &f->set, &e)) fail_msg("%s", e.msg);
    f->unet = (vkl_unet){&vkl_sd_source_config(f->src)->unet, f->w, f->set, checkpoint};
    int64_t n;
    f->noisy = vkl_test_ref_f32(VEC, "noisy_latents", &n);
    f->target = vkl_test_ref_f32(VEC, "noise", &n); /* epsilon prediction */
    int32_t *ts = vkl_test_ref_i32(VEC, "timesteps", &n);
    f->t = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) f->t[i] = (float)ts[i];
    free(ts);
    f->ehs = vkl_test_ref_f32(VEC, "encoder_hidden_states", &n);
    f->pooled = vkl_test_ref_f32(VEC, "text_embeds", &n);
    f->time_ids = vkl_test_ref_f32(VEC, "time_ids", &n);
    f->snrw = vkl_test_ref_f32(VEC, "minsnr_weight", &n);
}

static void teardown(fixture *f)
{
    free(f->noisy); free(f->target); free(f->t); free(f->ehs); free(f->pooled); free(f->time_ids); free(f->snrw);
    vkl_lora_set_free(f->set);
    vkl_lora_free(&f->lora);
    vkl_weights_free(f->w);
    vkl_sd_source_close(f->src);
    vkl_test_ctx_done(f->c);
}

static vkl_sd_train_batch batch_of(const fixture *f, const float *weights)
{
    return (vkl_sd_train_batch){f->noisy, f->t, f->ehs, f->target, weights, NULL, f->pooled, f->time_ids};
}

/* The kit names tensors by the file's kohya (SGM-numbered) module names. */
static const char *kit_name(const fixture *f, int slot)
{
    const vkl_lora_module *m = vkl_lora_find(&f->lora, vkl_lora_set_at(f->set, slot)->module);
    assert_non_null(m);
    return m->source;
}

static void check_grads(fixture *f, vkl_sd_train_step *s, const char *prefix)
{
    vkl_err e = {{0}};
    double worst = 0;
    int np = vkl_sd_train_step_param_count(s);
    assert_int_equal(np, 2 * 136);
    for (int i = 0; i < np; i++) {
        char name[512];
        snprintf(name, sizeof name, "%s.%s.%s", prefix, kit_name(f, i / 2), i % 2 ? "lora_up.weight" : "lora_down.weight");
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, name, &n);
        vkl_tensor *gt = vkl_sd_train_step_grad(s, i);
        assert_int_equal(vkl_tensor_nelem(gt), n);
        float *got = malloc(sizeof(float) * (size_t)n);
        assert_int_equal(vkl_tensor_download(f->c, gt, got, VKL_F32, &e), 0);
        double num = 0, den = 0, maxd = 0, scale = 0;
        for (int64_t k = 0; k < n; k++) {
            double d = (double)got[k] - want[k];
            scale = fmax(scale, fabs(want[k]));
            maxd = fmax(maxd, fabs(d));
            num += d * d;
            den += (double)want[k] * want[k];
        }
        double rel = den > 0 ? sqrt(num / den) : sqrt(num);
        if (maxd > 1e-4 * scale || rel > 1e-4)
            fail_msg("%s: max abs diff %.3g (scale %.3g), relative L2 %.3g", name, maxd, scale, rel);
        worst = fmax(worst, rel);
        free(want);
        free(got);
    }
    print_message("%s: %d adapter gradients, worst relative L2 error %.3g\n", prefix, np, worst);
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
        if (vkl_sd_train_step_new(f.c, &f.unet, &shape, ck, NULL, &s, &e)) fail_msg("%s", e.msg);
        float loss;
        vkl_sd_train_batch b = batch_of(&f, NULL);
        assert_int_equal(vkl_sd_train_step_run_batch(s, &b, 1, 0, &loss, &e), 0);
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, "loss", &n);
        vkl_test_assert_scaled(ck ? "loss (checkpointed)" : "loss", &loss, want, 1, 1e-4);
        free(want);
        check_grads(&f, s, "grad");
        b = batch_of(&f, f.snrw);
        assert_int_equal(vkl_sd_train_step_run_batch(s, &b, 1, 0, &loss, &e), 0);
        want = vkl_test_ref_f32(VEC, "loss_minsnr5", &n);
        vkl_test_assert_scaled("loss_minsnr5", &loss, want, 1, 1e-4);
        free(want);
        check_grads(&f, s, "grad_minsnr5");
        /* the added conditioning matters: other time ids give another loss */
        float ids2[12];
        memcpy(ids2, f.time_ids, sizeof ids2);
        ids2[0] = ids2[6] = 1024;
        b = batch_of(&f, NULL);
        b.time_ids = ids2;
        float other;
        assert_int_equal(vkl_sd_train_step_run_batch(s, &b, 1, 0, &other, &e), 0);
        want = vkl_test_ref_f32(VEC, "loss", &n);
        print_message("loss with original sizes 1024: %.7g (kit's sizes: %.7g)\n", other, want[0]);
        assert_true(fabs(other - want[0]) > 1e-5 * fabs(want[0]));
        free(want);
        vkl_sd_train_step_free(s);
        teardown(&f);
    }
}

/* AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, wd 1e-2) from our own
 * gradients: two steps against step1.* / step2.*; elements whose gradient
 * is near zero may differ by up to lr (README tolerance), the bulk within
 * 1e-6. */
static void adamw_steps(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, 1);
    vkl_adamw_opts o = {1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, 0, 32};
    vkl_err e = {{0}};
    vkl_tensor **params;
    int np;
    assert_int_equal(vkl_sd_train_params(f.set, &params, &np, &e), 0);
    vkl_adamw *opt = vkl_adamw_new(f.c, params, np, NULL, &o, &e);
    assert_non_null(opt);
    free(params);
    vkl_sd_train_step *s = NULL;
    if (vkl_sd_train_step_new(f.c, &f.unet, &shape, 1, opt, &s, &e)) fail_msg("%s", e.msg);
    for (int step = 1; step <= 2; step++) {
        float loss;
        vkl_sd_train_batch b = batch_of(&f, NULL);
        assert_int_equal(vkl_sd_train_step_run_batch(s, &b, step, 1e-3f, &loss, &e), 0);
        int64_t n;
        float *want = vkl_test_ref_f32(VEC, step == 1 ? "loss" : "loss_step2", &n);
        vkl_test_assert_scaled(step == 1 ? "loss before step 1" : "loss before step 2", &loss, want, 1, 1e-4);
        free(want);
        double worst = 0;
        int64_t total = 0, loose = 0;
        for (int i = 0; i < vkl_lora_set_count(f.set); i++) {
            const vkl_lora_slot *slot = vkl_lora_set_at(f.set, i);
            for (int k = 0; k < 2; k++) {
                char name[512];
                snprintf(name, sizeof name, "step%d.%s.%s", step, kit_name(&f, i), k ? "lora_up.weight" : "lora_down.weight");
                float *w = vkl_test_ref_f32(VEC, name, &n);
                float *got = malloc(sizeof(float) * (size_t)n);
                assert_int_equal(vkl_tensor_download(f.c, k ? slot->b_cat : slot->a_cat, got, VKL_F32, &e), 0);
                for (int64_t j = 0; j < n; j++) {
                    double d = fabs((double)got[j] - w[j]);
                    worst = fmax(worst, d);
                    if (d > 1e-6 * fmax(1, fabs(w[j]))) loose++;
                }
                total += n;
                free(w);
                free(got);
            }
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

/* The trainer's inputs from the model's own schedule: alphas_cumprod,
 * noisy = sqrt(acp) x0 + sqrt(1 - acp) noise (diffusers' add_noise) and
 * kohya's min-SNR-5 weights, against the kit. */
static void noise_schedule(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(MODEL), NULL, &src, &e), 0);
    vkl_beta_params bp;
    vkl_noise_table tab;
    assert_int_equal(vkl_beta_params_from_sd(&vkl_sd_source_config(src)->sched, &bp, &e), 0);
    assert_int_equal(vkl_noise_table_init(&tab, &bp, VKL_ACP_F32, &e), 0);
    int64_t n;
    float *acp = vkl_test_ref_f32(VEC, "alphas_cumprod", &n);
    assert_int_equal(n, tab.n);
    for (int64_t i = 0; i < n; i++) assert_true(fabs(tab.alphas_cumprod[i] - acp[i]) <= 1e-5 * acp[i]);
    float *x0 = vkl_test_ref_f32(VEC, "x0", &n), *noise = vkl_test_ref_f32(VEC, "noise", &n);
    float *want = vkl_test_ref_f32(VEC, "noisy_latents", &n), *snrw = vkl_test_ref_f32(VEC, "minsnr_weight", &n);
    int32_t *ts = vkl_test_ref_i32(VEC, "timesteps", &n);
    int64_t per = 4 * 16 * 16;
    float *got = malloc(sizeof(float) * 2 * (size_t)per);
    for (int b = 0; b < 2; b++) {
        double a = tab.alphas_cumprod[ts[b]], sa = sqrt(a), sb = sqrt(1 - a), snr = a / (1 - a);
        for (int64_t k = 0; k < per; k++) got[b * per + k] = (float)(sa * x0[b * per + k] + sb * noise[b * per + k]);
        float w = (float)(fmin(snr, 5.0) / snr);
        assert_true(fabs(w - snrw[b]) <= 1e-5 * snrw[b]);
    }
    vkl_test_assert_scaled("noisy latents", got, want, 2 * (size_t)per, 1e-5);
    free(got); free(x0); free(noise); free(want); free(snrw); free(ts); free(acp);
    vkl_noise_table_free(&tab);
    vkl_sd_source_close(src);
}

/* A new network on SDXL's attention projections is named exactly as the
 * kit's kohya file (SGM block numbering: lora_unet_input_blocks_4_1_...),
 * with the same shapes. */
static void new_network_names(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(INIT);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(MODEL), NULL, &src, &e), 0);
    vkl_lora mine, kit;
    if (vkl_lora_init_sd(vkl_sd_source_config(src), vkl_lora_select_unet_attention, NULL, 4, 2.0f, 1, 0, &mine, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(vkl_lora_load(vkl_test_shared_path(INIT), NULL, &kit, &e), 0);
    assert_int_equal(mine.n, kit.n);
    for (int i = 0; i < mine.n; i++) {
        const vkl_lora_module *m = &mine.m[i], *k = NULL;
        for (int j = 0; j < kit.n && !k; j++)
            if (!strcmp(kit.m[j].kname, m->kname)) k = &kit.m[j];
        if (!k) fail_msg("%s (%s) is not in the kit's kohya file", m->kname, m->name);
        for (int r = 0; r < VKL_LORA_ROLES; r++) {
            assert_int_equal(m->t[r].ndim, k->t[r].ndim);
            for (int d = 0; d < m->t[r].ndim; d++) assert_int_equal(m->t[r].shape[d], k->t[r].shape[d]);
        }
    }
    vkl_lora_free(&mine);
    vkl_lora_free(&kit);
    vkl_sd_source_close(src);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(noise_schedule),
        cmocka_unit_test(new_network_names),
        cmocka_unit_test(loss_and_gradients),
        cmocka_unit_test(adamw_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
