/* The reference kit's SD training case (refkit/sd/vectors/train_lora.*) as
 * a fixture shared by the training-step tests: the tiny UNet with the kit's
 * initial adapter built as a trainable set, and the step's inputs. */
#ifndef SD_TRAIN_FIXTURE_H
#define SD_TRAIN_FIXTURE_H

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

/* the kit's batch: latents [2,4,16,16], text states [2,77,32] */
static const vkl_sd_train_shape shape = {2, 4, 16, 16, 77, 32, 0};

static void setup(fixture *f, const char *profile, int checkpoint)
{
    memset(f, 0, sizeof *f);
    f->c = vkl_test_ctx(profile);
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

/* Gradient i of the step (divided by `divide`) against the kit's tensor
 * "<prefix>.<kohya module>.lora_down/up.weight": the relative L2 error, the
 * largest absolute difference and the reference's largest magnitude. The
 * name compared is written to name. */
static void grad_error(fixture *f, vkl_sd_train_step *s, int i, const char *prefix, float divide, char *name,
                       size_t name_size, double *rel, double *maxd, double *scale)
{
    vkl_err e = {{0}};
    const vkl_lora_slot *slot = vkl_lora_set_at(f->set, i / 2);
    const vkl_lora_module *m = vkl_lora_find(&f->lora, slot->module);
    snprintf(name, name_size, "%s.%s.%s", prefix, m->kname, i % 2 ? "lora_up.weight" : "lora_down.weight");
    int64_t n;
    float *want = vkl_test_ref_f32(VEC, name, &n);
    vkl_tensor *gt = vkl_sd_train_step_grad(s, i);
    assert_int_equal(vkl_tensor_nelem(gt), n);
    float *got = malloc(sizeof(float) * (size_t)n);
    assert_int_equal(vkl_tensor_download(f->c, gt, got, VKL_F32, &e), 0);
    double num = 0, den = 0;
    *maxd = *scale = 0;
    for (int64_t k = 0; k < n; k++) {
        double d = (double)got[k] / divide - want[k];
        *scale = fmax(*scale, fabs(want[k]));
        *maxd = fmax(*maxd, fabs(d));
        num += d * d;
        den += (double)want[k] * want[k];
    }
    *rel = den > 0 ? sqrt(num / den) : sqrt(num);
    free(want);
    free(got);
}

#endif
