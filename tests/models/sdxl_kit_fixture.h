/* The reference kit's SDXL training case (refkit/sdxl/vectors/train_lora.*)
 * as a fixture shared by the tests that put the text encoders in the graph
 * (test_sdxl_full_grad.c, test_sdxl_train_te.c): the tiny SDXL's UNet and
 * both encoders in f32, the kit's initial UNet adapter, and the step's
 * inputs as token ids (the kit's batch of 2 at 16x16 latents). */
#ifndef SDXL_KIT_FIXTURE_H
#define SDXL_KIT_FIXTURE_H

#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "sd/sd_weights.h"
#include "train/sd_train_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/train_lora.safetensors"
#define INIT "refkit/sdxl/vectors/lora/train_lora_init.safetensors"

typedef struct {
    vkl_ctx *c;
    vkl_sd_source *src;
    const vkl_sd_config *cfg;
    vkl_weights *w;
    vkl_lora lora;
    vkl_lora_set *set;
    vkl_unet unet;
    vkl_clip_text te, te2;
    float *noisy, *t, *target, *time_ids;
    int32_t ids[2 * 2 * 77];
} sdxl_kit;

static const vkl_sd_train_shape shape = {2, 4, 16, 16, 77, 80, 32};

/* The context, the weights and the kit's UNet adapter in k->lora; tg: the
 * model's adapter targets, for the caller to add modules from and free. */
static void sdxl_kit_open(sdxl_kit *k, vkl_lora_targets *tg)
{
    memset(k, 0, sizeof *k);
    k->c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path("refkit/sdxl/tiny-sdxl"), NULL, &k->src, &e), 0);
    k->cfg = vkl_sd_source_config(k->src);
    k->w = vkl_weights_new();
    const char *parts[3] = {"unet.", "text_encoder.", "text_encoder_2."};
    for (int i = 0; i < 3; i++) assert_int_equal(vkl_sd_load_weights(k->c, k->src, parts[i], VKL_F32, k->w, &e), 0);
    memset(tg, 0, sizeof *tg);
    assert_int_equal(vkl_lora_targets_from_sd(k->cfg, tg, &e), 0);
    vkl_lora_opts lo = {tg, 0, NULL, 0};
    if (vkl_lora_load(vkl_test_shared_path(INIT), &lo, &k->lora, &e)) fail_msg("%s", e.msg);
}

/* k->lora as the adapter set, the UNet and the encoders over it (the
 * encoders read the set only with te_adapted), and the kit's batch. */
static void sdxl_kit_build(sdxl_kit *k, int te_adapted)
{
    vkl_err e = {{0}};
    vkl_lora_use use = {&k->lora, 1.0f, 1.0f};
    if (vkl_lora_set_build(k->c, &use, 1, &k->set, &e)) fail_msg("%s", e.msg);
    k->unet = (vkl_unet){&k->cfg->unet, k->w, k->set, 1};
    k->te = (vkl_clip_text){&k->cfg->te[0], k->w, "text_encoder.", te_adapted ? k->set : NULL};
    k->te2 = (vkl_clip_text){&k->cfg->te[1], k->w, "text_encoder_2.", te_adapted ? k->set : NULL};
    int64_t n;
    k->noisy = vkl_test_ref_f32(VEC, "noisy_latents", &n);
    k->target = vkl_test_ref_f32(VEC, "noise", &n);
    k->time_ids = vkl_test_ref_f32(VEC, "time_ids", &n);
    int32_t *ts = vkl_test_ref_i32(VEC, "timesteps", &n);
    k->t = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) k->t[i] = (float)ts[i];
    free(ts);
    for (int j = 0; j < 2; j++) {
        int32_t *ids = vkl_test_ref_i32(VEC, j ? "input_ids_2" : "input_ids", &n);
        assert_int_equal(n, 2 * 77);
        memcpy(k->ids + j * 2 * 77, ids, sizeof(int32_t) * 2 * 77);
        free(ids);
    }
}

/* The loss of step s on the kit's batch. */
static float sdxl_kit_loss(sdxl_kit *k, vkl_sd_train_step *s)
{
    vkl_err e = {{0}};
    vkl_sd_train_batch b = {k->noisy, k->t, NULL, k->target, NULL, k->ids, NULL, k->time_ids};
    float loss;
    if (vkl_sd_train_step_run_batch(s, &b, 1, 0, &loss, &e)) fail_msg("%s", e.msg);
    return loss;
}

static void sdxl_kit_close(sdxl_kit *k)
{
    free(k->noisy); free(k->target); free(k->t); free(k->time_ids);
    vkl_lora_set_free(k->set);
    vkl_lora_free(&k->lora);
    vkl_weights_free(k->w);
    vkl_sd_source_close(k->src);
    vkl_test_ctx_done(k->c);
}

#endif
