/* SDXL full training's weight gradients (--network full --train-te) against
 * the reference kit. The kit's SDXL LoRA case
 * (refkit/sdxl/vectors/train_lora.safetensors) holds PyTorch's loss and the
 * gradients of the UNet adapters' factors for given token ids; for a linear
 * module with y = (W + s B A) x they follow from the weight's gradient
 * G = dL/dW: dL/dB = s G A^T and dL/dA = s B^T G. So the step is built with
 * the kit's adapter applied, the text encoders in the graph, and as
 * parameters exactly the weights `vklora train --network full --train-te`
 * trains (vkl_full_net_sd_wanted: the step refuses a parameter that does not
 * reach the loss, so the rule is checked too); each adapted weight's gradient
 * is checked through both products, and weights no adapter touches (the
 * encoders', the added conditioning's, convolutions) against central
 * differences of the loss. */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "sd/sd_weights.h"
#include "train/full_network.h"
#include "train/sd_train_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/train_lora.safetensors"
#define INIT "refkit/sdxl/vectors/lora/train_lora_init.safetensors"

static const vkl_sd_train_shape shape = {2, 4, 16, 16, 77, 80, 32};

typedef struct {
    vkl_ctx *c;
    vkl_sd_source *src;
    const vkl_sd_config *cfg;
    vkl_weights *w;
    vkl_lora lora;
    vkl_lora_set *set;
    vkl_unet unet;
    vkl_clip_text te, te2;
    vkl_full_net net;
    vkl_sd_train_step *s;
    float *noisy, *t, *target, *time_ids;
    int32_t ids[2 * 2 * 77];
} fixture;

static void setup(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path("refkit/sdxl/tiny-sdxl"), NULL, &f->src, &e), 0);
    f->cfg = vkl_sd_source_config(f->src);
    f->w = vkl_weights_new();
    const char *parts[3] = {"unet.", "text_encoder.", "text_encoder_2."};
    for (int i = 0; i < 3; i++) assert_int_equal(vkl_sd_load_weights(f->c, f->src, parts[i], VKL_F32, f->w, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(f->cfg, &tg, &e), 0);
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(vkl_test_shared_path(INIT), &lo, &f->lora, &e)) fail_msg("%s", e.msg);
    vkl_lora_targets_free(&tg);
    vkl_lora_use use = {&f->lora, 1.0f, 1.0f};
    if (vkl_lora_set_build(f->c, &use, 1, &f->set, &e)) fail_msg("%s", e.msg);
    f->unet = (vkl_unet){&f->cfg->unet, f->w, f->set, 1};
    f->te = (vkl_clip_text){&f->cfg->te[0], f->w, "text_encoder.", NULL};
    f->te2 = (vkl_clip_text){&f->cfg->te[1], f->w, "text_encoder_2.", NULL};
    int64_t n;
    f->noisy = vkl_test_ref_f32(VEC, "noisy_latents", &n);
    f->target = vkl_test_ref_f32(VEC, "noise", &n);
    f->time_ids = vkl_test_ref_f32(VEC, "time_ids", &n);
    int32_t *ts = vkl_test_ref_i32(VEC, "timesteps", &n);
    f->t = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) f->t[i] = (float)ts[i];
    free(ts);
    for (int k = 0; k < 2; k++) {
        int32_t *ids = vkl_test_ref_i32(VEC, k ? "input_ids_2" : "input_ids", &n);
        assert_int_equal(n, 2 * 77);
        memcpy(f->ids + k * 2 * 77, ids, sizeof(int32_t) * 2 * 77);
        free(ids);
    }
    vkl_full_net_sd_rule rule = vkl_full_net_sd_rule_for(f->cfg, 1, 1);
    if (vkl_full_net_init(f->c, f->w, vkl_full_net_sd_wanted, &rule, 0, &f->net, &e)) fail_msg("%s", e.msg);
    vkl_sd_train_opts o = {0, NULL, NULL, 1.0f, &f->te, 0, 0, NULL, f->net.params, f->net.names, f->net.n, &f->te2};
    if (vkl_sd_train_step_new_ex(f->c, &f->unet, &shape, &o, &f->s, &e)) fail_msg("%s", e.msg);
}

