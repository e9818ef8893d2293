/* conv2d with an NF4 or NF4_DQ kernel (a frozen QLoRA base, runtime/quant.h,
 * dequantised in conv2d.comp / conv2d_grad.comp's registers): the forward and,
 * through autograd, the input gradient against the CPU reference convolution
 * (runtime/ref/ref_conv2d.c) on the kernel quantised and dequantised on the
 * host (vkl_nf4_quantize, QLoRA's double quantisation for NF4_DQ). Odd
 * shapes (blocks of 64 across kernel rows, a partial last block), stride 2,
 * symmetric and one-sided padding, 1x1 and 3x3, NF4_DQ past 256 blocks, the
 * LoRA-fused convolution (against the merged kernel); and
 * the refusals (the kernel's own gradient, a part of a kernel). */
#define _POSIX_C_SOURCE 200809L
#include "vkl_test.h"
#include "ops.h"
#include "quant.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t N, C, H, W, O, k;
    int stride, pt, pb, pl, pr;
} conv_case;

/* R > 0: the LoRA-fused convolution (vkl_conv2d_lora) with R ranks, checked
 * against the plain reference on the merged kernel W + sum_r s_r B_r A_r. */
static void one_conv(vkl_ctx *c, vkl_test_rng *r, conv_case s, vkl_dtype wdt, int64_t R)
{
    int64_t Ho = (s.H + s.pt + s.pb - s.k) / s.stride + 1, Wo = (s.W + s.pl + s.pr - s.k) / s.stride + 1;
    int64_t nx = s.N * s.C * s.H * s.W, nw = s.O * s.C * s.k * s.k, ny = s.N * s.O * Ho * Wo;
    float *x = malloc(sizeof(float) * nx), *w = malloc(sizeof(float) * nw), *wdq = malloc(sizeof(float) * nw);
    float *bias = malloc(sizeof(float) * s.O), *dy = malloc(sizeof(float) * ny), *want = malloc(sizeof(float) * ny);
    vkl_test_fill(r, x, (size_t)nx, -1, 1);
    vkl_test_fill(r, w, (size_t)nw, -0.3f, 0.3f);
    vkl_test_fill(r, bias, (size_t)s.O, -1, 1);
    vkl_test_fill(r, dy, (size_t)ny, -1, 1);
    memcpy(wdq, w, sizeof(float) * (size_t)nw); /* the kernel as the device holds it */
    vkl_test_round_to(wdt, wdq, (size_t)nw);
    int64_t kk = s.C * s.k * s.k;
    float *la = malloc(sizeof(float) * (size_t)(R * kk + 1)), *lb = malloc(sizeof(float) * (size_t)(s.O * R + 1));
    float *ls = malloc(sizeof(float) * (size_t)(R + 1));
    vkl_test_fill(r, la, (size_t)(R * kk), -0.3f, 0.3f);
    vkl_test_fill(r, lb, (size_t)(s.O * R), -0.3f, 0.3f);
    for (int64_t q = 0; q < R; q++) ls[q] = 0.25f * (float)(q + 1);
    for (int64_t o = 0; o < s.O; o++) /* the merged kernel the reference convolves with */
        for (int64_t q = 0; q < R; q++)
            for (int64_t i = 0; i < kk; i++) wdq[o * kk + i] += ls[q] * lb[o * R + q] * la[q * kk + i];

    vkl_err e = {{0}};
    int64_t xs[4] = {s.N, s.C, s.H, s.W}, ws[4] = {s.O, s.C, s.k, s.k}, ys[4] = {s.N, s.O, Ho, Wo};
    int64_t xst[4] = {s.C * s.H * s.W, s.H * s.W, s.W, 1}, bs[1] = {s.O};
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 4, xs, x), *DY = vkl_test_upload(c, VKL_F32, 4, ys, dy);
    vkl_tensor *B = vkl_test_upload(c, VKL_F32, 1, bs, bias), *W = vkl_tensor_new(c, wdt, 4, ws, &e);
    assert_non_null(W);
    assert_int_equal(vkl_tensor_upload(c, W, w, VKL_F32, &e), 0); /* quantised on upload */
    assert_int_equal(vkl_tensor_nbytes(W), (vkl_dtype_bytes(wdt, (uint64_t)nw) + 3) & ~3ull);

    vkl_graph *g = vkl_graph_new(c);
    vkl_conv2d_params p = {s.stride, s.stride, s.pt, s.pb, s.pl, s.pr};
    vkl_tensor *LA = NULL, *LB = NULL, *LS = NULL, *y;
    if (R) {
        int64_t as[4] = {R, s.C, s.k, s.k}, us[4] = {s.O, R, 1, 1}, ss[1] = {R};
        LA = vkl_test_upload(c, VKL_F32, 4, as, la);
        LB = vkl_test_upload(c, VKL_F32, 4, us, lb);
        LS = vkl_test_upload(c, VKL_F32, 1, ss, ls);
        y = vkl_conv2d_lora(g, X, W, B, &p, LA, LB, LS);
    } else {
        y = vkl_conv2d_ex(g, X, W, B, &p);
    }
    vkl_tensor *wrt[1] = {X}, *grads[1] = {NULL};
    if (!y || vkl_graph_backward(g, y, DY, wrt, 1, grads, &e)) {
        print_error("graph: %s %s\n", e.msg, vkl_graph_error(g));
        fail();
    }
    vkl_graph_keep(g, y);
    vkl_graph_keep(g, grads[0]);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("run: %s\n", e.msg);
        fail();
    }
    float *got = malloc(sizeof(float) * ny), *gdx = malloc(sizeof(float) * nx), *wdx = malloc(sizeof(float) * nx);
    assert_int_equal(vkl_tensor_download(c, y, got, VKL_F32, &e), 0);
    assert_int_equal(vkl_tensor_download(c, grads[0], gdx, VKL_F32, &e), 0);

    vkl_ref_conv2d(x, xs, xst, wdq, s.O, s.k, s.k, bias, s.stride, s.stride, s.pt, s.pb, s.pl, s.pr, want);
    /* d x in double from the same dequantised kernel */
    double *xd = malloc(sizeof(double) * nx), *wd = malloc(sizeof(double) * nw), *dyd = malloc(sizeof(double) * ny);
    double *dxd = malloc(sizeof(double) * nx);
    for (int64_t i = 0; i < nx; i++) xd[i] = x[i];
    for (int64_t i = 0; i < nw; i++) wd[i] = wdq[i];
    for (int64_t i = 0; i < ny; i++) dyd[i] = dy[i];
    vkl_ref_conv2d_backward(xd, xs, wd, s.O, s.k, s.k, s.stride, s.stride, s.pt, s.pb, s.pl, s.pr, dyd, dxd, NULL,
                            NULL);
    for (int64_t i = 0; i < nx; i++) wdx[i] = (float)dxd[i];

    char what[160];
    snprintf(what, sizeof what, "%s conv2d%s x [%lld,%lld,%lld,%lld] w [%lld,%lld,%lld,%lld] stride %d pad %d,%d,%d,%d",
             vkl_dtype_name(wdt), R ? " + LoRA" : "", (long long)s.N, (long long)s.C, (long long)s.H, (long long)s.W, (long long)s.O,
             (long long)s.C, (long long)s.k, (long long)s.k, s.stride, s.pt, s.pb, s.pl, s.pr);
    vkl_test_assert_close(what, got, want, (size_t)ny, 2e-5f, 1e-5f);
    strncat(what, ": input gradient", sizeof what - strlen(what) - 1);
    vkl_test_assert_close(what, gdx, wdx, (size_t)nx, 2e-5f, 1e-5f);

    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(DY);
    vkl_tensor_free(B);
    vkl_tensor_free(W);
    if (R) {
        vkl_tensor_free(LA);
        vkl_tensor_free(LB);
        vkl_tensor_free(LS);
    }
    free(la); free(lb); free(ls);
    free(x); free(w); free(wdq); free(bias); free(dy); free(want); free(got); free(gdx); free(wdx);
    free(xd); free(wd); free(dyd); free(dxd);
}

