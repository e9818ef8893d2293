/* vklora bench attention [--batch B] [--heads H] [--q LQ] [--kv LK] [--dim D]
 * [--dtype f32|f16|bf16] [--causal] [--tokens] [--variant auto|stream|tiled]
 * [--reps R] [--backward [--path flash|unfused|both]]: median time of scaled dot-product attention over q [B,H,LQ,D],
 * k and v [B,H,LK,D] (default: SD 1.5's first UNet level at 512 px, 4096
 * queries and keys, 8 heads of 40), GFLOP/s counted as 4 B H LQ LK D, and
 * the peak device memory (linear in LQ + LK: the LQ x LK scores are never
 * stored). --tokens reads q, k, v from the [B,L,H*D] token layout through
 * permuted views, as the UNet does. --backward times the gradients of q, k
 * and v instead (vkl_attention_backward; flash kernels, the unfused path
 * that stores the Lq x Lk probabilities, or both): a graph of forward plus
 * backward minus the forward alone, GFLOP/s counted as 2.5 times the
 * forward's (10 B H LQ LK D; the flash kernels recompute the scores in each
 * of their three passes, so they do 16 B H LQ LK D), and the peak device
 * memory of the forward-plus-backward graph. Figures only; nothing is
 * asserted. */
#include "bench_attention.h"
#include "ops.h"
#include "vkl.h"
#include "bench_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One operand [B,H,L,D], stored as such or in the token layout [B,L,H*D]. */
static vkl_tensor *operand(vkl_ctx *c, vkl_dtype dt, int tokens, int64_t B, int64_t H, int64_t L, int64_t D,
                           uint64_t seed, vkl_err *e)
{
    int64_t s4[4] = {B, H, L, D}, s3[3] = {B, L, H * D}, n = B * H * L * D;
    vkl_tensor *t = tokens ? vkl_tensor_new(c, dt, 3, s3, e) : vkl_tensor_new(c, dt, 4, s4, e);
    float *host = malloc(sizeof(float) * (size_t)n);
    if (!t || !host) {
        free(host);
        vkl_tensor_free(t);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) host[i] = (float)(((uint64_t)i * 7919u + seed) % 1000) / 500.0f - 1.0f;
    int rc = vkl_tensor_upload(c, t, host, VKL_F32, e);
    free(host);
    if (rc) {
        vkl_tensor_free(t);
        return NULL;
    }
    return t;
}

static vkl_tensor *as_bhld(vkl_graph *g, vkl_tensor *t, int tokens, int64_t B, int64_t H, int64_t L, int64_t D)
{
    if (!tokens) return t;
    int64_t s4[4] = {B, L, H, D};
    int perm[4] = {0, 2, 1, 3};
    return vkl_permute(g, vkl_reshape(g, t, 4, s4), perm);
}

