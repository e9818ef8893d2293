/* Training-mode LoHa / LoKr / DoRA layers (lora_apply.h): the gradient of
 * every factor of a linear and a convolution against central differences of
 * the CPU formulas (lora_delta.c, double), and the layer's output against the
 * same formulas. The loss is sum(y * r) for random r, so it is linear in the
 * effective weight: L = <W_eff, G> + <bias, sum r> with G = dL/dW_eff
 * computed once in double. */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "lora/lora_delta.h"
#include "lora/lora_init.h"
#include "train/sd_trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct kcase {
    const char *what;
    vkl_lora_kind kind;
    int wndim;
    int64_t wshape[4];
    struct { vkl_lora_role r; int nd; int64_t s[4]; } f[4];
    int nf;
    vkl_dtype wdtype;
} kcase;

enum { NB = 2, HW = 5 };

static void make_module(const kcase *k, vkl_test_rng *rng, vkl_lora *l, vkl_lora_target *tg)
{
    vkl_err e = {{0}};
    memset(l, 0, sizeof *l);
    vkl_lora_module *m = vkl_lora_add_module(l, &e);
    assert_non_null(m);
    m->name = strdup("m");
    m->kname = strdup("lora_m");
    m->alpha = 3;
    m->has_alpha = 1;
    for (int i = 0; i < k->nf; i++) {
        float *p = vkl_lora_tensor_alloc(&m->t[k->f[i].r], k->f[i].nd, k->f[i].s, &e);
        assert_non_null(p);
        uint64_t n = vkl_lora_tensor_nelem(&m->t[k->f[i].r]);
        /* magnitudes near the base norms keep DoRA's factor around 1 */
        if (k->f[i].r == VKL_LORA_MAG) vkl_test_fill(rng, p, n, 1.0f, 2.0f);
        else vkl_test_fill(rng, p, n, -0.6f, 0.6f);
    }
    memset(tg, 0, sizeof *tg);
    tg->name = "m";
    tg->ndim = k->wndim;
    memcpy(tg->shape, k->wshape, sizeof tg->shape);
    if (vkl_lora_module_finish(m, tg, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m->kind, k->kind);
}

/* <W + delta (or W'), G> in double. */
static double cpu_loss(const vkl_lora_module *m, const float *w, const double *G, uint64_t n)
{
    vkl_err e = {{0}};
    double *d = malloc(sizeof(double) * n), L = 0;
    assert_int_equal(vkl_lora_delta(m, w, d, &e), 0);
    for (uint64_t i = 0; i < n; i++) L += ((double)w[i] + d[i]) * G[i];
    free(d);
    return L;
}

static void run_case(const kcase *k)
{
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 0x1ce5 + (uint64_t)k->kind * 31 + (uint64_t)k->wndim);
    vkl_lora l;
    vkl_lora_target tg;
    make_module(k, &rng, &l, &tg);
    vkl_lora_module *m = &l.m[0];
    int conv = k->wndim == 4;
    int64_t O = k->wshape[0], I = k->wshape[1], KH = conv ? k->wshape[2] : 1, KW = conv ? k->wshape[3] : 1;
    uint64_t wn = (uint64_t)(O * I * KH * KW);
    int64_t xs[4] = {NB, I, HW, HW}, ys[4] = {NB, O, HW, HW};
    int64_t xn = conv ? NB * I * HW * HW : NB * I, yn = conv ? NB * O * HW * HW : NB * O;
    float *w = malloc(sizeof(float) * wn), *x = malloc(sizeof(float) * (size_t)xn), *r = malloc(sizeof(float) * (size_t)yn);
    float bias[64];
    vkl_test_fill(&rng, w, wn, -0.5f, 0.5f);
    vkl_test_round_to(k->wdtype, w, wn);
    vkl_test_fill(&rng, x, (size_t)xn, -1, 1);
    vkl_test_fill(&rng, r, (size_t)yn, -1, 1);
    vkl_test_fill(&rng, bias, (size_t)O, -1, 1);
    /* G = dL/dW_eff: sum over samples (and positions, stride 1, padding 1) of r * x */
    double *G = calloc(wn, sizeof *G), rb = 0;
    for (int64_t b = 0; b < NB; b++)
        for (int64_t o = 0; o < O; o++) {
            if (!conv) {
                for (int64_t i = 0; i < I; i++) G[o * I + i] += (double)r[b * O + o] * x[b * I + i];
                rb += (double)r[b * O + o] * bias[o];
                continue;
            }
            for (int64_t p = 0; p < HW * HW; p++) {
                int64_t oh = p / HW, ow = p % HW;
                double rv = r[((b * O + o) * HW + oh) * HW + ow];
                rb += rv * bias[o];
                for (int64_t i = 0; i < I; i++)
                    for (int64_t u = 0; u < KH; u++)
                        for (int64_t v = 0; v < KW; v++) {
                            int64_t ih = oh + u - 1, iw = ow + v - 1;
                            if (ih < 0 || iw < 0 || ih >= HW || iw >= HW) continue;
                            G[((o * I + i) * KH + u) * KW + v] += rv * x[((b * I + i) * HW + ih) * HW + iw];
                        }
            }
        }

    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_lora_set *set = NULL;
    if (vkl_lora_set_build_train(c, &l, &set, &e)) fail_msg("%s", e.msg);
    const vkl_lora_slot *sl = vkl_lora_set_find(set, "m");
    assert_non_null(sl);
    vkl_tensor *pt[VKL_LORA_ROLES], *gr[VKL_LORA_ROLES];
    vkl_lora_role roles[VKL_LORA_ROLES];
    int np = vkl_lora_slot_params(sl, pt, roles);
    assert_int_equal(np, k->nf);
    vkl_tensor *tw = vkl_test_upload(c, k->wdtype, k->wndim, k->wshape, w);
    vkl_tensor *tx = vkl_test_upload(c, VKL_F32, conv ? 4 : 2, conv ? xs : (int64_t[]){NB, I}, x);
    vkl_tensor *tr = vkl_test_upload(c, VKL_F32, conv ? 4 : 2, conv ? ys : (int64_t[]){NB, O}, r);
    vkl_tensor *tb = vkl_test_upload(c, VKL_F32, 1, (int64_t[]){O}, bias);
    vkl_graph *g = vkl_graph_new(c);
    vkl_conv2d_params cp = {1, 1, 1, 1, 1, 1};
    vkl_tensor *y = conv ? vkl_lora_conv2d(g, set, "m", tx, tw, tb, &cp) : vkl_lora_linear(g, set, "m", tx, tw, tb);
    vkl_tensor *loss = vkl_mul(g, y, tr);
    vkl_graph_keep(g, loss);
    if (vkl_graph_backward(g, loss, NULL, pt, np, gr, &e)) fail_msg("%s", e.msg);
    for (int i = 0; i < np; i++) {
        assert_non_null(gr[i]);
        vkl_graph_keep(g, gr[i]);
    }
    vkl_test_run_graph(g);

    float *lv = vkl_test_download(c, loss);
    double got_L = 0, want_L = cpu_loss(m, w, G, wn) + rb, scale = 0;
    for (int64_t i = 0; i < yn; i++) {
        got_L += lv[i];
        scale += fabs(lv[i]);
    }
    print_message("%s: loss %.6f, CPU %.6f\n", k->what, got_L, want_L);
    assert_true(fabs(got_L - want_L) <= 1e-5 * scale);
    free(lv);

    double worst = 0;
    for (int i = 0; i < np; i++) {
        vkl_lora_tensor *ht = &m->t[roles[i]];
        uint64_t n = vkl_lora_tensor_nelem(ht);
        float *dev = vkl_test_download(c, gr[i]);
        float *fd = malloc(sizeof(float) * n);
        for (uint64_t j = 0; j < n; j++) {
            float p0 = ht->data[j];
            float h = (k->kind == VKL_LORA_KIND_DORA ? 1e-3f : 1e-2f) * fmaxf(1.0f, fabsf(p0));
            ht->data[j] = p0 + h;
            double lp = cpu_loss(m, w, G, wn);
            float up = ht->data[j];
            ht->data[j] = p0 - h;
            double lm = cpu_loss(m, w, G, wn);
            float dn = ht->data[j];
            ht->data[j] = p0;
            fd[j] = (float)((lp - lm) / ((double)up - dn));
        }
        char what[96];
        snprintf(what, sizeof what, "%s d%s", k->what, vkl_lora_role_name(roles[i]));
        /* LoHa and LoKr are linear in every single factor element (exact
         * differences); DoRA's norm leaves an O(h^2) term */
        vkl_test_assert_scaled(what, dev, fd, n, 1e-3);
        double mx = 0, d = 0;
        for (uint64_t j = 0; j < n; j++) {
            mx = fmax(mx, fabs(fd[j]));
            d = fmax(d, fabs((double)dev[j] - fd[j]));
        }
        worst = fmax(worst, mx > 0 ? d / mx : d);
        free(dev);
        free(fd);
    }
    print_message("%s: %d factors, worst scaled gradient error %.3g\n", k->what, np, worst);
    vkl_graph_free(g);
    vkl_tensor_free(tw);
    vkl_tensor_free(tx);
    vkl_tensor_free(tr);
    vkl_tensor_free(tb);
    vkl_lora_set_free(set);
    vkl_test_ctx_done(c);
    vkl_lora_free(&l);
    free(w);
    free(x);
    free(r);
    free(G);
}

