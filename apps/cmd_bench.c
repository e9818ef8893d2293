/* vklora bench OP ...: figures for the hot ops, never asserted on. */
#include "app.h"
#include "bench_allreduce.h"
#include "bench_attention.h"
#include "bench_conv2d.h"
#include "bench_lm.h"
#include "bench_lora.h"
#include "bench_unet.h"
#include "bench_norm.h"
#include "bench_train.h"
#include "ops.h"
#include "vkl.h"
#include "bench_util.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>


static int bench_gemm(int argc, char **argv)
{
    int64_t M = 1024, N = 1024, K = 1024;
    vkl_dtype dt = VKL_F32;
    int min_reps = 3, dti = 0, linear = 0;
    static const vkl_dtype dtypes[] = {VKL_F32, VKL_F16,  VKL_BF16, VKL_NF4,  VKL_NF4_DQ, VKL_Q4_0, VKL_Q4_1,
                                       VKL_Q5_0, VKL_Q5_1, VKL_Q8_0, VKL_Q4_K, VKL_Q5_K,   VKL_Q6_K};
    const vkl_arg opts[] = {
        {"--m", NULL, VKL_ARG_I64, VKL_AS_I64(&M), 1, 1 << 30, .help = "M  rows of A"},
        {"--n", NULL, VKL_ARG_I64, VKL_AS_I64(&N), 1, 1 << 30, .help = "N  columns of B"},
        {"--k", NULL, VKL_ARG_I64, VKL_AS_I64(&K), 1, 1 << 30, .help = "K  the inner size"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti),
         .choices = "f32|f16|bf16|nf4|nf4dq|q4_0|q4_1|q5_0|q5_1|q8_0|q4_k|q5_k|q6_k", .help = "T  of B"},
        /* 1: B is a linear layer's weight W [N, K] (x W^T, a forward); 0: B
         * [K, N] as stored, the layout of a linear layer's input gradient dy W */
        {"--linear", NULL, VKL_ARG_INT, VKL_AS_INT(&linear), 0, 1, .help = "0|1  B stored as [N, K] (x W^T)"},
        {"--reps", NULL, VKL_ARG_INT, VKL_AS_INT(&min_reps), 1, 200, .help = "R  timed runs at least"},
    };
    int prc = vkl_bench_args("gemm", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    dt = dtypes[dti];
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    if (vkl_ctx_create(NULL, &c, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    int rc = 1;
    int64_t as[2] = {M, K}, bs[2] = {linear ? N : K, linear ? K : N};
    vkl_tensor *A = vkl_tensor_new(c, VKL_F32, 2, as, &e);
    vkl_tensor *B = A ? vkl_tensor_new(c, dt, 2, bs, &e) : NULL;
    vkl_graph *g = NULL;
    float *host = malloc(sizeof(float) * (size_t)(M * K > K * N ? M * K : K * N));
    if (!B || !host) goto done;
    for (int64_t i = 0; i < M * K; i++) host[i] = (float)((i * 7919) % 1000) / 1000.0f - 0.5f;
    if (vkl_tensor_upload(c, A, host, VKL_F32, &e)) goto done;
    for (int64_t i = 0; i < K * N; i++) host[i] = (float)((i * 104729) % 1000) / 1000.0f - 0.5f;
    if (vkl_tensor_upload(c, B, host, VKL_F32, &e)) goto done;
    g = vkl_graph_new(c);
    vkl_tensor *y = linear ? vkl_linear(g, A, B, NULL) : vkl_matmul(g, A, B);
    vkl_graph_keep(g, y);
    if (vkl_graph_failed(g)) {
        vkl_fail(&e, "%s", vkl_graph_error(g));
        goto done;
    }
    if (vkl_graph_plan(g, &e)) goto done;
    double med;
    int reps;
    if (vkl_bench_time_graph(g, min_reps, 1.0, &med, &reps, &e)) goto done;
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    uint32_t wg, tm, tn;
    vkl_matmul_tile(c, &wg, &tm, &tn);
    printf("gemm m=%lld n=%lld k=%lld A f32 B %s%s (%llu bytes): %.3f ms median of %d, %.2f GFLOP/s\n", (long long)M,
           (long long)N, (long long)K, vkl_dtype_name(dt), linear ? " [N,K] transposed" : "",
           (unsigned long long)vkl_tensor_nbytes(B), med * 1e3, reps, 2.0 * M * N * K / med * 1e-9);
    printf("device: %s (profile %s), tile %ux%u per invocation, workgroup %u, peak device memory %.1f MiB\n",
           vkl_ctx_caps(c)->name, vkl_ctx_caps(c)->profile, tm, tn, wg, ms.total_peak / 1048576.0);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora: %s\n", e.msg);
    free(host);
    vkl_graph_free(g);
    vkl_tensor_free(A);
    vkl_tensor_free(B);
    vkl_ctx_destroy(c);
    return rc;
}

static const char *bench_usage =
    "usage: vklora bench BENCHMARK [options]   (figures only: GFLOP/s or s/step, and memory; nothing asserted)\n"
    "  gemm         --m M --n N --k K (1024) --dtype f32|f16|bf16|nf4|nf4dq|q4_0|q4_1|q5_0|q5_1|q8_0|q4_k|q5_k|q6_k\n"
    "               (f32) [--linear 0|1 (0; 1: B a weight [N, K], y = A B^T)] [--reps R (3)]\n"
    "  unet         --family sd1.5|sd2.1 --width W --height H (256) [--steps N (2)] [--batch N (2)]\n"
    "               [--weights f16|f32|nf4|nf4dq (f16)] [--lora-rank R (0)]\n"
    "  attention    --batch B --heads H --q LQ --kv LK --dim D ...\n"
    "  conv2d       --c C --o O --h H --w W --k K --stride S ...\n"
    "  linear-lora  --tokens T --in I --out O --rank R ...\n"
    "  group-norm   --n N --c C --h H --w W --groups G ...\n"
    "  train-step   --family sd1.5|sd2.1|sdxl or --model PATH (its sizes, random weights) --width W --height H (256)\n"
    "               [--rank R (16)] [--batch N (1)] [--steps N (3)]\n"
    "               [--checkpointing 0|1 (1)] [--mixed-precision no|fp16] [--optimizer adamw|adamw8bit]\n"
    "  allreduce    [--family sd1.5|sd2.1|sdxl (sd1.5)] [--rank R (16)] [--bucket-mib M (4)] [--reps N (10)]\n"
    "               (under mpirun -np N: the gradient sum of data-parallel training, MB/s)\n"
    "  lm-train     [--base-dtype f32|f16|nf4|nf4dq (f16)] [--layers 22] [--hidden 2048] [--seq-len 128] [--steps N (3)] ...\n"
    "               (LoRA steps on a LLaMA with random weights; default shape TinyLlama-1.1B)\n"
    "  lm           --shape tinyllama|llama3-8b|tiny (tinyllama) [--prompt-tokens N (128)] [--new-tokens N (32)]\n"
    "               [--weights f16|bf16|f32 (f16)] [--steps 1|0 (0: plan the prefill only)]\n"
    "A bad option prints that benchmark's full option list.\n";

int vkl_cmd_bench(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(bench_usage, stdout);
            return 0;
        }
    if (argc < 2) {
        fputs(bench_usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "gemm")) return bench_gemm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "unet")) return vkl_bench_unet(argc - 1, argv + 1);
    if (!strcmp(argv[1], "attention")) return vkl_bench_attention(argc - 1, argv + 1);
    if (!strcmp(argv[1], "conv2d")) return vkl_bench_conv2d(argc - 1, argv + 1);
    if (!strcmp(argv[1], "linear-lora")) return vkl_bench_linear_lora(argc - 1, argv + 1);
    if (!strcmp(argv[1], "group-norm")) return vkl_bench_group_norm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "train-step")) return vkl_bench_train_step(argc - 1, argv + 1);
    if (!strcmp(argv[1], "allreduce")) return vkl_bench_allreduce(argc - 1, argv + 1);
    if (!strcmp(argv[1], "lm-train")) return vkl_bench_lm_train(argc - 1, argv + 1);
    if (!strcmp(argv[1], "lm")) return vkl_bench_lm(argc - 1, argv + 1);
    fprintf(stderr, "vklora bench: unknown benchmark '%s' (known: gemm, unet, attention, conv2d, linear-lora, allreduce, "
                    "group-norm, train-step, lm, lm-train)\n", argv[1]);
    return 2;
}