static void teardown(fixture *f)
{
    vkl_sd_train_step_free(f->s);
    vkl_full_net_free(&f->net);
    free(f->noisy); free(f->target); free(f->t); free(f->time_ids);
    vkl_lora_set_free(f->set);
    vkl_lora_free(&f->lora);
    vkl_weights_free(f->w);
    vkl_sd_source_close(f->src);
    vkl_test_ctx_done(f->c);
}

static float run_loss(fixture *f)
{
    vkl_err e = {{0}};
    vkl_sd_train_batch b = {f->noisy, f->t, NULL, f->target, NULL, f->ids, NULL, f->time_ids};
    float loss;
    if (vkl_sd_train_step_run_batch(f->s, &b, 1, 0, &loss, &e)) fail_msg("%s", e.msg);
    return loss;
}

static float *download(fixture *f, vkl_tensor *t)
{
    vkl_err e = {{0}};
    float *v = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    assert_int_equal(vkl_tensor_download(f->c, t, v, VKL_F32, &e), 0);
    return v;
}

static double rel_l2(const double *got, const float *want, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t k = 0; k < n; k++) {
        double d = got[k] - want[k];
        num += d * d;
        den += (double)want[k] * want[k];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static int param_index(const fixture *f, const char *name)
{
    for (int i = 0; i < f->net.n; i++)
        if (!strcmp(f->net.names[i], name)) return i;
    return -1;
}

/* Which weights train: the rule's choice, counted per part. */
static void the_rule_picks_what_reaches_the_loss(fixture *f)
{
    int unet = 0, te[2] = {0, 0}, nw = vkl_weights_count(f->w), all_unet = 0;
    for (int i = 0; i < nw; i++) {
        const char *name;
        vkl_weights_at(f->w, i, &name);
        all_unet += !strncmp(name, "unet.", 5);
    }
    for (int i = 0; i < f->net.n; i++) {
        const char *n = f->net.names[i];
        if (!strncmp(n, "unet.", 5)) unet++;
        else te[!strncmp(n, "text_encoder_2.", 15)]++;
    }
    print_message("parameters: %d UNet (of %d), %d + %d encoder weights\n", unet, all_unet, te[0], te[1]);
    assert_int_equal(unet, all_unet);
    assert_true(te[0] > 0 && te[1] > 0);
    char name[160];
    int last = f->cfg->te[0].layers - 1;
    snprintf(name, sizeof name, "text_encoder.text_model.encoder.layers.%d.mlp.fc1.weight", last);
    assert_int_equal(param_index(f, name), -1); /* after the penultimate layer the UNet reads */
    assert_int_equal(param_index(f, "text_encoder.text_model.final_layer_norm.weight"), -1);
    assert_true(param_index(f, "text_encoder_2.text_model.final_layer_norm.weight") >= 0); /* the pooled path */
    assert_true(param_index(f, "text_encoder_2.text_projection.weight") >= 0);
}

static void adapted_weights_match_the_kit(fixture *f)
{
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < f->net.n; i++) {
        const char *pname = f->net.names[i];
        size_t len = strlen(pname);
        if (len < 8 || strcmp(pname + len - 7, ".weight") || f->net.params[i]->ndim != 2) continue;
        char module[512];
        snprintf(module, sizeof module, "%.*s", (int)(len - 7), pname);
        const vkl_lora_module *m = vkl_lora_find(&f->lora, module);
        if (!m) continue;
        const vkl_lora_tensor *A = &m->t[VKL_LORA_DOWN], *B = &m->t[VKL_LORA_UP];
        int64_t out = B->shape[0], r = A->shape[0], in = A->shape[1];
        float *G = download(f, vkl_sd_train_step_grad(f->s, i));
        double *gb = calloc((size_t)(out * r), sizeof *gb), *ga = calloc((size_t)(r * in), sizeof *ga);
        for (int64_t o = 0; o < out; o++)
            for (int64_t j = 0; j < in; j++) {
                double g = m->scale * G[o * in + j];
                for (int64_t q = 0; q < r; q++) {
                    gb[o * r + q] += g * A->data[q * in + j];
                    ga[q * in + j] += B->data[o * r + q] * g;
                }
            }
        char name[600];
        int64_t n;
        snprintf(name, sizeof name, "grad.%s.lora_up.weight", m->source);
        float *want = vkl_test_ref_f32(VEC, name, &n);
        assert_int_equal(n, out * r);
        double rb = rel_l2(gb, want, n);
        free(want);
        snprintf(name, sizeof name, "grad.%s.lora_down.weight", m->source);
        want = vkl_test_ref_f32(VEC, name, &n);
        assert_int_equal(n, r * in);
        double ra = rel_l2(ga, want, n);
        free(want);
        if (rb > 1e-4 || ra > 1e-4) fail_msg("%s: weight gradient through B: relative L2 %.3g, through A: %.3g", module, rb, ra);
        worst = fmax(worst, fmax(ra, rb));
        checked++;
        free(G);
        free(gb);
        free(ga);
    }
    print_message("%d adapted UNet weights: gradients agree with the kit's, worst relative L2 %.3g\n", checked, worst);
    assert_int_equal(checked, 136);
}

