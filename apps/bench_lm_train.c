/* vklora bench lm-train: what a frozen base costs in memory and time per
 * LoRA step, f16 against NF4 (QLoRA), NF4 with double-quantised scales and
 * NF4 embeddings (nf4dq) and f32, on a LLaMA with random weights. */
#include "bench_lm.h" /* declares both LLaMA benchmarks */
#include "bench_util.h"

#include "app.h"
#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
#include "lora/lora_apply.h"

#include <stdlib.h>
#include <string.h>

int vkl_bench_lm_train(int argc, char **argv)
{
    /* TinyLlama-1.1B: 22 layers of hidden 2048, 32 query and 4 key/value heads, MLP 5632, vocabulary 32000 */
    vkl_llama_config cfg = {.hidden = 2048, .layers = 22, .heads = 32, .kv_heads = 4, .head_dim = 64,
                            .intermediate = 5632, .vocab = 32000, .max_pos = 2048, .rope_theta = 10000.0f,
                            .rms_eps = 1e-5f, .bos = 1, .eos = 2};
    int batch = 1, seq = 128, rank = 8, steps = 3;
    vkl_dtype base = VKL_F16;
    int dti = 1;
    static const vkl_dtype dtypes[] = {VKL_F32, VKL_F16, VKL_BF16, VKL_NF4, VKL_NF4_DQ};
    const vkl_arg opts[] = {
        {"--base-dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f32|f16|bf16|nf4|nf4dq", .help = "T"},
        {"--hidden", NULL, VKL_ARG_INT, VKL_AS_INT(&cfg.hidden), 1, 65536, .help = "N"},
        {"--layers", NULL, VKL_ARG_INT, VKL_AS_INT(&cfg.layers), 1, 1024, .help = "N"},
        {"--heads", NULL, VKL_ARG_INT, VKL_AS_INT(&cfg.heads), 1, 1024, .help = "N"},
        {"--kv-heads", NULL, VKL_ARG_INT, VKL_AS_INT(&cfg.kv_heads), 1, 1024, .help = "N"},
        {"--intermediate", NULL, VKL_ARG_INT, VKL_AS_INT(&cfg.intermediate), 1, 1 << 20, .help = "N"},
        {"--vocab", NULL, VKL_ARG_INT, VKL_AS_INT(&cfg.vocab), 2, 1 << 22, .help = "N"},
        {"--seq-len", NULL, VKL_ARG_INT, VKL_AS_INT(&seq), 2, 1 << 16, .help = "N"},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&batch), 1, 1024, .help = "N"},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&rank), 1, 1024, .help = "R"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&steps), 0, 100, .help = "N  (0: plan only)"},
    };
    int prc = vkl_bench_args("lm-train", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    base = dtypes[dti];
    if (cfg.heads < 1 || cfg.hidden % cfg.heads) {
        fprintf(stderr, "vklora bench lm-train: --hidden %d is not a multiple of --heads %d\n", cfg.hidden, cfg.heads);
        return 2;
    }
    cfg.head_dim = cfg.hidden / cfg.heads;
    if (cfg.max_pos < seq) cfg.max_pos = seq;

    vkl_err e = {{0}};
    vkl_ctx *c = NULL;
    vkl_llama *m = NULL;
    vkl_lora lora;
    memset(&lora, 0, sizeof lora);
    vkl_lora_set *set = NULL;
    vkl_llama_train *tr = NULL;
    int32_t *ids = NULL;
    double *times = NULL;
    int rc = 1;
    if (vkl_ctx_create(NULL, &c, &e)) goto done;
    double t0 = vkl_bench_now();
    if (vkl_llama_random(c, &cfg, base, 1, &m, &e)) goto done;
    double load_s = vkl_bench_now() - t0;
    uint64_t base_bytes = vkl_weights_bytes(m->w);
    fprintf(stderr, "random LLaMA (%d layers, hidden %d) with a %s base: %.1f MiB in %.1f s\n", cfg.layers, cfg.hidden,
            vkl_dtype_name(base), base_bytes / 1048576.0, load_s);
    vkl_llama_lora_opts lo = {.rank = rank, .alpha = (float)(2 * rank), .seed = 3};
    vkl_lora_use use = {&lora, 1.0f, 1.0f};
    if (vkl_llama_lora_init(m, &lo, &lora, &e) || vkl_lora_set_build(c, &use, 1, &set, &e)) goto done;
    vkl_llama_train_opts to = {.loraplus_ratio = 1.0f};
    vkl_adamw_opts_default(&to.adam);
    t0 = vkl_bench_now();
    if (vkl_llama_train_new(m, set, NULL, batch, seq, &to, &tr, &e)) goto done;
    double plan_s = vkl_bench_now() - t0;
    size_t n = (size_t)batch * seq;
    ids = malloc(sizeof(int32_t) * n);
    times = malloc(sizeof(double) * (size_t)(steps + 1));
    if (!ids || !times) {
        vkl_fail(&e, "out of host memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) ids[i] = (int32_t)(3 + (i * 7919) % (size_t)(cfg.vocab - 3));
    /* the first step also compiles the pipelines: timed apart; --steps 0 plans only */
    float loss = 0;
    for (int k = 0; k <= steps && steps; k++) {
        t0 = vkl_bench_now();
        if (vkl_llama_train_step(tr, ids, ids, NULL, k + 1, 1e-4f, &loss, &e)) goto done;
        double dt = vkl_bench_now() - t0;
        fprintf(stderr, "%s %d: %.2f s, loss %.4f\n", k ? "step" : "warm-up", k, dt, loss);
        if (k) times[k - 1] = dt;
    }
    if (steps) qsort(times, (size_t)steps, sizeof *times, vkl_bench_cmp_double);
    else times[0] = 0;
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    printf("lm-train %d layers hidden %d heads %d/%d mlp %d vocab %d, batch %d x %d tokens, LoRA rank %d on q_proj,v_proj, "
           "base %s: base %.1f MiB, peak device memory %.1f MiB, %.2f s per step (median of %d), plan %.1f s; device %s\n",
           cfg.layers, cfg.hidden, cfg.heads, cfg.kv_heads, cfg.intermediate, cfg.vocab, batch, seq, rank,
           vkl_dtype_name(base), base_bytes / 1048576.0, ms.total_peak / 1048576.0, times[steps / 2], steps, plan_s,
           vkl_ctx_caps(c)->name);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora bench lm-train: %s\n", e.msg);
    free(ids);
    free(times);
    vkl_llama_train_free(tr);
    vkl_lora_set_free(set);
    vkl_lora_free(&lora);
    vkl_llama_free(m);
    vkl_ctx_destroy(c);
    return rc;
}
