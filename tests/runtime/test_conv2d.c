/* conv2d and conv2d_lora against the double-precision CPU reference: random
 * odd shapes (3/4 channels, 5/7 outputs, 9x13 images, k 1/3/5, stride 1/2,
 * asymmetric padding, batch 2, strided inputs), every weight dtype, every
 * device profile, the GPU tile forced on lavapipe, and windows under a 64 KiB
 * binding limit. LoRA: equal to conv2d with merged weights computed on the
 * CPU, and re-weighted by uploading rank_scale without re-planning. */
#include "vkl_test.h"
#include "ops.h"
#include "ops/conv2d_internal.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void plan_run(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
}

static float *rand_array(vkl_test_rng *r, int64_t n, vkl_dtype dt)
{
    float *a = malloc(sizeof(float) * (size_t)n);
    vkl_test_fill(r, a, (size_t)n, -1, 1);
    vkl_test_round_to(dt, a, (size_t)n);
    return a;
}

typedef struct {
    int64_t N, C, H, W, O, kh, kw;
    vkl_conv2d_params p;
    vkl_dtype xdt, wdt;
    int bias, transposed; /* x read through a permuted (H/W swapped) view */
} conv_case;

/* Runs one case on c with the given tile (NULL: default) and checks it. */
static void check_case(vkl_ctx *c, vkl_test_rng *r, const conv_case *k, const vkl_conv2d_tile *tile)
{
    int64_t nx = k->N * k->C * k->H * k->W, nw = k->O * k->C * k->kh * k->kw;
    float *x = rand_array(r, nx, k->xdt), *w = rand_array(r, nw, k->wdt), *b = rand_array(r, k->O, VKL_F32);
    /* stored as [N,C,W,H] when transposed, so the permuted view is [N,C,H,W] */
    int64_t xstore[4] = {k->N, k->C, k->transposed ? k->W : k->H, k->transposed ? k->H : k->W};
    int64_t ws[4] = {k->O, k->C, k->kh, k->kw}, bs[1] = {k->O};
    vkl_tensor *tx = vkl_test_upload(c, k->xdt, 4, xstore, x), *tw = vkl_test_upload(c, k->wdt, 4, ws, w), *tb = vkl_test_upload(c, VKL_F32, 1, bs, b);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *xin = tx;
    if (k->transposed) {
        int perm[4] = {0, 1, 3, 2};
        xin = vkl_permute(g, tx, perm);
    }
    vkl_tensor *y = vkl_conv2d_build(g, "conv2d", xin, tw, k->bias ? tb : NULL, &k->p, NULL, NULL, NULL, tile);
    if (!y) {
        print_error("conv2d: %s\n", vkl_graph_error(g));
        fail();
    }
    vkl_graph_keep(g, y);
    plan_run(g);
    if (vkl_tensor_nelem(y) * 4 > 65536) assert_true(vkl_graph_dispatch_count(g) > 1); /* only under binding=64K */
    float *got = vkl_test_download(c, y);
    int64_t xs[4] = {k->N, k->C, k->H, k->W};
    int64_t xst[4] = {k->C * k->H * k->W, k->H * k->W, k->W, 1};
    if (k->transposed) xst[2] = 1, xst[3] = k->H;
    int64_t ny = vkl_tensor_nelem(y);
    float *want = malloc(sizeof(float) * (size_t)ny);
    vkl_ref_conv2d(x, xs, xst, w, k->O, k->kh, k->kw, k->bias ? b : NULL, k->p.stride_h, k->p.stride_w, k->p.pad_top,
                   k->p.pad_bottom, k->p.pad_left, k->p.pad_right, want);
    int64_t Ho = (k->H + k->p.pad_top + k->p.pad_bottom - k->kh) / k->p.stride_h + 1;
    int64_t Wo = (k->W + k->p.pad_left + k->p.pad_right - k->kw) / k->p.stride_w + 1;
    assert_int_equal(y->shape[2], Ho);
    assert_int_equal(y->shape[3], Wo);
    char what[160];
    snprintf(what, sizeof what, "conv2d N%lld C%lld %lldx%lld O%lld k%lldx%lld s%d pad %d,%d,%d,%d w %s x %s%s",
             (long long)k->N, (long long)k->C, (long long)k->H, (long long)k->W, (long long)k->O, (long long)k->kh,
             (long long)k->kw, k->p.stride_h, k->p.pad_top, k->p.pad_bottom, k->p.pad_left, k->p.pad_right,
             vkl_dtype_name(k->wdt), vkl_dtype_name(k->xdt), k->transposed ? " strided" : "");
    vkl_test_assert_close(what, got, want, (size_t)ny, 2e-5f, 1e-5f);
    free(x); free(w); free(b); free(got); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(tx);
    vkl_tensor_free(tw);
    vkl_tensor_free(tb);
}

