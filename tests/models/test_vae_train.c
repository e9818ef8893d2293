/* VAE training (train/vae_train_step.h, train/vae_trainer.h):
 *  - the step's loss, reconstruction and KL terms against the same loss put
 *    together on the host from the encoder's moments and the decoder's output
 *    (clamped log-variance, posterior sample, KL, l1 / mse means);
 *  - gradients of weights all over a tiny random VAE (encoder, stride-2
 *    downsampler, mid-block attention, quant_conv's mean and log-variance
 *    halves, a clamped log-variance, decoder) against central differences of
 *    the step's loss with eps fixed;
 *  - a short training run on the shared emoji set lowers the reconstruction
 *    loss, and the folder it writes loads both as a lone VAE folder and as the
 *    vae/ of a diffusers model through the ordinary loader, reproducing the
 *    images at the PSNR the run reported. */
#include "vkl_test.h"
#include "ops.h"
#include "sd/pipeline.h"
#include "sd/sd_model.h"
#include "sd/sd_random.h"
#include "sd/vae_decode.h"
#include "sd/vae_folder.h"
#include "train/dataset.h"
#include "train/vae_trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int rc, const vkl_err *e)
{
    if (rc) {
        print_error("%s\n", e->msg);
        fail();
    }
}

/* two levels (down-sampling 2) of 8 and 16 channels, 4 groups, 4 latent channels */
static void tiny_config(vkl_sd_vae_config *v)
{
    vkl_vae_config_default(v);
    v->n_levels = 2;
    v->block_out_channels[0] = 8;
    v->block_out_channels[1] = 16;
    v->norm_num_groups = 4;
    v->latent_channels = 4;
    v->layers_per_block = 1;
}

enum { B = 2, S = 8, Z = 4, L = S / 2 };

/* The step's loss put together on the host: moments from an encoder graph,
 * z = mean + exp(clamp(logvar) / 2) eps, the decoder's output for that z. */
static void host_loss(vkl_ctx *c, const vkl_vae *vae, const float *img, const float *eps, vkl_vae_loss_kind kind,
                      float klw, double *loss, double *rec, double *kl, double dbias[3])
{
    vkl_err e = {{0}};
    vkl_tensor *ti = vkl_test_upload(c, VKL_F32, 4, (int64_t[]){B, 3, S, S}, img);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *m = vkl_vae_encode(g, vae, ti);
    vkl_graph_keep(g, m);
    vkl_test_run_graph(g);
    float *mom = vkl_test_download(c, m);
    vkl_graph_free(g);
    size_t nl = (size_t)Z * L * L;
    float *z = malloc(sizeof(float) * B * nl);
    double kls = 0;
    for (int b = 0; b < B; b++)
        for (size_t i = 0; i < nl; i++) {
            double mu = mom[(size_t)b * 2 * nl + i], lv = mom[(size_t)b * 2 * nl + nl + i];
            lv = lv < -30 ? -30 : lv > 20 ? 20 : lv;
            z[b * nl + i] = (float)(mu + exp(0.5 * lv) * eps[b * nl + i]);
            kls += 0.5 * (mu * mu + exp(lv) - 1 - lv);
        }
    vkl_tensor *tz = vkl_test_upload(c, VKL_F32, 4, (int64_t[]){B, Z, L, L}, z);
    g = vkl_graph_new(c);
    vkl_tensor *r = vkl_vae_decode(g, vae, tz);
    vkl_graph_keep(g, r);
    vkl_test_run_graph(g);
    float *out = vkl_test_download(c, r);
    vkl_graph_free(g);
    double rs = 0;
    size_t np = (size_t)B * 3 * S * S;
    /* the output bias's gradient: the loss's derivative summed over a channel */
    for (int ch = 0; ch < 3; ch++) dbias[ch] = 0;
    for (size_t i = 0; i < np; i++) {
        double d = (double)out[i] - img[i];
        rs += kind == VKL_VAE_LOSS_MSE ? d * d : fabs(d);
        dbias[i / (S * S) % 3] += (kind == VKL_VAE_LOSS_MSE ? 2 * d : (d > 0) - (d < 0)) / (double)np;
    }
    *rec = rs / np;
    *kl = kls / (B * nl);
    *loss = *rec + klw * *kl;
    (void)e;
    free(mom);
    free(z);
    free(out);
    vkl_tensor_free(ti);
    vkl_tensor_free(tz);
}

