#include "bench_train.h"
#include "bench_flops.h"
#include "bench_util.h"

#include "lora/lora_apply.h"
#include "progress.h"
#include "rng.h"
#include "sd/sd_random.h"
#include "sd/sd_source.h"
#include "train/sd_train_step.h"

#include <stdlib.h>
#include <string.h>

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* What kohya's default network trains: to_q/k/v/out.0 of both attentions of
 * every transformer block. */
static int attention_projection(const char *name)
{
    return !strncmp(name, "unet.", 5) && strstr(name, ".transformer_blocks.") &&
           (strstr(name, ".attn1.to_") || strstr(name, ".attn2.to_"));
}

/* Adapters with small random down and up matrices (both nonzero, so every
 * gradient is real work). */
static int random_adapters(const vkl_sd_config *cfg, int rank, vkl_lora *l, vkl_err *e)
{
    vkl_lora_targets tg;
    memset(l, 0, sizeof *l);
    if (vkl_lora_targets_from_sd(cfg, &tg, e)) return -1;
    uint64_t draw = 0;
    int rc = -1;
    for (int i = 0; i < tg.n; i++) {
        const vkl_lora_target *t = &tg.v[i];
        if (!attention_projection(t->name) || t->ndim != 2) continue;
        vkl_lora_module *m = vkl_lora_add_module(l, e);
        if (!m) goto done;
        m->name = strdup(t->name);
        m->kname = strdup(t->kname);
        m->source = strdup(t->kname);
        m->kind = VKL_LORA_KIND_LORA;
        m->alpha = (float)rank;
        m->has_alpha = 1;
        m->alpha_dtype = VKL_F32;
        int64_t ds[2] = {rank, t->shape[1]}, us[2] = {t->shape[0], rank};
        float *down = vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], 2, ds, e);
        float *up = down ? vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], 2, us, e) : NULL;
        if (!up || !m->name || !m->kname || !m->source) goto done;
        m->t[VKL_LORA_DOWN].dtype = m->t[VKL_LORA_UP].dtype = VKL_F32;
        for (int64_t k = 0; k < ds[0] * ds[1]; k++) down[k] = 0.01f * vkl_rng_normal_at(5, 1, draw++);
        for (int64_t k = 0; k < us[0] * us[1]; k++) up[k] = 0.01f * vkl_rng_normal_at(5, 2, draw++);
        if (vkl_lora_module_finish(m, t, e)) goto done;
    }
    rc = l->n ? 0 : vkl_fail(e, "the model has no attention projections");
done:
    vkl_lora_targets_free(&tg);
    return rc;
}