static conv_case random_case(vkl_test_rng *r, int trial)
{
    static const int64_t chans[] = {3, 4, 1, 9, 17};
    static const int64_t outs[] = {5, 7, 1, 13, 37};
    static const int64_t ks[] = {1, 3, 5};
    conv_case k;
    memset(&k, 0, sizeof k);
    k.N = trial % 2 ? 2 : 1;
    k.C = chans[trial % 5];
    k.O = outs[(trial / 2) % 5];
    k.kh = k.kw = ks[trial % 3];
    if (trial % 7 == 6) k.kw = 1; /* non-square kernel */
    k.H = trial % 4 ? 9 : vkl_test_rng_int(r, 5, 12);
    k.W = trial % 4 ? 13 : vkl_test_rng_int(r, 5, 15);
    int s = 1 + (trial / 3) % 2;
    k.p.stride_h = k.p.stride_w = s;
    if (trial % 5 == 4) k.p.stride_w = 3 - s;
    int half = (int)k.kh / 2;
    k.p.pad_top = vkl_test_rng_int(r, 0, half + 1);
    k.p.pad_bottom = vkl_test_rng_int(r, 0, half + 1);
    k.p.pad_left = vkl_test_rng_int(r, 0, half);
    k.p.pad_right = vkl_test_rng_int(r, 0, half + 1);
    k.wdt = (vkl_dtype)(trial % 3);
    k.xdt = trial % 8 == 5 ? VKL_F16 : VKL_F32;
    k.bias = trial % 6 != 1;
    k.transposed = trial % 4 == 3;
    return k;
}

static void conv2d_random_shapes(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 21);
    for (int pi = 0; pi < vkl_test_profile_count; pi++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[pi]);
        for (int trial = 0; trial < 16; trial++) {
            conv_case k = random_case(&r, trial);
            check_case(c, &r, &k, NULL);
        }
        vkl_test_ctx_done(c);
    }
}

/* The tile shapes GPUs get (and odd ones), run on the test device. */
static void conv2d_forced_tiles(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 22);
    static const vkl_conv2d_tile tiles[] = {{64, 4, 4}, {8, 3, 5}};
    vkl_ctx *c = vkl_test_ctx(NULL);
    for (int trial = 0; trial < 8; trial++) {
        conv_case k = random_case(&r, trial + 3);
        k.wdt = trial % 4 == 3 ? VKL_F16 : VKL_F32;
        k.xdt = VKL_F32;
        check_case(c, &r, &k, &tiles[trial % 2]);
    }
    vkl_test_ctx_done(c);
}

/* SD VAE encoder downsampling: pad right/bottom by one, then 3x3 stride 2, pad 0. */
static void conv2d_vae_downsample(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 23);
    vkl_ctx *c = vkl_test_ctx(NULL);
    conv_case k = {2, 6, 16, 11, 6, 3, 3, {2, 2, 0, 1, 0, 1}, VKL_F32, VKL_F16, 1, 0};
    check_case(c, &r, &k, NULL);
    k.H = 17;
    k.wdt = VKL_BF16;
    check_case(c, &r, &k, NULL);
    vkl_test_ctx_done(c);
}

/* 64 KiB bindings: images bound one by one, output channels split, and the
 * input split by channel ranges that add to y. */
static void conv2d_small_bindings(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 24);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    conv_case cases[] = {
        {2, 40, 21, 21, 37, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F32, VKL_F32, 1, 0},  /* x per image 70 KB: 2 chunks */
        {2, 9, 41, 45, 11, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F32, VKL_F16, 1, 1},   /* y per image 81 KB: o windows */
        {3, 5, 30, 30, 7, 5, 5, {2, 2, 2, 2, 1, 2}, VKL_F16, VKL_BF16, 0, 0},   /* batch windows only */
        {2, 24, 30, 30, 5, 1, 1, {1, 1, 0, 0, 0, 0}, VKL_F32, VKL_F32, 1, 0},   /* 1x1, x per image 86 KB */
        {1, 3, 100, 100, 4, 1, 1, {1, 1, 0, 0, 0, 0}, VKL_F32, VKL_F16, 1, 0},  /* 1x1, y per image 160 KB */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(c, &r, &cases[i], NULL);
    vkl_test_ctx_done(c);
}

