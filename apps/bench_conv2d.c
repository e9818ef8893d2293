/* vklora bench conv2d --c C --o O --h H --w W --k K --stride S [--pad P] [--n N]
 *                     [--dtype f32|f16|bf16] [--lora R] [--reps R]
 *                     [--backward [--wgrad] [--profile]]
 * Defaults: SD 1.5's 320-channel 3x3 conv at 64x64 latents. FLOPs counted as
 * 2*N*O*Ho*Wo*C*k*k (plus the LoRA projections when --lora is given).
 * --backward also times forward + backward with the weight frozen (d x, and
 * d of the LoRA factors with --lora), as LoRA training runs it; --wgrad adds
 * d weight and d bias; --profile prints the per-node times of that graph. */
#include "bench_conv2d.h"
#include "ops.h"
#include "vkl.h"
#include "bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static vkl_tensor *new_filled(vkl_ctx *c, vkl_dtype dt, const int64_t shape[4], uint64_t seed, vkl_err *e)
{
    vkl_tensor *t = vkl_tensor_new(c, dt, 4, shape, e);
    if (!t) return NULL;
    int64_t n = vkl_tensor_nelem(t);
    float *h = malloc(sizeof(float) * (size_t)n);
    if (!h) {
        vkl_tensor_free(t);
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) h[i] = (float)(((uint64_t)i * seed) % 1000) / 1000.0f - 0.5f;
    int rc = vkl_tensor_upload(c, t, h, VKL_F32, e);
    free(h);
    if (rc) {
        vkl_tensor_free(t);
        return NULL;
    }
    return t;
}