#define R(role) VKL_LORA_##role

static void loha(void **state)
{
    (void)state;
    kcase lin = {"loha linear", VKL_LORA_KIND_LOHA, 2, {6, 10}, {{R(HADA_W1A), 2, {6, 2}}, {R(HADA_W1B), 2, {2, 10}},
                 {R(HADA_W2A), 2, {6, 2}}, {R(HADA_W2B), 2, {2, 10}}}, 4, VKL_F32};
    kcase cv = {"loha conv", VKL_LORA_KIND_LOHA, 4, {4, 6, 3, 3}, {{R(HADA_W1A), 2, {4, 2}}, {R(HADA_W1B), 2, {2, 54}},
                {R(HADA_W2A), 2, {4, 2}}, {R(HADA_W2B), 2, {2, 54}}}, 4, VKL_F16};
    run_case(&lin);
    run_case(&cv);
}

static void lokr(void **state)
{
    (void)state;
    kcase lin = {"lokr linear w1, w2_a @ w2_b", VKL_LORA_KIND_LOKR, 2, {6, 10},
                 {{R(LOKR_W1), 2, {2, 2}}, {R(LOKR_W2A), 2, {3, 1}}, {R(LOKR_W2B), 2, {1, 5}}}, 3, VKL_F32};
    kcase lin2 = {"lokr linear w1_a @ w1_b, w2", VKL_LORA_KIND_LOKR, 2, {6, 10},
                  {{R(LOKR_W1A), 2, {2, 1}}, {R(LOKR_W1B), 2, {1, 2}}, {R(LOKR_W2), 2, {3, 5}}}, 3, VKL_F32};
    kcase cv = {"lokr conv w1, w2 4-D", VKL_LORA_KIND_LOKR, 4, {4, 6, 3, 3},
                {{R(LOKR_W1), 2, {2, 2}}, {R(LOKR_W2), 4, {2, 3, 3, 3}}}, 2, VKL_F32};
    kcase cv2 = {"lokr conv w1, w2_a @ w2_b flat", VKL_LORA_KIND_LOKR, 4, {4, 6, 3, 3},
                 {{R(LOKR_W1), 2, {2, 2}}, {R(LOKR_W2A), 2, {2, 1}}, {R(LOKR_W2B), 2, {1, 27}}}, 3, VKL_F16};
    run_case(&lin);
    run_case(&lin2);
    run_case(&cv);
    run_case(&cv2);
}