static void forward_and_input_gradient(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 30);
    vkl_ctx *c = vkl_test_ctx(NULL);
    const conv_case nf4[] = {
        {2, 5, 9, 7, 13, 3, 1, 1, 1, 1, 1},   /* rows of 45: blocks across rows, 585 elements (partial block) */
        {1, 7, 11, 10, 6, 3, 2, 1, 1, 1, 1},  /* stride 2, padded */
        {1, 6, 9, 8, 5, 3, 2, 0, 1, 0, 1},    /* stride 2, bottom/right padding only (the SD VAE's downsample) */
        {2, 16, 6, 5, 12, 1, 1, 0, 0, 0, 0},  /* 1x1: stays in conv2d (matmul reads a quantised B only) */
        {1, 64, 5, 5, 4, 3, 2, 0, 0, 0, 0},   /* rows of 576 = 9 whole blocks, no padding */
    };
    for (size_t i = 0; i < sizeof nf4 / sizeof *nf4; i++) one_conv(c, &r, nf4[i], VKL_NF4, 0);
    /* NF4_DQ: 270 blocks (two second-level scales), and an odd one */
    const conv_case dq[] = {{1, 40, 5, 5, 48, 3, 1, 1, 1, 1, 1}, {2, 5, 9, 7, 13, 3, 2, 1, 1, 1, 1}};
    for (size_t i = 0; i < sizeof dq / sizeof *dq; i++) one_conv(c, &r, dq[i], VKL_NF4_DQ, 0);
    /* LoRA fused on an NF4 / NF4_DQ kernel (LoCon on a QLoRA UNet) */
    one_conv(c, &r, nf4[1], VKL_NF4, 3);
    one_conv(c, &r, dq[1], VKL_NF4_DQ, 2);
    vkl_test_ctx_done(c);
}