static void set_elem(vkl_ctx *c, vkl_tensor *t, int64_t i, float v)
{
    vkl_err e = {{0}};
    float *x = vkl_test_download(c, t);
    x[i] = v;
    check(vkl_tensor_upload(c, t, x, VKL_F32, &e), &e);
    free(x);
}

static float get_elem(vkl_ctx *c, vkl_tensor *t, int64_t i)
{
    float *x = vkl_test_download(c, t), v = x[i];
    free(x);
    return v;
}

typedef struct { const char *name; int64_t index; } pick;

static void gradients_match(vkl_vae_loss_kind kind, float klw, const pick *picks, int npicks)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_vae_config cfg;
    tiny_config(&cfg);
    vkl_weights *w = vkl_weights_new();
    check(vkl_vae_random_weights(c, &cfg, VKL_F32, 7, w, &e), &e);
    vkl_vae vae = {&cfg, w};
    /* log-variance channel 1 far below the clamp: its bias gets no gradient
     * through the log-variance (above the clamp, exp(20) in the KL would
     * swamp every other term: clamp_high checks that side) */
    vkl_tensor *qb = vkl_weights_find(w, "vae.quant_conv.bias");
    set_elem(c, qb, Z + 1, -35.0f);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 3);
    float img[B * 3 * S * S], eps[B * Z * L * L];
    vkl_test_fill(&r, img, sizeof img / sizeof *img, -1, 1);
    vkl_test_fill(&r, eps, sizeof eps / sizeof *eps, -2, 2);
    vkl_vae_train_opts o = {kind, klw, NULL};
    vkl_vae_train_step *s;
    check(vkl_vae_train_step_new(c, &vae, B, S, S, &o, &s, &e), &e);
    assert_int_equal(vkl_vae_train_step_eps_count(s), sizeof eps / sizeof *eps);
    vkl_vae_losses got;
    check(vkl_vae_train_step_run(s, img, eps, 1, 0, &got, &e), &e);
    double hl, hr, hk, hdb[3];
    host_loss(c, &vae, img, eps, kind, klw, &hl, &hr, &hk, hdb);
    print_message("%s loss %.7g (host %.7g), rec %.7g (%.7g), kl %.7g (%.7g)\n", vkl_vae_loss_name(kind), got.loss, hl,
                  got.rec, hr, got.kl, hk);
    assert_true(fabs(got.rec - hr) <= 1e-5 * fabs(hr));
    assert_true(fabs(got.kl - hk) <= 1e-5 * fabs(hk));
    assert_true(fabs(got.loss - hl) <= 1e-5 * fabs(hl));
    /* the loss head's backward, exactly: conv_out's bias gradient is the
     * reconstruction loss's derivative summed per channel (l1: a sign, which
     * a pixel at |d| ~ 1e-7 may flip between host and device: 2/N apart) */
    vkl_tensor *ob = vkl_weights_find(w, "vae.decoder.conv_out.bias");
    for (int i = 0; i < vkl_vae_train_step_param_count(s); i++)
        if (vkl_vae_train_step_param(s, i) == ob) {
            float *g = vkl_test_download(c, vkl_vae_train_step_grad(s, i));
            for (int ch = 0; ch < 3; ch++) {
                print_message("  conv_out.bias[%d] grad %+.6e, host %+.6e\n", ch, g[ch], hdb[ch]);
                assert_true(fabs(g[ch] - hdb[ch]) <= 1e-4 * fabs(hdb[ch]) + 1e-6 +
                                                         (kind == VKL_VAE_LOSS_L1 ? 2.5 / (B * 3 * S * S) : 0));
            }
            free(g);
        }
    for (int k = 0; k < npicks; k++) {
        vkl_tensor *want = vkl_weights_find(w, picks[k].name);
        int idx = -1;
        for (int i = 0; i < vkl_vae_train_step_param_count(s); i++)
            if (vkl_vae_train_step_param(s, i) == want) idx = i;
        if (idx < 0) {
            print_error("no parameter %s\n", picks[k].name);
            fail();
        }
        vkl_tensor *p = vkl_vae_train_step_param(s, idx);
        /* the gradient of the unperturbed weights (the last run perturbed the
         * previous pick) */
        check(vkl_vae_train_step_run(s, img, eps, 1, 0, NULL, &e), &e);
        float analytic = get_elem(c, vkl_vae_train_step_grad(s, idx), picks[k].index);
        float w0 = get_elem(c, p, picks[k].index), h = 4e-2f * fmaxf(fabsf(w0), 0.05f);
        /* Richardson: central differences at h and h/2 combined cancel the h^2
         * term, so h can be large, which keeps the other error small: the
         * f32 loss moves by ~1e-6 of itself in rounding alone between runs
         * with different weights, ~1e-6 |loss| / h in the difference */
        double fdh[2];
        for (int r2 = 0; r2 < 2; r2++) {
            float hh = r2 ? h / 2 : h;
            vkl_vae_losses lp, lm;
            set_elem(c, p, picks[k].index, w0 + hh);
            check(vkl_vae_train_step_run(s, img, eps, 1, 0, &lp, &e), &e);
            set_elem(c, p, picks[k].index, w0 - hh);
            check(vkl_vae_train_step_run(s, img, eps, 1, 0, &lm, &e), &e);
            fdh[r2] = ((double)lp.loss - lm.loss) / (2.0 * hh);
        }
        set_elem(c, p, picks[k].index, w0);
        double fd = (4 * fdh[1] - fdh[0]) / 3;
        print_message("  %-55s [%lld] grad %+.6e  central difference %+.6e\n", picks[k].name,
                      (long long)picks[k].index, analytic, fd);
        double tol = 3e-2 * fabs(fd) + 4e-6 * fabs(got.loss) / h;
        if (!(fabs(analytic - fd) <= tol)) {
            print_error("gradient of %s[%lld]: %g, central difference %g\n", picks[k].name,
                        (long long)picks[k].index, analytic, fd);
            fail();
        }
    }
    vkl_vae_train_step_free(s);
    vkl_weights_free(w);
    vkl_test_ctx_done(c);
}