static void dora(void **state)
{
    (void)state;
    kcase in_axis = {"dora linear, input-axis magnitude", VKL_LORA_KIND_DORA, 2, {6, 10},
                     {{R(DOWN), 2, {2, 10}}, {R(UP), 2, {6, 2}}, {R(MAG), 2, {1, 10}}}, 3, VKL_F16};
    kcase out_axis = {"dora linear, output-axis magnitude", VKL_LORA_KIND_DORA, 2, {6, 10},
                      {{R(DOWN), 2, {2, 10}}, {R(UP), 2, {6, 2}}, {R(MAG), 2, {6, 1}}}, 3, VKL_F32};
    kcase cv = {"dora conv, input-axis magnitude", VKL_LORA_KIND_DORA, 4, {4, 6, 3, 3},
                {{R(DOWN), 4, {2, 6, 3, 3}}, {R(UP), 4, {4, 2, 1, 1}}, {R(MAG), 4, {1, 6, 1, 1}}}, 3, VKL_F32};
    run_case(&in_axis);
    run_case(&out_axis);
    run_case(&cv);
}

/* LyCORIS's factorization(dim, factor), worked by hand from its definition. */
static void lokr_factorization(void **state)
{
    (void)state;
    const int64_t cases[][4] = {{320, -1, 16, 20}, {768, -1, 24, 32}, {64, -1, 8, 8}, {12, -1, 3, 4}, {7, -1, 1, 7},
                                {320, 4, 4, 80}, {320, 3, 2, 160}, {10, 8, 2, 5}, {1280, -1, 32, 40}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int64_t m, n;
        assert_int_equal(vkl_lora_factorization(cases[i][0], (int)cases[i][1], &m, &n), 0);
        if (m != cases[i][2] || n != cases[i][3])
            fail_msg("factorization(%lld, %lld) = (%lld, %lld), expected (%lld, %lld)", (long long)cases[i][0],
                     (long long)cases[i][1], (long long)m, (long long)n, (long long)cases[i][2], (long long)cases[i][3]);
    }
}