/* The frozen kernel's own gradient and a part of a kernel are refused with a message. */
static void refusals(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    float w[8 * 4 * 9];
    for (int i = 0; i < 8 * 4 * 9; i++) w[i] = (float)(i % 7) - 3.0f;
    int64_t ws[4] = {8, 4, 3, 3}, xs[4] = {1, 4, 6, 6};
    float x[4 * 6 * 6] = {0};
    vkl_tensor *W = vkl_test_upload(c, VKL_NF4, 4, ws, w), *X = vkl_test_upload(c, VKL_F32, 4, xs, x);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_conv2d(g, X, W, NULL, 1, 1);
    if (!y) fail_msg("conv2d on an NF4 kernel: %s", vkl_graph_error(g));
    vkl_tensor *wrt[1] = {W}, *gr[1] = {NULL};
    assert_int_equal(vkl_graph_backward(g, y, NULL, wrt, 1, gr, &e), -1);
    print_message("weight gradient refused: %s | %s\n", e.msg, vkl_graph_error(g));
    assert_non_null(strstr(vkl_graph_error(g), "frozen quantised base"));
    vkl_graph_free(g);
    g = vkl_graph_new(c);
    vkl_tensor *part = vkl_view(g, W, 4, (int64_t[]){7, 4, 3, 3}, (int64_t[]){36, 9, 3, 1}, 36);
    assert_null(vkl_conv2d(g, X, part, NULL, 1, 1));
    print_message("part refused: %s\n", vkl_graph_error(g));
    assert_non_null(strstr(vkl_graph_error(g), "whole kernel"));
    vkl_graph_free(g);
    vkl_tensor_free(W);
    vkl_tensor_free(X);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forward_and_input_gradient),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
