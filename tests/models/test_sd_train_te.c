/* Text-encoder LoRA training on the tiny model: with adapters on the CLIP
 * encoder's q/k/v/out_proj and fc1/fc2 (lora_te_ names) the encoder runs in
 * the training graph; its adapter gradients are nonzero and match a central
 * difference of the loss along the gradient direction, and AdamW on the
 * encoder's adapters alone (the UNet's held still by a zero rate) lowers the
 * loss over a few steps at a high rate. */
#include "vkl_test.h"
#include "lora_fixture.h"
#include "lora/lora_apply.h"
#include "sd/sd_weights.h"
#include "train/sd_train_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sd/vectors/train_lora.safetensors"
#define INIT "refkit/sd/vectors/lora/train_lora_init.safetensors"
#define TEVEC "refkit/sd/vectors/text_encoder.safetensors"

typedef struct {
    vkl_ctx *c;
    vkl_sd_source *src;
    vkl_weights *w;
    vkl_lora lora;
    vkl_lora_set *set;
    vkl_unet unet;
    vkl_clip_text te;
    float *noisy, *t, *target;
    int32_t ids[2 * 77];
    int nte; /* text-encoder modules */
} fixture;

static int te_target(const char *name)
{
    return !strncmp(name, "text_encoder.", 13) &&
           (strstr(name, "_proj") || strstr(name, ".mlp.fc1") || strstr(name, ".mlp.fc2"));
}