/* --network and its companions as settings (the command line and --config). */
static void network_settings(void **state)
{
    (void)state;
    vkl_train_config c;
    vkl_err e = {{0}};
    vkl_train_config_default(&c);
    assert_int_equal(c.network_kind, VKL_LORA_KIND_LORA);
    assert_int_equal(vkl_train_config_set(&c, "network-conv", "true", &e), 0);
    assert_int_equal(vkl_train_config_set(&c, "network", "lokr", &e), 0);
    assert_int_equal(vkl_train_config_set(&c, "lokr-factor", "8", &e), 0);
    assert_int_equal(c.network_kind, VKL_LORA_KIND_LOKR);
    assert_int_equal(c.network_conv, 1);
    assert_int_equal(c.lokr_factor, 8);
    char *js = vkl_train_config_json(&c, NULL);
    cJSON *j = cJSON_Parse(js);
    free(js);
    assert_non_null(j);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItem(j, "network")), "lokr");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "network-conv")));
    assert_true(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "lokr-factor")) == 8);
    cJSON_Delete(j);
    assert_int_equal(vkl_train_config_set(&c, "network", "loha", &e), 0);
    assert_int_equal(c.network_kind, VKL_LORA_KIND_LOHA);
    assert_int_equal(vkl_train_config_set(&c, "network", "dora", &e), 0);
    assert_int_equal(c.network_kind, VKL_LORA_KIND_DORA);
    assert_int_equal(vkl_train_config_set(&c, "network", "lora", &e), 0);
    assert_int_equal(c.network_kind, VKL_LORA_KIND_LORA);
    assert_int_equal(c.network_conv, 0);
    assert_int_equal(vkl_train_config_set(&c, "network", "locon", &e), 0);
    assert_int_equal(c.network_conv, 1);
    assert_int_equal(vkl_train_config_set(&c, "network", "glora", &e), -1);
    assert_non_null(strstr(e.msg, "glora"));
    assert_int_equal(vkl_train_config_set(&c, "lokr-factor", "0", &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lokr_factorization),
        cmocka_unit_test(network_settings),
        cmocka_unit_test(loha),
        cmocka_unit_test(lokr),
        cmocka_unit_test(dora),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
