/* vklora bench linear-lora --tokens T --in I --out O --rank R [--dtype f32|f16]
 * [--reps N]: y = x W^T + b + B diag(s) A x against the plain y = x W^T + b
 * (vkl_linear) on the same data. GFLOP/s count the useful flops of each;
 * the overhead is the extra time of the fused layer over the plain one. */
#include "bench_lora.h"
#include "ops.h"
#include "vkl.h"
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static vkl_tensor *random_tensor(vkl_ctx *c, vkl_dtype dt, int nd, const int64_t *shape, float amp, uint64_t seed,
                                 vkl_err *e)
{
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, shape, e);
    if (!t) return NULL;
    int64_t n = vkl_tensor_nelem(t);
    float *h = malloc(sizeof(float) * (size_t)n);
    if (!h) {
        vkl_tensor_free(t);
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) h[i] = amp * ((float)(((uint64_t)i * 2654435761u + seed) % 2001) / 1000.0f - 1.0f);
    int rc = vkl_tensor_upload(c, t, h, VKL_F32, e);
    free(h);
    if (rc) {
        vkl_tensor_free(t);
        return NULL;
    }
    return t;
}

int vkl_bench_linear_lora(int argc, char **argv)
{
    int64_t T = 4096, IN = 320, OUT = 320, R = 16, reps = 3;
    vkl_dtype wdt = VKL_F32;
    int dti = 0;
    static const vkl_dtype dtypes[] = {VKL_F32, VKL_F16, VKL_NF4, VKL_NF4_DQ};
    const vkl_arg opts[] = {
        {"--tokens", NULL, VKL_ARG_I64, VKL_AS_I64(&T), 1, 1 << 30, .help = "T"},
        {"--in", NULL, VKL_ARG_I64, VKL_AS_I64(&IN), 1, 1 << 30, .help = "I  input features"},
        {"--out", NULL, VKL_ARG_I64, VKL_AS_I64(&OUT), 1, 1 << 30, .help = "O  output features"},
        {"--rank", NULL, VKL_ARG_I64, VKL_AS_I64(&R), 1, 1 << 30, .help = "R"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f32|f16|nf4|nf4dq", .help = "T  of the frozen weight"},
        {"--reps", NULL, VKL_ARG_I64, VKL_AS_I64(&reps), 1, 1 << 30, .help = "N"},
    };
    int prc = vkl_bench_args("linear-lora", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    wdt = dtypes[dti];
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    if (vkl_ctx_create(NULL, &c, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    int rc = 1;
    int64_t xs[2] = {T, IN}, ws[2] = {OUT, IN}, bs[1] = {OUT}, as[2] = {R, IN}, us[2] = {OUT, R}, rs[1] = {R};
    vkl_tensor *X = random_tensor(c, VKL_F32, 2, xs, 1.0f, 1, &e);
    vkl_tensor *W = X ? random_tensor(c, wdt, 2, ws, 0.05f, 2, &e) : NULL;
    vkl_tensor *BI = W ? random_tensor(c, VKL_F32, 1, bs, 0.1f, 3, &e) : NULL;
    vkl_dtype adt = wdt == VKL_NF4 || wdt == VKL_NF4_DQ ? VKL_F32 : wdt; /* adapters are never quantised */
    vkl_tensor *A = BI ? random_tensor(c, adt, 2, as, 0.05f, 4, &e) : NULL;
    vkl_tensor *U = A ? random_tensor(c, adt, 2, us, 0.05f, 5, &e) : NULL;
    vkl_tensor *S = U ? random_tensor(c, VKL_F32, 1, rs, 1.0f, 6, &e) : NULL;
    vkl_graph *gl = NULL, *gp = NULL;
    if (!S) goto done;
    gl = vkl_graph_new(c);
    gp = vkl_graph_new(c);
    vkl_tensor *yl = vkl_linear_lora(gl, X, W, BI, A, U, S), *yp = vkl_linear(gp, X, W, BI);
    vkl_graph_keep(gl, yl);
    vkl_graph_keep(gp, yp);
    if (vkl_graph_plan(gl, &e) || vkl_graph_plan(gp, &e)) goto done;
    vkl_mem_reset_peak(c);
    double tl, tp;
    int nl, np;
    if (vkl_bench_time_graph(gp, (int)reps, 1.0, &tp, &np, &e) || vkl_bench_time_graph(gl, (int)reps, 1.0, &tl, &nl, &e))
        goto done;
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    double fp = 2.0 * T * IN * OUT, fl = fp + 2.0 * T * IN * R + 2.0 * T * R * OUT;
    printf("linear      tokens=%lld in=%lld out=%lld %s weights: %.3f ms median of %d, %.2f GFLOP/s\n", (long long)T,
           (long long)IN, (long long)OUT, vkl_dtype_name(wdt), tp * 1e3, np, fp / tp * 1e-9);
    printf("linear-lora rank=%lld: %.3f ms median of %d, %.2f GFLOP/s, overhead %+.1f%% (extra flops %.1f%%)\n",
           (long long)R, tl * 1e3, nl, fl / tl * 1e-9, (tl / tp - 1) * 100, (fl / fp - 1) * 100);
    printf("device: %s (profile %s), %d dispatches fused vs %d plain, peak device memory %.1f MiB\n",
           vkl_ctx_caps(c)->name, vkl_ctx_caps(c)->profile, vkl_graph_dispatch_count(gl), vkl_graph_dispatch_count(gp),
           ms.total_peak / 1048576.0);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora: %s\n", e.msg);
    vkl_graph_free(gl);
    vkl_graph_free(gp);
    vkl_tensor_free(X); vkl_tensor_free(W); vkl_tensor_free(BI);
    vkl_tensor_free(A); vkl_tensor_free(U); vkl_tensor_free(S);
    vkl_ctx_destroy(c);
    return rc;
}