static const pick picks_mse[] = {
    {"vae.encoder.conv_in.weight", 5},
    {"vae.encoder.down_blocks.0.resnets.0.conv1.weight", 40},
    {"vae.encoder.down_blocks.0.downsamplers.0.conv.weight", 17},
    {"vae.encoder.mid_block.attentions.0.to_q.weight", 3},
    {"vae.encoder.mid_block.attentions.0.to_k.weight", 30},
    {"vae.encoder.mid_block.attentions.0.group_norm.weight", 2},
    {"vae.encoder.conv_norm_out.bias", 5},
    {"vae.quant_conv.weight", 1},      /* mean channel 0 */
    {"vae.quant_conv.weight", 8 * 6 + 3}, /* log-variance channel 2 */
    {"vae.quant_conv.bias", 2},
    {"vae.quant_conv.bias", Z + 0},
    {"vae.quant_conv.bias", Z + 1},    /* clamped below */
    {"vae.quant_conv.bias", Z + 3},
    {"vae.post_quant_conv.weight", 6},
    {"vae.decoder.mid_block.attentions.0.to_v.weight", 11},
    {"vae.decoder.mid_block.attentions.0.to_out.0.bias", 4},
    {"vae.decoder.up_blocks.0.upsamplers.0.conv.weight", 100},
    {"vae.decoder.up_blocks.1.resnets.0.norm1.weight", 3},
    {"vae.decoder.up_blocks.1.resnets.0.conv_shortcut.weight", 9},
    {"vae.decoder.conv_out.bias", 1},
};

