/* Full training's weight gradients (--network full) against the reference
 * kit. The kit's LoRA training case (refkit/sd/vectors/train_lora) holds
 * PyTorch's gradients of the adapters' factors; for a linear module with
 * y = (W + s B A) x the factors' gradients follow from the weight's,
 * G = dL/dW:  dL/dB = s G A^T  and  dL/dA = s B^T G. So the step is built
 * with the kit's adapter applied and every UNet weight as a parameter, and
 * each adapted weight's gradient is checked through both products. Weights
 * no adapter touches (convolutions, norms, biases, embeddings) are checked
 * against central differences of the loss. */
#include "sd_train_fixture.h"

#include "train/full_network.h"

static double rel_l2(const double *got, const float *want, int64_t n, double *scale)
{
    double num = 0, den = 0;
    *scale = 0;
    for (int64_t k = 0; k < n; k++) {
        double d = got[k] - want[k];
        num += d * d;
        den += (double)want[k] * want[k];
        *scale = fmax(*scale, fabs(want[k]));
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float *download(vkl_ctx *c, vkl_tensor *t)
{
    vkl_err e = {{0}};
    float *x = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    assert_int_equal(vkl_tensor_download(c, t, x, VKL_F32, &e), 0);
    return x;
}

/* The weight gradients of the adapted linear modules through the factors' products. */
static void check_adapted(fixture *f, const vkl_full_net *net, vkl_sd_train_step *s)
{
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < net->n; i++) {
        size_t len = strlen(net->names[i]);
        if (len < 8 || strcmp(net->names[i] + len - 7, ".weight")) continue;
        char module[512];
        snprintf(module, sizeof module, "%.*s", (int)(len - 7), net->names[i]);
        const vkl_lora_module *m = NULL;
        for (int k = 0; k < f->lora.n && !m; k++)
            if (f->lora.m[k].name && !strcmp(f->lora.m[k].name, module)) m = &f->lora.m[k];
        if (!m || vkl_sd_train_step_param(s, i)->ndim != 2) continue;
        const vkl_lora_tensor *A = &m->t[VKL_LORA_DOWN], *B = &m->t[VKL_LORA_UP];
        int64_t out = B->shape[0], r = A->shape[0], in = A->shape[1];
        float *G = download(f->c, vkl_sd_train_step_grad(s, i));
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
        double scale;
        snprintf(name, sizeof name, "grad.%s.lora_up.weight", m->kname);
        float *want = vkl_test_ref_f32(VEC, name, &n);
        assert_int_equal(n, out * r);
        double rb = rel_l2(gb, want, n, &scale);
        free(want);
        snprintf(name, sizeof name, "grad.%s.lora_down.weight", m->kname);
        want = vkl_test_ref_f32(VEC, name, &n);
        assert_int_equal(n, r * in);
        double ra = rel_l2(ga, want, n, &scale);
        free(want);
        if (rb > 1e-4 || ra > 1e-4) {
            print_error("%s: weight gradient through B: relative L2 %.3g, through A: %.3g\n", module, rb, ra);
            fail();
        }
        worst = fmax(worst, fmax(ra, rb));
        checked++;
        free(G);
        free(gb);
        free(ga);
    }
    print_message("%d adapted weights: gradients agree with the kit's, worst relative L2 %.3g\n", checked, worst);
    assert_true(checked >= 8);
}

/* Central differences of the loss for the largest gradient elements of
 * weights no adapter touches. */
static void check_unadapted(fixture *f, const vkl_full_net *net, vkl_sd_train_step *s)
{
    static const char *names[] = {"unet.conv_in.weight", "unet.conv_out.bias",
                                  "unet.time_embedding.linear_1.weight",
                                  "unet.down_blocks.0.resnets.0.conv1.weight",
                                  "unet.down_blocks.0.resnets.0.norm1.weight",
                                  "unet.up_blocks.1.attentions.0.transformer_blocks.0.norm2.bias",
                                  "unet.mid_block.resnets.1.conv2.bias", "unet.conv_norm_out.weight"};
    vkl_err e = {{0}};
    for (size_t q = 0; q < sizeof names / sizeof *names; q++) {
        int i = 0;
        while (i < net->n && strcmp(net->names[i], names[q])) i++;
        assert_true(i < net->n);
        vkl_tensor *w = net->params[i];
        int64_t n = vkl_tensor_nelem(w);
        float *g = download(f->c, vkl_sd_train_step_grad(s, i)), *x = download(f->c, w);
        int64_t at = 0;
        for (int64_t k = 1; k < n; k++)
            if (fabsf(g[k]) > fabsf(g[at])) at = k;
        double h = 1e-2, lp, lm;
        float keep = x[at], loss;
        x[at] = (float)(keep + h);
        assert_int_equal(vkl_tensor_upload(f->c, w, x, VKL_F32, &e), 0);
        assert_int_equal(vkl_sd_train_step_run(s, f->noisy, f->t, f->ehs, f->target, NULL, 1, 0, &loss, &e), 0);
        lp = loss;
        x[at] = (float)(keep - h);
        assert_int_equal(vkl_tensor_upload(f->c, w, x, VKL_F32, &e), 0);
        assert_int_equal(vkl_sd_train_step_run(s, f->noisy, f->t, f->ehs, f->target, NULL, 1, 0, &loss, &e), 0);
        lm = loss;
        x[at] = keep;
        assert_int_equal(vkl_tensor_upload(f->c, w, x, VKL_F32, &e), 0);
        double fd = (lp - lm) / (2 * h);
        print_message("%s[%lld]: gradient %.6g, central difference %.6g\n", names[q], (long long)at, g[at], fd);
        /* f32 losses near 1: differences resolve about 1e-6 / h */
        assert_true(fabs(fd - g[at]) <= 0.03 * fabs(g[at]) + 2e-4);
        free(g);
        free(x);
    }
}

static void full_gradients(void **state)
{
    (void)state;
    (void)grad_error; /* the fixture's LoRA comparison; this test compares weight gradients */
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, "default", 0);
    vkl_err e = {{0}};
    vkl_full_net net;
    if (vkl_full_net_init(f.c, f.w, NULL, NULL, 0, &net, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_sd_train_opts o = {0, NULL, NULL, 1.0f, NULL, 0, 0, NULL, net.params, net.names, net.n, NULL};
    vkl_sd_train_step *s;
    if (vkl_sd_train_step_new_ex(f.c, &f.unet, &shape, &o, &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float loss;
    assert_int_equal(vkl_sd_train_step_run(s, f.noisy, f.t, f.ehs, f.target, NULL, 1, 0, &loss, &e), 0);
    check_adapted(&f, &net, s);
    check_unadapted(&f, &net, s);
    vkl_sd_train_step_free(s);
    vkl_full_net_free(&net);
    teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(full_gradients)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