/* Forward alone, then forward plus the backward along `path`. */
static int bench_backward(vkl_ctx *c, vkl_tensor *Q, vkl_tensor *K, vkl_tensor *V, int tokens, int64_t B, int64_t H,
                          int64_t LQ, int64_t LK, int64_t D, int causal, vkl_attn_variant want, vkl_attn_grad_path path,
                          int64_t min_reps, vkl_err *e)
{
    const char *pname = path == VKL_ATTN_GRAD_FLASH ? "flash" : "unfused";
    float scale = 1.0f / sqrtf((float)D);
    int rc = -1, reps_f = 0, reps_b = 0;
    double t_fwd = 0, t_all = 0, t_plan = 0, first_f = 0, first_b = 0;
    vkl_graph *gf = vkl_graph_new(c), *gb = NULL;
    vkl_tensor *y = vkl_attention_ex(gf, as_bhld(gf, Q, tokens, B, H, LQ, D), as_bhld(gf, K, tokens, B, H, LK, D),
                                     as_bhld(gf, V, tokens, B, H, LK, D), scale, causal, want);
    vkl_graph_keep(gf, y);
    if (vkl_graph_failed(gf)) {
        vkl_fail(e, "%s", vkl_graph_error(gf));
        goto done;
    }
    if (vkl_graph_plan(gf, e) || vkl_bench_time_graph_ex(gf, (int)min_reps, 1.0, &t_fwd, &reps_f, &first_f, e)) goto done;
    vkl_graph_free(gf);
    gf = NULL;

    vkl_mem_reset_peak(c);
    gb = vkl_graph_new(c);
    vkl_tensor *q = as_bhld(gb, Q, tokens, B, H, LQ, D), *k = as_bhld(gb, K, tokens, B, H, LK, D);
    vkl_tensor *v = as_bhld(gb, V, tokens, B, H, LK, D);
    y = vkl_attention_ex(gb, q, k, v, scale, causal, want);
    int need[3] = {1, 1, 1};
    vkl_tensor *grad[3] = {NULL, NULL, NULL};
    /* dy = y: any f32 [B,H,LQ,D] tensor serves for timing */
    if (vkl_attention_backward(gb, q, k, v, y, y, scale, causal, need, grad, path)) {
        vkl_fail(e, "%s", vkl_graph_error(gb));
        goto done;
    }
    for (int i = 0; i < 3; i++) vkl_graph_keep(gb, grad[i]);
    t_plan = vkl_bench_now();
    if (vkl_graph_plan(gb, e)) goto done;
    t_plan = vkl_bench_now() - t_plan;
    if (vkl_bench_time_graph_ex(gb, (int)min_reps, 1.0, &t_all, &reps_b, &first_b, e)) goto done;
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    double t_bwd = t_all - t_fwd, flops = 10.0 * B * H * LQ * LK * D;
    printf("attention backward (%s) B=%lld H=%lld Lq=%lld Lk=%lld D=%lld%s%s: %.3f ms (forward+backward %.3f ms median "
           "of %d, forward %.3f ms median of %d), %.2f GFLOP/s (counted as 2.5x forward)\n",
           pname, (long long)B, (long long)H, (long long)LQ, (long long)LK, (long long)D, causal ? " causal" : "",
           tokens ? " token layout" : "", t_bwd * 1e3, t_all * 1e3, reps_b, t_fwd * 1e3, reps_f,
           t_bwd > 0 ? flops / t_bwd * 1e-9 : 0.0);
    printf("  %s: peak device memory %.1f MiB (arena %.1f MiB; one [B,H,Lq,Lk] f32 matrix is %.1f MiB), %d dispatches, "
           "plan %.2f s, first run %.2f s (forward alone %.2f s; lavapipe compiles shaders there)\n", pname, ms.total_peak / 1048576.0, vkl_graph_arena_bytes(gb) / 1048576.0,
           4.0 * B * H * LQ * LK / 1048576.0, vkl_graph_dispatch_count(gb), t_plan, first_b,
           first_f);
    rc = 0;
done:
    vkl_graph_free(gf);
    vkl_graph_free(gb);
    return rc;
}