static void conv2d_bad_shapes(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t xs[4] = {1, 3, 4, 4}, ws[4] = {2, 4, 3, 3}, ws2[4] = {2, 3, 7, 7}, bs[1] = {5};
    vkl_tensor *x = vkl_tensor_new(c, VKL_F32, 4, xs, &e), *w = vkl_tensor_new(c, VKL_F32, 4, ws, &e);
    vkl_tensor *w2 = vkl_tensor_new(c, VKL_F32, 4, ws2, &e), *b = vkl_tensor_new(c, VKL_F32, 1, bs, &e);
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_conv2d(g, x, w, NULL, 1, 1));
    assert_non_null(strstr(vkl_graph_error(g), "input channels"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_conv2d(g, x, w2, NULL, 1, 1));
    assert_non_null(strstr(vkl_graph_error(g), "larger than the padded input"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    int64_t ws3[4] = {2, 3, 3, 3};
    vkl_tensor *w3 = vkl_tensor_new(c, VKL_F32, 4, ws3, &e);
    assert_null(vkl_conv2d(g, x, w3, b, 1, 1));
    assert_non_null(strstr(vkl_graph_error(g), "bias has 5 elements"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    assert_null(vkl_conv2d(g, x, w3, NULL, 0, 1));
    assert_non_null(strstr(vkl_graph_error(g), "stride"));
    vkl_graph_free(g);
    vkl_tensor_free(x); vkl_tensor_free(w); vkl_tensor_free(w2); vkl_tensor_free(w3); vkl_tensor_free(b);
    vkl_test_ctx_done(c);
}

/* ---- LoRA */

/* W' = W + sum_r s_r B[:, r] A[r, :] in double, as merged-mode weights. */
static void merge(const float *w, const float *a, const float *b, const float *s, int64_t O, int64_t R, int64_t K,
                  float *out)
{
    for (int64_t o = 0; o < O; o++)
        for (int64_t k = 0; k < K; k++) {
            double v = w[o * K + k];
            for (int64_t r = 0; r < R; r++) v += (double)s[r] * b[o * R + r] * a[r * K + k];
            out[o * K + k] = (float)v;
        }
}

static void lora_case(vkl_ctx *c, vkl_test_rng *r, const conv_case *k, vkl_dtype adt)
{
    const int64_t r1 = 3, r2 = 5, R = r1 + r2;
    int64_t K = k->C * k->kh * k->kw, nx = k->N * k->C * k->H * k->W;
    float *x = rand_array(r, nx, k->xdt), *w = rand_array(r, k->O * K, k->wdt), *bias = rand_array(r, k->O, VKL_F32);
    float *a = rand_array(r, R * K, adt), *b = rand_array(r, k->O * R, adt);
    float s[8], s2[8];
    for (int i = 0; i < R; i++) {
        s[i] = i < r1 ? 0.8f * 4 / r1 : -0.5f * 8 / r2;  /* multiplier * alpha / rank */
        s2[i] = i < r1 ? 0.25f : 1.5f;
    }
    int64_t xs[4] = {k->N, k->C, k->H, k->W}, ws[4] = {k->O, k->C, k->kh, k->kw}, bs[1] = {k->O};
    int64_t as[4] = {R, k->C, k->kh, k->kw}, us[4] = {k->O, R, 1, 1}, ss[1] = {R};
    vkl_tensor *tx = vkl_test_upload(c, k->xdt, 4, xs, x), *tw = vkl_test_upload(c, k->wdt, 4, ws, w), *tb = vkl_test_upload(c, VKL_F32, 1, bs, bias);
    vkl_tensor *ta = vkl_test_upload(c, adt, 4, as, a), *tu = vkl_test_upload(c, adt, 4, us, b), *ts = vkl_test_upload(c, VKL_F32, 1, ss, s);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_conv2d_lora(g, tx, tw, k->bias ? tb : NULL, &k->p, ta, tu, ts);
    if (!y) {
        print_error("conv2d_lora: %s\n", vkl_graph_error(g));
        fail();
    }
    vkl_graph_keep(g, y);
    plan_run(g);
    float *got = vkl_test_download(c, y);
    int64_t ny = vkl_tensor_nelem(y);
    float *merged = malloc(sizeof(float) * (size_t)(k->O * K)), *want = malloc(sizeof(float) * (size_t)ny);
    int64_t xst[4] = {k->C * k->H * k->W, k->H * k->W, k->W, 1};
    merge(w, a, b, s, k->O, R, K, merged);
    vkl_ref_conv2d(x, xs, xst, merged, k->O, k->kh, k->kw, k->bias ? bias : NULL, k->p.stride_h, k->p.stride_w,
                   k->p.pad_top, k->p.pad_bottom, k->p.pad_left, k->p.pad_right, want);
    vkl_test_assert_close("conv2d_lora vs merged weights", got, want, (size_t)ny, 5e-5f, 2e-5f);

    /* new multipliers: upload, run the same planned graph */
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_upload(c, ts, s2, VKL_F32, &e), 0);
    vkl_graph_run(g, &e);
    float *got2 = vkl_test_download(c, y);
    merge(w, a, b, s2, k->O, R, K, merged);
    vkl_ref_conv2d(x, xs, xst, merged, k->O, k->kh, k->kw, k->bias ? bias : NULL, k->p.stride_h, k->p.stride_w,
                   k->p.pad_top, k->p.pad_bottom, k->p.pad_left, k->p.pad_right, want);
    vkl_test_assert_close("conv2d_lora after new rank_scale", got2, want, (size_t)ny, 5e-5f, 2e-5f);
    assert_true(vkl_test_max_abs_diff(got, got2, (size_t)ny) > 1e-2f);
    free(x); free(w); free(bias); free(a); free(b); free(got); free(got2); free(merged); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(tx); vkl_tensor_free(tw); vkl_tensor_free(tb);
    vkl_tensor_free(ta); vkl_tensor_free(tu); vkl_tensor_free(ts);
}

static void conv2d_lora_matches_merged(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 25);
    for (int pi = 0; pi < vkl_test_profile_count; pi++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[pi]);
        for (int trial = 0; trial < 6; trial++) {
            conv_case k = random_case(&r, trial);
            k.transposed = 0;
            lora_case(c, &r, &k, (vkl_dtype)((trial + 1) % 3));
        }
        vkl_test_ctx_done(c);
    }
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    conv_case k = {2, 9, 41, 45, 11, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F32, VKL_F16, 1, 0};
    lora_case(c, &r, &k, VKL_F32);
    vkl_test_ctx_done(c);
}

static void conv2d_lora_bad_shapes(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t xs[4] = {1, 3, 6, 6}, ws[4] = {4, 3, 3, 3}, as[4] = {2, 3, 1, 1}, us[4] = {4, 2, 1, 1}, ss[1] = {3};
    vkl_tensor *x = vkl_tensor_new(c, VKL_F32, 4, xs, &e), *w = vkl_tensor_new(c, VKL_F32, 4, ws, &e);
    vkl_tensor *a = vkl_tensor_new(c, VKL_F32, 4, as, &e), *u = vkl_tensor_new(c, VKL_F32, 4, us, &e);
    vkl_tensor *s = vkl_tensor_new(c, VKL_F32, 1, ss, &e);
    vkl_conv2d_params p = {1, 1, 1, 1, 1, 1};
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_conv2d_lora(g, x, w, NULL, &p, a, u, s));
    assert_non_null(strstr(vkl_graph_error(g), "down weight"));
    vkl_graph_free(g);
    vkl_tensor_free(a);
    int64_t as2[4] = {2, 3, 3, 3};
    a = vkl_tensor_new(c, VKL_F32, 4, as2, &e);
    g = vkl_graph_new(c);
    assert_null(vkl_conv2d_lora(g, x, w, NULL, &p, a, u, s));
    assert_non_null(strstr(vkl_graph_error(g), "rank_scale"));
    vkl_graph_free(g);
    vkl_tensor_free(x); vkl_tensor_free(w); vkl_tensor_free(a); vkl_tensor_free(u); vkl_tensor_free(s);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conv2d_random_shapes),
        cmocka_unit_test(conv2d_forced_tiles),
        cmocka_unit_test(conv2d_vae_downsample),
        cmocka_unit_test(conv2d_small_bindings),
        cmocka_unit_test(conv2d_bad_shapes),
        cmocka_unit_test(conv2d_lora_matches_merged),
        cmocka_unit_test(conv2d_lora_bad_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
