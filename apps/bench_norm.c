/* vklora bench group-norm [--n N] [--c C] [--h H] [--w W] [--groups G]
 * [--dtype f32|f16|bf16] [--silu 0|1] [--reps R] [--profile] [--backward]: median
 * time of a group norm over x [N,C,H,W] (default the SD 1.5 UNet's first
 * level: 2 x 320 x 64 x 64, 32 groups, fused SiLU) and the bandwidth it
 * reaches; with --backward, of the forward and the backward (dx, dgamma,
 * dbeta) together (--profile splits them per node). Figures only; nothing is
 * asserted. */
#include "bench_norm.h"
#include "ops.h"
#include "vkl.h"
#include "bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int vkl_bench_group_norm(int argc, char **argv)
{
    int64_t N = 2, C = 320, H = 64, W = 64, G = 32, silu = 1, min_reps = 5;
    int profile = 0, backward = 0;
    vkl_dtype dt = VKL_F32;
    int dti = 0;
    static const vkl_dtype dtypes[] = {VKL_F32, VKL_F16, VKL_BF16};
    const vkl_arg opts[] = {
        {"--n", NULL, VKL_ARG_I64, VKL_AS_I64(&N), 1, 1 << 30, .help = "N"},
        {"--c", NULL, VKL_ARG_I64, VKL_AS_I64(&C), 1, 1 << 30, .help = "C"},
        {"--h", NULL, VKL_ARG_I64, VKL_AS_I64(&H), 1, 1 << 30, .help = "H"},
        {"--w", NULL, VKL_ARG_I64, VKL_AS_I64(&W), 1, 1 << 30, .help = "W"},
        {"--groups", NULL, VKL_ARG_I64, VKL_AS_I64(&G), 1, 1 << 30, .help = "G"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f32|f16|bf16", .help = "T"},
        {"--silu", NULL, VKL_ARG_I64, VKL_AS_I64(&silu), 0, 1, .help = "0|1  SiLU after the norm"},
        {"--reps", NULL, VKL_ARG_I64, VKL_AS_I64(&min_reps), 1, 200, .help = "R"},
        {"--profile", NULL, VKL_ARG_FLAG, VKL_AS_INT(&profile), .help = " per-kernel times"},
        {"--backward", NULL, VKL_ARG_FLAG, VKL_AS_INT(&backward), .help = " time the backward pass too"},
    };
    int prc = vkl_bench_args("group-norm", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    dt = dtypes[dti];
    if (C % G || G > C) {
        fprintf(stderr, "vklora bench group-norm: %lld groups do not divide %lld channels\n", (long long)G,
                (long long)C);
        return 2;
    }
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    if (vkl_ctx_create(NULL, &c, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    int rc = 1;
    int64_t xs[4] = {N, C, H, W}, n = N * C * H * W;
    vkl_tensor *X = vkl_tensor_new(c, dt, 4, xs, &e);
    vkl_tensor *Gm = X ? vkl_tensor_new(c, VKL_F32, 1, &C, &e) : NULL;
    vkl_tensor *Bt = Gm ? vkl_tensor_new(c, VKL_F32, 1, &C, &e) : NULL;
    vkl_tensor *Dy = Bt && backward ? vkl_tensor_new(c, VKL_F32, 4, xs, &e) : NULL;
    vkl_graph *g = NULL;
    float *host = malloc(sizeof(float) * (size_t)(n > C ? n : C));
    if (!Bt || !host || (backward && !Dy)) goto done;
    for (int64_t i = 0; i < n; i++) host[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    if (vkl_tensor_upload(c, X, host, VKL_F32, &e)) goto done;
    for (int64_t i = 0; i < C; i++) host[i] = 1.0f + (float)(i % 7) / 10.0f;
    if (vkl_tensor_upload(c, Gm, host, VKL_F32, &e) || vkl_tensor_upload(c, Bt, host, VKL_F32, &e)) goto done;
    g = vkl_graph_new(c);
    vkl_tensor *y = vkl_group_norm(g, X, (int)G, 1e-5f, Gm, Bt, (int)silu);
    vkl_graph_keep(g, y);
    if (backward) {
        for (int64_t i = 0; i < n; i++) host[i] = (float)((i * 104729) % 2000) / 1000.0f - 1.0f;
        vkl_tensor *wrt[3] = {X, Gm, Bt}, *gr[3];
        if (vkl_tensor_upload(c, Dy, host, VKL_F32, &e) || vkl_graph_backward(g, y, Dy, wrt, 3, gr, &e)) goto done;
        for (int i = 0; i < 3; i++) vkl_graph_keep(g, gr[i]);
    }
    if (profile) vkl_graph_enable_profiling(g);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) goto done;
    double times[200], start = vkl_bench_now();
    int reps = 0;
    while (reps < 200 && (reps < min_reps || vkl_bench_now() - start < 1.0)) {
        double t0 = vkl_bench_now();
        if (vkl_graph_run(g, &e)) goto done;
        times[reps++] = vkl_bench_now() - t0;
    }
    qsort(times, (size_t)reps, sizeof *times, vkl_bench_cmp_double);
    double med = times[reps / 2];
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    /* x is read twice (statistics, then normalisation), y written once */
    double xb = (double)n * vkl_dtype_size(dt), yb = (double)n * 4;
    printf("group-norm%s x %s[%lld,%lld,%lld,%lld] groups %lld silu %lld: %.3f ms median of %d, %.2f GB/s "
           "(x read twice + y written: %.1f MB), %.2f GB/s of x+y\n",
           backward ? " forward+backward" : "", vkl_dtype_name(dt), (long long)N, (long long)C, (long long)H, (long long)W, (long long)G,
           (long long)silu, med * 1e3, reps, (2 * xb + yb) / med * 1e-9, (2 * xb + yb) * 1e-6, (xb + yb) / med * 1e-9);
    printf("device: %s (profile %s), %d dispatches, peak device memory %.1f MiB\n", vkl_ctx_caps(c)->name,
           vkl_ctx_caps(c)->profile, vkl_graph_dispatch_count(g), ms.total_peak / 1048576.0);
    if (profile) vkl_graph_print_profile(g, stdout);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora: %s\n", e.msg[0] ? e.msg : "out of memory");
    free(host);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(Gm);
    vkl_tensor_free(Bt);
    vkl_tensor_free(Dy);
    vkl_ctx_destroy(c);
    return rc;
}
