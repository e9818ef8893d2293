/* The fixed-noise diffusion loss (train/sd_fixed_loss.h) on the tiny SD
 * model and two portraits, against the formula of its header computed here:
 * latents from the VAE, timesteps (j + 1/2) T / n, noise from the seed's
 * Philox stream, noisy = sqrt(acp) x0 + sqrt(1 - acp) e, the caption's text
 * states, one UNet run per image and the mean squared error summed here. Two
 * runs give the same value; another seed another one. */
#include "vkl_test.h"
#include "ops.h"
#include "sd/pipeline.h"
#include "rng.h"
#include "sd/schedule.h"
#include "sd/sd_model.h"
#include "sd/unet.h"
#include "train/sd_fixed_loss.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD "refkit/sd/tiny-sd"
#define IMAGES "data/wesnoth-portraits/test16-128px"
#define N_T 3
#define SEED 7

/* The loss computed here for the dataset's images. */
static double reference(vkl_sd_model *m, const vkl_dataset *d)
{
    vkl_err e = {{0}};
    vkl_beta_params bp;
    vkl_noise_table tab;
    assert_int_equal(vkl_beta_params_from_sd(&m->cfg->sched, &bp, &e), 0);
    assert_int_equal(vkl_noise_table_init(&tab, &bp, VKL_ACP_F32, &e), 0);
    assert_int_equal(m->cfg->sched.prediction, VKL_SD_PRED_EPSILON); /* the target below is the noise */
    int C = m->cfg->unet.in_channels, f = 1 << (m->cfg->vae.n_levels - 1);
    int w = d->buckets[0].reso.w, h = d->buckets[0].reso.h, lh = h / f, lw = w / f;
    size_t per = (size_t)C * lh * lw;
    int T = vkl_sd_text_tokens(m), D = m->cfg->unet.cross_attention_dim;
    float *x0 = malloc(sizeof(float) * per), *noisy = malloc(sizeof(float) * per * N_T),
          *eps = malloc(sizeof(float) * per * N_T), *ctx = malloc(sizeof(float) * (size_t)N_T * T * D), tt[N_T];
    for (int j = 0; j < N_T; j++) tt[j] = (float)(int)((j + 0.5) * tab.n / N_T);
    printf("  timesteps %g %g %g of %d\n", tt[0], tt[1], tt[2], tab.n);
    double sum = 0;
    for (int i = 0; i < d->nimages; i++) {
        float *chw = NULL;
        int iw, ih;
        assert_int_equal(vkl_dataset_load_image(d, i, 0, &chw, &iw, &ih, &e), 0);
        assert_int_equal(vkl_sd_encode_image(m, chw, 1, ih, iw, x0, &e), 0);
        free(chw);
        for (int j = 0; j < N_T; j++) {
            double acp = tab.alphas_cumprod[(int)tt[j]];
            for (size_t k = 0; k < per; k++) {
                float n = vkl_rng_normal_at(SEED, 0x4c48 + ((uint64_t)i << 8), (uint64_t)j * per + k);
                eps[j * per + k] = n;
                noisy[j * per + k] = (float)(sqrt(acp) * x0[k] + sqrt(1 - acp) * n);
            }
        }
        float *text = NULL;
        int chunks = 0;
        if (vkl_sd_encode_prompt(m, d->images[i].caption, 1, 1, 1, &text, &chunks, &e)) fail_msg("%s", e.msg);
        assert_int_equal(chunks, 1);
        for (int j = 0; j < N_T; j++) memcpy(ctx + (size_t)j * T * D, text, sizeof(float) * (size_t)T * D);
        free(text);
        vkl_graph *g = vkl_graph_new(m->ctx);
        vkl_tensor *tx = vkl_test_upload(m->ctx, VKL_F32, 4, (int64_t[]){N_T, C, lh, lw}, noisy);
        vkl_tensor *tt_ = vkl_test_upload(m->ctx, VKL_F32, 1, (int64_t[]){N_T}, tt);
        vkl_tensor *tc = vkl_test_upload(m->ctx, VKL_F32, 3, (int64_t[]){N_T, T, D}, ctx);
        vkl_tensor *y = vkl_unet_forward(g, &m->unet, tx, tt_, tc, NULL);
        vkl_graph_keep(g, y);
        vkl_test_run_graph(g);
        float *pred = vkl_test_download(m->ctx, y);
        double s = 0;
        for (size_t k = 0; k < per * N_T; k++) s += ((double)pred[k] - eps[k]) * ((double)pred[k] - eps[k]);
        sum += s / (double)(per * N_T);
        free(pred);
        vkl_graph_free(g);
        vkl_tensor_free(tx);
        vkl_tensor_free(tt_);
        vkl_tensor_free(tc);
    }
    free(x0);
    free(noisy);
    free(eps);
    free(ctx);
    vkl_noise_table_free(&tab);
    return sum / d->nimages;
}

static void test_fixed_loss(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(SD);
    VKL_REQUIRE_SHARED(IMAGES);
    char dir[512], cmd[2048];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    const char *src = vkl_test_shared_path(IMAGES);
    snprintf(cmd, sizeof cmd, "cp '%s/drakes_burner.png' '%s/drakes_burner.txt' '%s/trolls_troll.png' '%s/trolls_troll.txt' '%s/'",
             src, src, src, src, dir);
    assert_int_equal(system(cmd), 0);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    vkl_sd_model *m = NULL;
    if (vkl_sd_model_load(c, vkl_test_shared_path(SD), &mo, &m, &e)) fail_msg("%s", e.msg);
    vkl_dataset_opts dopt;
    vkl_dataset_opts_default(&dopt);
    dopt.images_dir = dir;
    dopt.resolution = 64;
    dopt.bucket = 0;
    vkl_dataset *d = NULL;
    if (vkl_dataset_open(&dopt, &d, &e)) fail_msg("%s", e.msg);
    assert_int_equal(d->nimages, 2);
    vkl_sd_fixed_loss *l = NULL;
    if (vkl_sd_fixed_loss_new(m, d, N_T, SEED, 0, &l, &e)) fail_msg("%s", e.msg);
    double a, b, other;
    assert_int_equal(vkl_sd_fixed_loss_run(l, &a, &e), 0);
    assert_int_equal(vkl_sd_fixed_loss_run(l, &b, &e), 0);
    assert_true(a == b);
    vkl_sd_fixed_loss_free(l);
    if (vkl_sd_fixed_loss_new(m, d, N_T, SEED + 1, 0, &l, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_sd_fixed_loss_run(l, &other, &e), 0);
    vkl_sd_fixed_loss_free(l);
    double want = reference(m, d);
    printf("  loss %.7f (computed here %.7f; seed %d: %.7f)\n", a, want, SEED + 1, other);
    assert_float_equal(a, want, 1e-5 * want);
    assert_true(fabs(other - a) > 1e-4);
    /* bad settings are refused by name */
    assert_int_equal(vkl_sd_fixed_loss_new(m, d, 0, SEED, 0, &l, &e), -1);
    assert_non_null(strstr(e.msg, "timesteps"));
    vkl_dataset_free(d);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