int vkl_bench_conv2d(int argc, char **argv)
{
    int64_t N = 1, C = 320, O = 320, H = 64, W = 64, K = 3, S = 1, pad = -1, R = 0, reps = 3;
    int backward = 0, wgrad = 0, profile = 0;
    vkl_dtype dt = VKL_F32;
    int dti = 0;
    static const vkl_dtype dtypes[] = {VKL_F32, VKL_F16, VKL_BF16};
    const vkl_arg opts[] = {
        {"--n", NULL, VKL_ARG_I64, VKL_AS_I64(&N), 1, 1 << 24, .help = "N  batch"},
        {"--c", NULL, VKL_ARG_I64, VKL_AS_I64(&C), 1, 1 << 24, .help = "C  input channels"},
        {"--o", NULL, VKL_ARG_I64, VKL_AS_I64(&O), 1, 1 << 24, .help = "O  output channels"},
        {"--h", NULL, VKL_ARG_I64, VKL_AS_I64(&H), 1, 1 << 24, .help = "H"},
        {"--w", NULL, VKL_ARG_I64, VKL_AS_I64(&W), 1, 1 << 24, .help = "W"},
        {"--k", NULL, VKL_ARG_I64, VKL_AS_I64(&K), 1, 1 << 24, .help = "K  kernel size"},
        {"--stride", NULL, VKL_ARG_I64, VKL_AS_I64(&S), 1, 1 << 24, .help = "S"},
        {"--pad", NULL, VKL_ARG_I64, VKL_AS_I64(&pad), 0, 1 << 24, .help = "P  (-1: K/2)"},
        {"--lora", NULL, VKL_ARG_I64, VKL_AS_I64(&R), 1, 1 << 24, .help = "RANK  a LoRA of this rank beside it"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f32|f16|bf16", .help = "T"},
        {"--reps", NULL, VKL_ARG_I64, VKL_AS_I64(&reps), 1, 1 << 24, .help = "R"},
        {"--backward", NULL, VKL_ARG_FLAG, VKL_AS_INT(&backward), .help = " time the backward pass too"},
        {"--wgrad", NULL, VKL_ARG_FLAG, VKL_AS_INT(&wgrad), .help = " the weight gradient too (implies --backward)"},
        {"--profile", NULL, VKL_ARG_FLAG, VKL_AS_INT(&profile), .help = " per-kernel times (implies --backward)"},
    };
    int prc = vkl_bench_args("conv2d", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    dt = dtypes[dti];
    backward |= wgrad | profile;
    if (pad < 0) pad = K / 2;
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    if (vkl_ctx_create(NULL, &c, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    int rc = 1;
    vkl_graph *g = NULL, *gb = NULL;
    vkl_tensor *dy = NULL;
    vkl_tensor *x = NULL, *w = NULL, *b = NULL, *a_cat = NULL, *b_cat = NULL, *rs = NULL;
    int64_t xs[4] = {N, C, H, W}, ws[4] = {O, C, K, K}, bs[4] = {1, 1, 1, O};
    if (!(x = new_filled(c, VKL_F32, xs, 7919, &e)) || !(w = new_filled(c, dt, ws, 104729, &e)) ||
        !(b = new_filled(c, VKL_F32, bs, 31, &e)))
        goto done;
    if (R) {
        int64_t as[4] = {R, C, K, K}, us[4] = {O, R, 1, 1}, ss[4] = {1, 1, 1, R};
        if (!(a_cat = new_filled(c, dt, as, 613, &e)) || !(b_cat = new_filled(c, dt, us, 227, &e)) ||
            !(rs = new_filled(c, VKL_F32, ss, 17, &e)))
            goto done;
    }
    vkl_mem_reset_peak(c);
    g = vkl_graph_new(c);
    vkl_conv2d_params p = {(int)S, (int)S, (int)pad, (int)pad, (int)pad, (int)pad};
    vkl_tensor *y = R ? vkl_conv2d_lora(g, x, w, b, &p, a_cat, b_cat, rs) : vkl_conv2d_ex(g, x, w, b, &p);
    vkl_graph_keep(g, y);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) goto done;
    double times[200];
    int n = 0;
    double start = vkl_bench_now();
    while (n < 200 && (n < reps || vkl_bench_now() - start < 1.0)) {
        double t0 = vkl_bench_now();
        if (vkl_graph_run(g, &e)) goto done;
        times[n++] = vkl_bench_now() - t0;
    }
    qsort(times, (size_t)n, sizeof *times, vkl_bench_cmp_double);
    double med = times[n / 2];
    int64_t Ho = y->shape[2], Wo = y->shape[3];
    double flops = 2.0 * N * O * Ho * Wo * C * K * K;
    if (R) flops += 2.0 * N * R * Ho * Wo * C * K * K + 2.0 * N * O * Ho * Wo * R;
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    printf("conv2d n=%lld c=%lld o=%lld %lldx%lld k=%lld stride=%lld pad=%lld -> %lldx%lld, weight %s%s: "
           "%.3f ms median of %d, %.2f GFLOP/s\n",
           (long long)N, (long long)C, (long long)O, (long long)H, (long long)W, (long long)K, (long long)S,
           (long long)pad, (long long)Ho, (long long)Wo, vkl_dtype_name(dt), R ? " + LoRA" : "", med * 1e3, n,
           flops / med * 1e-9);
    printf("device: %s (profile %s), %d dispatches, peak device memory %.1f MiB\n", vkl_ctx_caps(c)->name,
           vkl_ctx_caps(c)->profile, vkl_graph_dispatch_count(g), ms.total_peak / 1048576.0);
    if (backward) {
        int64_t ys[4] = {N, O, Ho, Wo};
        if (!(dy = new_filled(c, VKL_F32, ys, 4111, &e))) goto done;
        vkl_mem_reset_peak(c);
        gb = vkl_graph_new(c);
        if (profile) vkl_graph_enable_profiling(gb);
        vkl_tensor *yb = R ? vkl_conv2d_lora(gb, x, w, b, &p, a_cat, b_cat, rs) : vkl_conv2d_ex(gb, x, w, b, &p);
        vkl_tensor *wrt[5] = {x, a_cat, b_cat, wgrad ? w : NULL, wgrad ? b : NULL}, *grads[5];
        if (vkl_graph_backward(gb, yb, dy, wrt, 5, grads, &e)) goto done;
        for (int i = 0; i < 5; i++) vkl_graph_keep(gb, grads[i]);
        if (vkl_graph_plan(gb, &e) || vkl_graph_run(gb, &e)) goto done;
        n = 0;
        start = vkl_bench_now();
        while (n < 200 && (n < reps || vkl_bench_now() - start < 1.0)) {
            double t0 = vkl_bench_now();
            if (vkl_graph_run(gb, &e)) goto done;
            times[n++] = vkl_bench_now() - t0;
        }
        qsort(times, (size_t)n, sizeof *times, vkl_bench_cmp_double);
        double medb = times[n / 2];
        /* d x is a transposed convolution of the same size as the forward; d w too */
        double bflops = flops * (wgrad ? 3.0 : 2.0);
        vkl_mem_get_stats(c, &ms);
        printf("forward + backward (d x%s%s): %.3f ms median of %d, backward alone %.3f ms = %.2fx the forward, "
               "%.2f GFLOP/s overall, %d dispatches, peak device memory %.1f MiB\n",
               R ? ", d LoRA factors" : "", wgrad ? ", d weight, d bias" : "", medb * 1e3, n, (medb - med) * 1e3,
               (medb - med) / med, bflops / medb * 1e-9, vkl_graph_dispatch_count(gb), ms.total_peak / 1048576.0);
        if (profile) vkl_graph_print_profile(gb, stdout);
    }
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora: %s\n", e.msg[0] ? e.msg : vkl_graph_error(g));
    vkl_graph_free(g);
    vkl_graph_free(gb);
    vkl_tensor_free(dy);
    vkl_tensor_free(x);
    vkl_tensor_free(w);
    vkl_tensor_free(b);
    vkl_tensor_free(a_cat);
    vkl_tensor_free(b_cat);
    vkl_tensor_free(rs);
    vkl_ctx_destroy(c);
    return rc;
}