static void setup(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path("refkit/sd/tiny-sd"), NULL, &f->src, &e), 0);
    const vkl_sd_config *cfg = vkl_sd_source_config(f->src);
    f->w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(f->c, f->src, "unet.", VKL_F32, f->w, &e), 0);
    assert_int_equal(vkl_sd_load_weights(f->c, f->src, "text_encoder.", VKL_F32, f->w, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(cfg, &tg, &e), 0);
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(vkl_test_shared_path(INIT), &lo, &f->lora, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    /* encoder adapters with small random down and up matrices */
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 23);
    for (int i = 0; i < tg.n; i++) {
        const vkl_lora_target *t = &tg.v[i];
        if (!te_target(t->name) || t->ndim != 2) continue;
        vkl_test_add_random_lora(&f->lora, t, &r, 0.1f);
        f->nte++;
    }
    vkl_lora_targets_free(&tg);
    assert_int_equal(f->nte, 6 * cfg->te[0].layers);
    vkl_lora_use use = {&f->lora, 1.0f, 1.0f};
    if (vkl_lora_set_build(f->c, &use, 1, &f->set, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    f->unet = (vkl_unet){&cfg->unet, f->w, f->set, 1};
    f->te = (vkl_clip_text){&cfg->te[0], f->w, "text_encoder.", f->set};
    int64_t n;
    f->noisy = vkl_test_ref_f32(VEC, "noisy_latents", &n);
    f->target = vkl_test_ref_f32(VEC, "target", &n);
    f->t = vkl_test_ref_f32(VEC, "timesteps", &n);
    int32_t *ids = vkl_test_ref_i32(TEVEC, "input_ids", &n);
    assert_true(n >= 2 * 77);
    memcpy(f->ids, ids, sizeof f->ids);
    free(ids);
}

static void teardown(fixture *f)
{
    free(f->noisy); free(f->target); free(f->t);
    vkl_lora_set_free(f->set);
    vkl_lora_free(&f->lora);
    vkl_weights_free(f->w);
    vkl_sd_source_close(f->src);
    vkl_test_ctx_done(f->c);
}

static const vkl_sd_train_shape shape = {2, 4, 16, 16, 77, 32, 0};

static int is_te(const vkl_sd_train_step *s, int i)
{
    return !strncmp(vkl_sd_train_step_param_name(s, i), "text_encoder.", 13);
}

static float run_loss(fixture *f, vkl_sd_train_step *s)
{
    vkl_err e = {{0}};
    vkl_sd_train_batch b = {f->noisy, f->t, NULL, f->target, NULL, f->ids, NULL, NULL};
    float loss;
    if (vkl_sd_train_step_run_batch(s, &b, 1, 0, &loss, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    return loss;
}

static void te_gradient_matches_difference(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    VKL_REQUIRE_SHARED(TEVEC);
    fixture f;
    setup(&f);
    vkl_err e = {{0}};
    vkl_sd_train_opts o = {0, NULL, NULL, 1.0f, &f.te, 0, 0, NULL, NULL, NULL, 0, NULL};
    vkl_sd_train_step *s = NULL;
    if (vkl_sd_train_step_new_ex(f.c, &f.unet, &shape, &o, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    run_loss(&f, s);
    int np = vkl_sd_train_step_param_count(s), seen = 0;
    float **p0 = calloc((size_t)np, sizeof *p0), **g = calloc((size_t)np, sizeof *g);
    double norm2 = 0;
    for (int i = 0; i < np; i++) {
        if (!is_te(s, i)) continue;
        seen++;
        int64_t n = vkl_tensor_nelem(vkl_sd_train_step_param(s, i));
        p0[i] = malloc(sizeof(float) * (size_t)n);
        g[i] = malloc(sizeof(float) * (size_t)n);
        assert_int_equal(vkl_tensor_download(f.c, vkl_sd_train_step_param(s, i), p0[i], VKL_F32, &e), 0);
        assert_int_equal(vkl_tensor_download(f.c, vkl_sd_train_step_grad(s, i), g[i], VKL_F32, &e), 0);
        double t2 = 0;
        for (int64_t k = 0; k < n; k++) t2 += (double)g[i][k] * g[i][k];
        if (!(t2 > 0)) {
            print_error("%s: zero gradient\n", vkl_sd_train_step_param_name(s, i));
            fail();
        }
        norm2 += t2;
    }
    assert_int_equal(seen, 2 * f.nte);
    /* the loss along the normalised gradient u moves at |g| per unit step */
    double gnorm = sqrt(norm2), h = 0.02, lp = 0, lm = 0;
    for (int side = -1; side <= 1; side += 2) {
        for (int i = 0; i < np; i++) {
            if (!p0[i]) continue;
            int64_t n = vkl_tensor_nelem(vkl_sd_train_step_param(s, i));
            float *q = malloc(sizeof(float) * (size_t)n);
            for (int64_t k = 0; k < n; k++) q[k] = (float)(p0[i][k] + side * h * g[i][k] / gnorm);
            assert_int_equal(vkl_tensor_upload(f.c, vkl_sd_train_step_param(s, i), q, VKL_F32, &e), 0);
            free(q);
        }
        *(side < 0 ? &lm : &lp) = run_loss(&f, s);
    }
    double slope = (lp - lm) / (2 * h);
    print_message("text-encoder gradient norm %.6g, central difference along it %.6g\n", gnorm, slope);
    assert_true(fabs(slope - gnorm) <= 0.03 * gnorm);
    for (int i = 0; i < np; i++) {
        free(p0[i]);
        free(g[i]);
    }
    free(p0);
    free(g);
    vkl_sd_train_step_free(s);
    teardown(&f);
}

static void te_training_lowers_the_loss(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    VKL_REQUIRE_SHARED(TEVEC);
    fixture f;
    setup(&f);
    vkl_err e = {{0}};
    vkl_tensor **params;
    int np;
    assert_int_equal(vkl_sd_train_params(f.set, &params, &np, &e), 0);
    float *mult = malloc(sizeof(float) * (size_t)np);
    for (int i = 0; i < np; i++)
        mult[i] = !strncmp(vkl_lora_set_at(f.set, i / 2)->module, "text_encoder.", 13) ? 1.0f : 0.0f;
    vkl_adamw_opts ao = {1e-2f, 0.9f, 0.999f, 1e-8f, 0, 0, 32};
    vkl_adamw *opt = vkl_adamw_new(f.c, params, np, mult, &ao, &e);
    assert_non_null(opt);
    vkl_tensor *unet_param = NULL;
    for (int i = 0; i < np && !unet_param; i++)
        if (mult[i] == 0.0f) unet_param = params[i];
    free(params);
    free(mult);
    int64_t un = vkl_tensor_nelem(unet_param);
    float *u0 = malloc(sizeof(float) * (size_t)un), *u1 = malloc(sizeof(float) * (size_t)un);
    assert_int_equal(vkl_tensor_download(f.c, unet_param, u0, VKL_F32, &e), 0);
    vkl_sd_train_opts o = {0, opt, NULL, 1.0f, &f.te, 0, 0, NULL, NULL, NULL, 0, NULL};
    vkl_sd_train_step *s = NULL;
    if (vkl_sd_train_step_new_ex(f.c, &f.unet, &shape, &o, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_sd_train_batch b = {f.noisy, f.t, NULL, f.target, NULL, f.ids, NULL, NULL};
    float first = 0, loss = 0;
    for (int step = 1; step <= 4; step++) {
        assert_int_equal(vkl_sd_train_step_run_batch(s, &b, step, 1e-2f, &loss, &e), 0);
        print_message("step %d: loss %.6f (before the update)\n", step, loss);
        if (step == 1) first = loss;
    }
    assert_true(loss < first - 1e-3f);
    assert_int_equal(vkl_tensor_download(f.c, unet_param, u1, VKL_F32, &e), 0);
    assert_memory_equal(u0, u1, sizeof(float) * (size_t)un); /* only the encoder learned */
    free(u0);
    free(u1);
    vkl_sd_train_step_free(s);
    vkl_adamw_free(opt);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(te_gradient_matches_difference),
        cmocka_unit_test(te_training_lowers_the_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