/* The largest gradient element of weights no adapter touches against a
 * central difference of the loss. */
static void other_weights_match_differences(fixture *f)
{
    static const char *names[] = {"text_encoder.text_model.embeddings.token_embedding.weight",
                                  "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight",
                                  "text_encoder_2.text_model.encoder.layers.0.mlp.fc1.weight",
                                  "text_encoder_2.text_model.final_layer_norm.weight",
                                  "text_encoder_2.text_projection.weight",
                                  "unet.add_embedding.linear_1.weight",
                                  "unet.conv_in.weight",
                                  "unet.down_blocks.0.resnets.0.norm1.bias"};
    vkl_err e = {{0}};
    for (size_t q = 0; q < sizeof names / sizeof *names; q++) {
        int i = param_index(f, names[q]);
        if (i < 0) fail_msg("%s is not a parameter", names[q]);
        vkl_tensor *w = f->net.params[i];
        int64_t n = vkl_tensor_nelem(w);
        float *g = download(f, vkl_sd_train_step_grad(f->s, i)), *x = download(f, w);
        int64_t at = 0;
        for (int64_t k = 1; k < n; k++)
            if (fabsf(g[k]) > fabsf(g[at])) at = k;
        double h = 1e-2;
        float keep = x[at], lp, lm;
        x[at] = (float)(keep + h);
        assert_int_equal(vkl_tensor_upload(f->c, w, x, VKL_F32, &e), 0);
        lp = run_loss(f);
        x[at] = (float)(keep - h);
        assert_int_equal(vkl_tensor_upload(f->c, w, x, VKL_F32, &e), 0);
        lm = run_loss(f);
        x[at] = keep;
        assert_int_equal(vkl_tensor_upload(f->c, w, x, VKL_F32, &e), 0);
        double fd = ((double)lp - lm) / (2 * h);
        print_message("%s[%lld]: gradient %.6g, central difference %.6g\n", names[q], (long long)at, g[at], fd);
        assert_true(g[at] != 0);
        /* f32 losses near 1: differences resolve about 1e-6 / h */
        assert_true(fabs(fd - g[at]) <= 0.03 * fabs(g[at]) + 2e-4);
        free(g);
        free(x);
    }
}

static void full_gradients(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f);
    the_rule_picks_what_reaches_the_loss(&f);
    float loss = run_loss(&f);
    int64_t n;
    float *want = vkl_test_ref_f32(VEC, "loss", &n);
    vkl_test_assert_scaled("loss, full network with the encoders in the graph", &loss, want, 1, 1e-4);
    free(want);
    adapted_weights_match_the_kit(&f);
    other_weights_match_differences(&f);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(full_gradients)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