static void mse_gradients(void **state)
{
    (void)state;
    gradients_match(VKL_VAE_LOSS_MSE, 0.01f, picks_mse, (int)(sizeof picks_mse / sizeof *picks_mse));
}

/* l1's loss and its head's gradient (above); its kinks (|d| at d = 0) make
 * difference quotients of single weights unreliable at any step f32 allows,
 * and everything behind the head is the mse case's graph. */
static void l1_gradients(void **state)
{
    (void)state;
    gradients_match(VKL_VAE_LOSS_L1, 1e-3f, NULL, 0);
}

/* A log-variance above 20 is clamped there in the sample and the KL (the
 * host's loss clamps; an unclamped 25 would make the KL e^5 times larger). */
static void clamp_high(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_vae_config cfg;
    tiny_config(&cfg);
    vkl_weights *w = vkl_weights_new();
    check(vkl_vae_random_weights(c, &cfg, VKL_F32, 9, w, &e), &e);
    vkl_vae vae = {&cfg, w};
    set_elem(c, vkl_weights_find(w, "vae.quant_conv.bias"), Z + 2, 25.0f);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 4);
    float img[B * 3 * S * S], eps[B * Z * L * L];
    vkl_test_fill(&r, img, sizeof img / sizeof *img, -1, 1);
    vkl_test_fill(&r, eps, sizeof eps / sizeof *eps, -1e-9f, 1e-9f);
    vkl_vae_train_opts o = {VKL_VAE_LOSS_MSE, 1e-6f, NULL};
    vkl_vae_train_step *s;
    check(vkl_vae_train_step_new(c, &vae, B, S, S, &o, &s, &e), &e);
    vkl_vae_losses got;
    check(vkl_vae_train_step_run(s, img, eps, 1, 0, &got, &e), &e);
    double hl, hr, hk, hdb[3];
    host_loss(c, &vae, img, eps, VKL_VAE_LOSS_MSE, 1e-6f, &hl, &hr, &hk, hdb);
    print_message("kl %.7g (host %.7g), rec %.7g (%.7g)\n", got.kl, hk, got.rec, hr);
    assert_true(hk > 1e7);
    assert_true(fabs(got.kl - hk) <= 1e-5 * hk);
    assert_true(fabs(got.rec - hr) <= 1e-4 * hr);
    vkl_vae_train_step_free(s);
    vkl_weights_free(w);
    vkl_test_ctx_done(c);
}

/* ---- a short run ---- */

static double csv_mean_rec(const char *csv, int from, int to)
{
    double sum = 0;
    int n = 0;
    for (const char *p = strchr(csv, '\n'); p && p[1]; p = strchr(p + 1, '\n')) {
        int step;
        double loss, rec;
        if (sscanf(p + 1, "%d,%lf,%lf", &step, &loss, &rec) == 3 && step >= from && step <= to) {
            sum += rec;
            n++;
        }
    }
    return n ? sum / n : NAN;
}

static double psnr_of(const float *a, const float *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) {
        double y = a[i] < -1 ? -1 : a[i] > 1 ? 1 : a[i], d = 0.5 * (y - b[i]);
        se += d * d;
    }
    return 10 * log10(1.0 / (se / n));
}

/* A two-level VAE (16, 32 channels) trained on the 16 test emoji at 16 px,
 * batch 8: its config file written into tmp (cfgpath's buffer, 320 bytes),
 * the run's settings into tc with the output out. */
static void tiny_run(const char *tmp, char *cfgpath, const char *out, vkl_vae_train_config *tc)
{
    snprintf(cfgpath, 320, "%s/vae.json", tmp);
    FILE *f = fopen(cfgpath, "w");
    assert_non_null(f);
    fputs("{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [16, 32], \"layers_per_block\": 1, "
          "\"latent_channels\": 4, \"norm_num_groups\": 8}\n", f);
    fclose(f);
    vkl_vae_train_config_default(tc);
    tc->images = vkl_test_shared_path("data/noto-emoji/test16-128px");
    tc->config = cfgpath;
    tc->output = out;
    tc->size = 16;
    tc->batch = 8;
}

