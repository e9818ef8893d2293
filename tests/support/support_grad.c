#include "grad_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The kit's tensor name against got (n values): the relative L2 error. */
static double against_kit(const char *vec, const char *name, const double *got, int64_t n)
{
    int64_t nw;
    float *want = vkl_test_ref_f32(vec, name, &nw);
    assert_int_equal(nw, n);
    double r = rel_l2(got, want, n);
    free(want);
    return r;
}

int vkl_test_check_adapted_weights(vkl_ctx *c, const char *vec, const vkl_lora *lora, const vkl_full_net *net,
                                   vkl_sd_train_step *s, int by_source)
{
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < net->n; i++) {
        const char *pname = net->names[i];
        size_t len = strlen(pname);
        if (len < 8 || strcmp(pname + len - 7, ".weight") || net->params[i]->ndim != 2) continue;
        char module[512];
        snprintf(module, sizeof module, "%.*s", (int)(len - 7), pname);
        const vkl_lora_module *m = vkl_lora_find(lora, module);
        if (!m) continue;
        const vkl_lora_tensor *A = &m->t[VKL_LORA_DOWN], *B = &m->t[VKL_LORA_UP];
        int64_t out = B->shape[0], r = A->shape[0], in = A->shape[1];
        float *G = vkl_test_download(c, vkl_sd_train_step_grad(s, i));
        double *gb = calloc((size_t)(out * r), sizeof *gb), *ga = calloc((size_t)(r * in), sizeof *ga);
        assert_true(gb && ga);
        for (int64_t o = 0; o < out; o++)
            for (int64_t j = 0; j < in; j++) {
                double g = m->scale * G[o * in + j];
                for (int64_t q = 0; q < r; q++) {
                    gb[o * r + q] += g * A->data[q * in + j];
                    ga[q * in + j] += B->data[o * r + q] * g;
                }
            }
        char name[600];
        const char *key = by_source ? m->source : m->kname;
        snprintf(name, sizeof name, "grad.%s.lora_up.weight", key);
        double rb = against_kit(vec, name, gb, out * r);
        snprintf(name, sizeof name, "grad.%s.lora_down.weight", key);
        double ra = against_kit(vec, name, ga, r * in);
        if (rb > 1e-4 || ra > 1e-4) fail_msg("%s: weight gradient through B: relative L2 %.3g, through A: %.3g", module, rb, ra);
        worst = fmax(worst, fmax(ra, rb));
        checked++;
        free(G);
        free(gb);
        free(ga);
    }
    print_message("%d adapted weights: gradients agree with the kit's, worst relative L2 %.3g\n", checked, worst);
    return checked;
}

void vkl_test_check_difference(vkl_ctx *c, const vkl_full_net *net, vkl_sd_train_step *s, const char *name,
                               float (*loss)(void *user), void *user)
{
    int i = 0;
    while (i < net->n && strcmp(net->names[i], name)) i++;
    if (i == net->n) fail_msg("%s is not a parameter", name);
    vkl_err e = {{0}};
    vkl_tensor *w = net->params[i];
    int64_t n = vkl_tensor_nelem(w);
    float *g = vkl_test_download(c, vkl_sd_train_step_grad(s, i)), *x = vkl_test_download(c, w);
    int64_t at = 0;
    for (int64_t k = 1; k < n; k++)
        if (fabsf(g[k]) > fabsf(g[at])) at = k;
    double h = 1e-2;
    float keep = x[at], lp, lm;
    x[at] = (float)(keep + h);
    assert_int_equal(vkl_tensor_upload(c, w, x, VKL_F32, &e), 0);
    lp = loss(user);
    x[at] = (float)(keep - h);
    assert_int_equal(vkl_tensor_upload(c, w, x, VKL_F32, &e), 0);
    lm = loss(user);
    x[at] = keep;
    assert_int_equal(vkl_tensor_upload(c, w, x, VKL_F32, &e), 0);
    double fd = ((double)lp - lm) / (2 * h);
    print_message("%s[%lld]: gradient %.6g, central difference %.6g\n", name, (long long)at, g[at], fd);
    assert_true(g[at] != 0);
    assert_true(fabs(fd - g[at]) <= 0.03 * fabs(g[at]) + 2e-4);
    free(g);
    free(x);
}