int vkl_bench_attention(int argc, char **argv)
{
    int64_t B = 1, H = 8, LQ = 4096, LK = 4096, D = 40, min_reps = 3;
    int causal = 0, tokens = 0, backward = 0, paths = 1; /* bit 0 flash, bit 1 unfused */
    vkl_attn_variant want = VKL_ATTN_AUTO;
    vkl_dtype dt = VKL_F32;
    int dti = 0, variant = 0, path = 0;
    static const vkl_dtype dtypes[] = {VKL_F32, VKL_F16, VKL_BF16};
    static const vkl_attn_variant variants[] = {VKL_ATTN_AUTO, VKL_ATTN_STREAM, VKL_ATTN_TILED};
    const vkl_arg opts[] = {
        {"--batch", NULL, VKL_ARG_I64, VKL_AS_I64(&B), 1, 1 << 30, .help = "B"},
        {"--heads", NULL, VKL_ARG_I64, VKL_AS_I64(&H), 1, 1 << 30, .help = "H"},
        {"--q", NULL, VKL_ARG_I64, VKL_AS_I64(&LQ), 1, 1 << 30, .help = "LQ  query length"},
        {"--kv", NULL, VKL_ARG_I64, VKL_AS_I64(&LK), 1, 1 << 30, .help = "LK  key/value length"},
        {"--dim", NULL, VKL_ARG_I64, VKL_AS_I64(&D), 1, 1 << 30, .help = "D  head dimension"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f32|f16|bf16", .help = "T"},
        {"--causal", NULL, VKL_ARG_FLAG, VKL_AS_INT(&causal), .help = " mask later keys"},
        {"--tokens", NULL, VKL_ARG_FLAG, VKL_AS_INT(&tokens), .help = " [B, L, H*D] token layout"},
        {"--variant", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&variant), .choices = "auto|stream|tiled", .help = "V"},
        {"--reps", NULL, VKL_ARG_I64, VKL_AS_I64(&min_reps), 1, 200, .help = "R"},
        {"--backward", NULL, VKL_ARG_FLAG, VKL_AS_INT(&backward), .help = " time the backward pass too"},
        {"--path", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&path), .choices = "flash|unfused|both", .help = "P  of --backward"},
    };
    int prc = vkl_bench_args("attention", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    dt = dtypes[dti];
    want = variants[variant];
    paths = path + 1; /* bit 0 flash, bit 1 unfused */
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    if (vkl_ctx_create(NULL, &c, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    int rc = 1;
    vkl_graph *g = NULL;
    vkl_tensor *Q = operand(c, dt, tokens, B, H, LQ, D, 1, &e);
    vkl_tensor *K = Q ? operand(c, dt, tokens, B, H, LK, D, 2, &e) : NULL;
    vkl_tensor *V = K ? operand(c, dt, tokens, B, H, LK, D, 3, &e) : NULL;
    if (!V) goto done;
    if (backward) {
        printf("device: %s (profile %s)\n", vkl_ctx_caps(c)->name, vkl_ctx_caps(c)->profile);
        for (int p = 0; p < 2; p++)
            if (paths >> p & 1 && bench_backward(c, Q, K, V, tokens, B, H, LQ, LK, D, causal, want,
                                                  p ? VKL_ATTN_GRAD_UNFUSED : VKL_ATTN_GRAD_FLASH, min_reps, &e))
                goto done;
        rc = 0;
        goto done;
    }
    vkl_mem_reset_peak(c);
    g = vkl_graph_new(c);
    vkl_tensor *y = vkl_attention_ex(g, as_bhld(g, Q, tokens, B, H, LQ, D), as_bhld(g, K, tokens, B, H, LK, D),
                                     as_bhld(g, V, tokens, B, H, LK, D), 1.0f / sqrtf((float)D), causal, want);
    vkl_graph_keep(g, y);
    double t_plan = vkl_bench_now();
    if (vkl_graph_plan(g, &e)) goto done;
    t_plan = vkl_bench_now() - t_plan;
    if (vkl_graph_run(g, &e)) goto done;
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
    uint32_t wg, tq, kb, kt;
    vkl_attn_variant var = vkl_attention_pick(c, D, want, &wg, &tq, &kb, &kt);
    double flops = 4.0 * B * H * LQ * LK * D;
    printf("attention B=%lld H=%lld Lq=%lld Lk=%lld D=%lld %s%s%s: %.3f ms median of %d, %.2f GFLOP/s\n", (long long)B,
           (long long)H, (long long)LQ, (long long)LK, (long long)D, vkl_dtype_name(dt), causal ? " causal" : "",
           tokens ? " token layout" : "", med * 1e3, reps, flops / med * 1e-9);
    printf("device: %s (profile %s), kernel %s: workgroup %u, %u query rows per invocation, %u keys per block%s; "
           "%d dispatches, plan %.2f s\n", vkl_ctx_caps(c)->name, vkl_ctx_caps(c)->profile,
           var == VKL_ATTN_TILED ? "tiled" : "stream", wg, tq, kb, var == VKL_ATTN_TILED ? " (shared tiles)" : "",
           vkl_graph_dispatch_count(g), t_plan);
    printf("peak device memory %.1f MiB (inputs %.1f MiB, output %.1f MiB; the Lq x Lk scores would be %.1f MiB)\n",
           ms.total_peak / 1048576.0,
           (double)(vkl_tensor_nbytes(Q) + vkl_tensor_nbytes(K) + vkl_tensor_nbytes(V)) / 1048576.0,
           (double)vkl_tensor_nbytes(y) / 1048576.0, 4.0 * B * H * LQ * LK / 1048576.0);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora: %s\n", e.msg[0] ? e.msg : g && vkl_graph_failed(g) ? vkl_graph_error(g) : "out of memory");
    vkl_graph_free(g);
    vkl_tensor_free(Q);
    vkl_tensor_free(K);
    vkl_tensor_free(V);
    vkl_ctx_destroy(c);
    return rc;
}