static void short_run_learns_and_loads(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/noto-emoji/test16-128px");
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char tmp[256], cfgpath[320], out[320], cmd[4096];
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(out, sizeof out, "%s/vae", tmp);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_vae_train_config tc;
    tiny_run(tmp, cfgpath, out, &tc);
    tc.steps = 150;
    tc.lr = 2e-3f;
    tc.seed = 1;
    vkl_vae_train_result res;
    check(vkl_vae_train_run(c, &tc, NULL, NULL, &res, &e), &e);
    assert_int_equal(res.steps, 150);
    assert_int_equal(res.images, 16);
    char *csv = vkl_test_slurp(out, "train_log.csv");
    assert_non_null(csv);
    assert_non_null(strstr(csv, "step,loss,rec,kl,lr,seconds\n"));
    double first = csv_mean_rec(csv, 1, 1), last = csv_mean_rec(csv, 141, 150);
    free(csv);
    print_message("l1 reconstruction loss: step 1 %.4f, steps 141-150 %.4f; PSNR %.2f dB, scaling factor %.4f, "
                  "%.2f s per step\n", first, last, res.psnr, res.scaling_factor, res.seconds_per_step);
    /* measured on lavapipe: 0.734 at step 1, 0.132 over steps 141-150 and
     * 20.1 dB; the bounds leave ~20% for other devices' rounding, and a run
     * that learnt nothing (a broken gradient) stays near the first value */
    assert_true(last < 0.16);
    assert_true(last < 0.25 * first);
    assert_true(res.psnr > 18.5);

    /* the folder as a lone VAE: the same measurement again */
    vkl_sd_vae_config vc;
    vkl_weights *w = vkl_weights_new();
    check(vkl_vae_folder_load(c, out, VKL_F32, &vc, w, &e), &e);
    assert_true(fabsf(vc.scaling_factor - res.scaling_factor) <= 1e-6f * res.scaling_factor);
    assert_int_equal(vc.n_levels, 2);
    assert_int_equal(vc.sample_size, 16);
    vkl_weights_free(w);
    char *js = vkl_test_slurp(out, "config.json");
    assert_non_null(strstr(js, "\"shift_factor\":\tnull"));
    free(js);

    /* the folder as the vae/ of a diffusers model, through the ordinary loader */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/model' && cp -r '%s'/* '%s/model/' && rm -rf '%s/model/vae' && "
                              "mkdir '%s/model/vae' && cp '%s/config.json' '%s/diffusion_pytorch_model.safetensors' "
                              "'%s/model/vae/'",
             tmp, vkl_test_shared_path("refkit/sd/tiny-sd"), tmp, tmp, tmp, out, out, tmp);
    assert_int_equal(system(cmd), 0);
    char model[320];
    snprintf(model, sizeof model, "%s/model", tmp);
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    vkl_sd_model *m;
    check(vkl_sd_model_load(c, model, &mo, &m, &e), &e);
    assert_true(fabsf(m->cfg->vae.scaling_factor - res.scaling_factor) <= 1e-6f * res.scaling_factor);
    vkl_dataset_opts dopt;
    vkl_dataset_opts_default(&dopt);
    dopt.images_dir = tc.images;
    dopt.resolution = 16;
    dopt.bucket = 0;
    vkl_dataset *ds;
    check(vkl_dataset_open(&dopt, &ds, &e), &e);
    size_t per = 3 * 16 * 16;
    float *img = malloc(sizeof(float) * per * 16), *lat = malloc(sizeof(float) * 4 * 8 * 8 * 16);
    float *rec = malloc(sizeof(float) * per * 16);
    for (int i = 0; i < 16; i++) {
        float *chw;
        int iw, ih;
        check(vkl_dataset_load_image(ds, i, 0, &chw, &iw, &ih, &e), &e);
        memcpy(img + per * i, chw, sizeof(float) * per);
        free(chw);
    }
    check(vkl_sd_encode_image(m, img, 16, 16, 16, lat, &e), &e);
    /* the scaled latents have unit standard deviation over the set, by construction */
    double s1 = 0, s2 = 0;
    for (int i = 0; i < 4 * 8 * 8 * 16; i++) {
        s1 += lat[i];
        s2 += (double)lat[i] * lat[i];
    }
    double n = 4 * 8 * 8 * 16, sd = sqrt(s2 / n - (s1 / n) * (s1 / n));
    print_message("scaled latents: std %.4f\n", sd);
    assert_true(fabs(sd - 1) < 1e-3);
    check(vkl_sd_decode(m, lat, 16, 8, 8, rec, &e), &e);
    double p = psnr_of(rec, img, per * 16);
    print_message("encode + decode through the model loader: PSNR %.2f dB\n", p);
    assert_true(fabs(p - res.psnr) < 0.01);
    free(img);
    free(lat);
    free(rec);
    vkl_dataset_free(ds);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(tmp);
}