int vkl_bench_train_step(int argc, char **argv)
{
    const char *family = "sd1.5", *model = NULL;
    int W = 256, H = 256, rank = 16, ck = 1, batch = 1, steps = 3, bits = 32, mixed = 0;
    int optimizer = 0;
    const vkl_arg opts[] = {
        {"--family", NULL, VKL_ARG_STR, VKL_AS_STR(&family), .help = "sd1.5|sd2.1|sdxl  random weights of that size"},
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&model), .help = "PATH  random weights of that model's size"},
        {"--width", NULL, VKL_ARG_INT, VKL_AS_INT(&W), 64, 65536, .help = "W  a multiple of 64"},
        {"--height", NULL, VKL_ARG_INT, VKL_AS_INT(&H), 64, 65536, .help = "H  a multiple of 64"},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&rank), 1, 1024, .help = "R"},
        {"--checkpointing", NULL, VKL_ARG_INT, VKL_AS_INT(&ck), 0, 1, .help = "0|1"},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&batch), 1, 64, .help = "N"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&steps), 0, 100, .help = "N  (0: plan only)"},
        {"--mixed-precision", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&mixed), .choices = "no|fp16", .help = "P"},
        {"--optimizer", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&optimizer), .choices = "adamw|adamw8bit", .help = "O"},
    };
    int prc = vkl_bench_args("train-step", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    bits = optimizer ? 8 : 32;
    if (W % 64 || H % 64) {
        fprintf(stderr, "vklora bench train-step: --width %d --height %d: expected multiples of 64\n", W, H);
        return 2;
    }
    vkl_sd_config cfg;
    vkl_err e = {{0}};
    vkl_ctx *c = NULL;
    vkl_weights *w = NULL;
    vkl_lora lora;
    memset(&lora, 0, sizeof lora);
    vkl_lora_set *set = NULL;
    vkl_tensor **params = NULL;
    vkl_adamw *opt = NULL;
    vkl_sd_train_step *s = NULL;
    vkl_tensor *seed = NULL;
    float *noisy = NULL, *target = NULL, *text = NULL, *pooled = NULL, *time_ids = NULL;
    double *times = NULL;
    int rc = 1, np = 0;
    if (model) {
        /* the sizes of a model file or folder (its weights are not read) */
        vkl_sd_source *src = NULL;
        if (vkl_sd_source_open(model, NULL, &src, &e)) goto done;
        cfg = *vkl_sd_source_config(src);
        vkl_sd_source_close(src);
        family = vkl_sd_family_name(cfg.family);
    } else if (vkl_sd_config_preset(family, &cfg, &e)) {
        goto done;
    }
    if (vkl_ctx_create(NULL, &c, &e)) goto done;
    w = vkl_weights_new();
    double t0 = vkl_progress_now();
    if (vkl_sd_random_weights(c, &cfg, "unet.", VKL_F16, 1, w, &e)) goto done;
    fprintf(stderr, "random %s UNet (%.0f MiB of f16 weights) in %.1f s\n", family, vkl_weights_bytes(w) / 1048576.0,
            vkl_progress_now() - t0);
    vkl_lora_use use = {&lora, 1.0f, 1.0f};
    if (random_adapters(&cfg, rank, &lora, &e) || vkl_lora_set_build(c, &use, 1, &set, &e) ||
        vkl_sd_train_params(set, &params, &np, &e))
        goto done;
    int64_t nparam = 0;
    for (int i = 0; i < np; i++) nparam += vkl_tensor_nelem(params[i]);
    vkl_adamw_opts ao;
    vkl_adamw_opts_default(&ao);
    ao.max_grad_norm = 1.0f;
    ao.state_bits = bits;
    if (!(opt = vkl_adamw_new(c, params, np, NULL, &ao, &e))) goto done;
    int f = 1 << (cfg.vae.n_levels - 1);
    /* SDXL: the pooled text embedding is what add_embedding takes besides the 6 time-id sinusoids */
    int P = cfg.unet.add_text_time
                ? cfg.unet.projection_class_embeddings_input_dim - 6 * cfg.unet.addition_time_embed_dim : 0;
    vkl_sd_train_shape sh = {batch, cfg.unet.in_channels, H / f, W / f, 77, cfg.unet.cross_attention_dim, P};
    vkl_unet unet = {&cfg.unet, w, set, ck};
    vkl_mem_reset_peak(c);
    t0 = vkl_progress_now();
    /* fp16 as the trainer runs it: f16 activations and a loss scale */
    vkl_sd_train_opts so = {ck, opt, NULL, 1.0f, NULL, 0, mixed, NULL, NULL, NULL, 0, NULL};
    if (mixed) {
        float S = 65536.0f;
        if (!(seed = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){1}, &e)) || vkl_tensor_upload(c, seed, &S, VKL_F32, &e) ||
            vkl_adamw_set_grad_scale(opt, S, &e))
            goto done;
        so.loss_seed = seed;
    }
    if (vkl_sd_train_step_new_ex(c, &unet, &sh, &so, &s, &e)) goto done;
    double plan_s = vkl_progress_now() - t0;
    size_t nl = (size_t)batch * sh.channels * sh.height * sh.width, nt = (size_t)batch * 77 * sh.context;
    noisy = malloc(sizeof(float) * nl);
    target = malloc(sizeof(float) * nl);
    text = malloc(sizeof(float) * nt);
    times = malloc(sizeof(double) * (size_t)(steps + 1));
    pooled = malloc(sizeof(float) * (size_t)batch * (P + 1));
    time_ids = malloc(sizeof(float) * (size_t)batch * 6);
    float tv[64], loss = 0, gn = 0;
    if (!noisy || !target || !text || !times || !pooled || !time_ids) {
        vkl_fail(&e, "out of host memory");
        goto done;
    }
    for (size_t i = 0; i < nl; i++) {
        noisy[i] = vkl_rng_normal_at(7, 1, i);
        target[i] = vkl_rng_normal_at(7, 2, i);
    }
    for (size_t i = 0; i < nt; i++) text[i] = vkl_rng_normal_at(7, 3, i);
    for (size_t i = 0; i < (size_t)batch * P; i++) pooled[i] = vkl_rng_normal_at(7, 4, i);
    for (int b = 0; b < batch; b++) {
        /* an uncropped sample of the benchmarked size */
        float ids[6] = {(float)H, (float)W, 0, 0, (float)H, (float)W};
        memcpy(time_ids + 6 * b, ids, sizeof ids);
    }
    for (int b = 0; b < batch && b < 64; b++) tv[b] = (float)(100 + 397 * b % 900);
    /* the first run also compiles the pipelines: timed apart. --steps 0
     * plans only: the memory figures without the time (slow devices) */
    for (int k = 0; k <= steps && steps; k++) {
        t0 = vkl_progress_now();
        vkl_sd_train_batch tb = {noisy, tv, text, target, NULL, NULL, P ? pooled : NULL, P ? time_ids : NULL};
        if (vkl_sd_train_step_run_batch(s, &tb, k + 1, 1e-4f, &loss, &e) ||
            vkl_sd_train_step_stats(s, &gn, NULL, &e))
            goto done;
        double dt = vkl_progress_now() - t0;
        fprintf(stderr, "%s %d: %.2f s, loss %.5f, gradient norm %.4g\n", k ? "step" : "warm-up", k, dt, loss, gn);
        if (k) times[k - 1] = dt;
    }
    if (steps) qsort(times, (size_t)steps, sizeof *times, cmp_double);
    else times[0] = 0;
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    /* a LoRA step runs the forward, the activation gradients (as much work
     * again; frozen weights need no weight gradients) and with checkpointing
     * the forward once more */
    double fwd = vkl_bench_unet_forward_flops(&cfg.unet, batch, H / f, W / f, 77);
    printf("train-step %s %dx%d: UNet forward %.1f GFLOP (counted), a step about %.1f GFLOP%s", family, W, H,
           fwd / 1e9, (2 + ck) * fwd / 1e9, steps ? "" : "\n");
    if (steps) printf(", %.2f GFLOP/s\n", (2 + ck) * fwd / 1e9 / times[steps / 2]);
    printf("train-step %s %dx%d batch %d, LoRA rank %d on %d attention projections (%.2f M parameters), "
           "checkpointing %s, activations %s: %.2f s per step (median of %d), graph build+plan %.1f s; activation arena %.0f MiB, "
           "peak device memory %.0f MiB (weights %.0f MiB, %s state %.2f MiB = %.3f bytes per parameter); "
           "device %s\n",
           family, W, H, batch, rank, np / 2, nparam / 1e6, ck ? "on" : "off",
           vkl_sd_train_step_fp16(s) ? "f16 (loss scale 65536)" : mixed ? "f32 (no fp16 on this device)" : "f32",
           times[steps / 2], steps, plan_s,
           vkl_sd_train_step_arena_bytes(s) / 1048576.0, ms.total_peak / 1048576.0,
           vkl_weights_bytes(w) / 1048576.0, bits == 8 ? "adamw8bit" : "adamw",
           vkl_adamw_state_bytes(opt) / 1048576.0, (double)vkl_adamw_state_bytes(opt) / (double)nparam,
           vkl_ctx_caps(c)->name);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora bench train-step: %s\n", e.msg);
    free(noisy);
    free(target);
    free(text);
    free(times);
    free(pooled);
    free(time_ids);
    vkl_sd_train_step_free(s);
    vkl_tensor_free(seed);
    vkl_adamw_free(opt);
    free(params);
    vkl_lora_set_free(set);
    vkl_lora_free(&lora);
    vkl_weights_free(w);
    vkl_ctx_destroy(c);
    return rc;
}