/* The run in parts (vae_trainer.h), driven as a caller would: position,
 * save_due on --save-every steps, a checkpoint that writes the state and
 * the VAE folder, a step past the last refused, finish; the log is the one
 * vkl_vae_train_run writes for the same settings. */
static void parts_drive_the_loop(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/noto-emoji/test16-128px");
    char tmp[256], cfgpath[320], out[320], out2[320];
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(out, sizeof out, "%s/parts", tmp);
    snprintf(out2, sizeof out2, "%s/run", tmp);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_vae_train_config tc;
    tiny_run(tmp, cfgpath, out, &tc);
    tc.steps = 4;
    tc.save_every = 2;
    tc.seed = 3;
    vkl_vae_trainer *t = NULL;
    check(vkl_vae_trainer_open(c, &tc, &t, &e), &e);
    int step = -1, total = 0;
    vkl_vae_trainer_position(t, &step, &total);
    assert_int_equal(step, 0);
    assert_int_equal(total, 4);
    for (int k = 1; k <= 4; k++) {
        vkl_vae_train_report r;
        check(vkl_vae_trainer_step(t, &r, &e), &e);
        assert_int_equal(r.step, k);
        assert_int_equal(r.save_due, k == 2);
        if (!r.save_due) continue;
        check(vkl_vae_trainer_checkpoint(t, &e), &e);
        check(vkl_vae_trainer_checkpoint(t, &e), &e); /* once per step */
        char *latest = vkl_test_slurp(vkl_vae_trainer_state_dir(t), "latest");
        assert_non_null(latest);
        assert_non_null(strstr(latest, "2"));
        free(latest);
        char *cfg = vkl_test_slurp(out, "config.json"); /* the VAE folder of step 2 */
        assert_non_null(cfg);
        free(cfg);
    }
    vkl_vae_train_report r;
    assert_int_equal(vkl_vae_trainer_step(t, &r, &e), -1);
    assert_non_null(strstr(e.msg, "past the last"));
    e.msg[0] = 0;
    vkl_vae_train_result res;
    check(vkl_vae_trainer_finish(t, &res, &e), &e);
    assert_int_equal(res.steps, 4);
    assert_true(res.psnr > 0 && res.scaling_factor > 0);
    vkl_vae_trainer_close(t);
    tc.output = out2;
    check(vkl_vae_train_run(c, &tc, NULL, NULL, NULL, &e), &e);
    char *a = vkl_test_slurp(out, "train_log.csv"), *b = vkl_test_slurp(out2, "train_log.csv");
    assert_non_null(a);
    assert_non_null(b);
    vkl_test_csv_first_columns(a, 5); /* all but the seconds */
    vkl_test_csv_first_columns(b, 5);
    assert_string_equal(a, b);
    free(a);
    free(b);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mse_gradients),
        cmocka_unit_test(l1_gradients),
        cmocka_unit_test(clamp_high),
        cmocka_unit_test(short_run_learns_and_loads),
        cmocka_unit_test(parts_drive_the_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
