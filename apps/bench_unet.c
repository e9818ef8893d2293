#include "bench_unet.h"
#include "bench_util.h"

#include "progress.h"
#include "lora/lora_apply.h"
#include "lora/lora_init.h"
#include "sd/sd_random.h"
#include "sd/unet.h"

#include <stdlib.h>
#include <string.h>

int vkl_bench_unet(int argc, char **argv)
{
    const char *family = "sd1.5";
    int W = 256, H = 256, steps = 2, batch = 2, lora_rank = 0;
    vkl_dtype dt = VKL_F16;
    int dti = 0;
    static const vkl_dtype dtypes[] = {VKL_F16, VKL_F32, VKL_NF4, VKL_NF4_DQ};
    const vkl_arg opts[] = {
        {"--family", NULL, VKL_ARG_STR, VKL_AS_STR(&family), .help = "sd1.5|sd2.1|sdxl"},
        {"--width", NULL, VKL_ARG_INT, VKL_AS_INT(&W), 64, 65536, .help = "W  a multiple of 64"},
        {"--height", NULL, VKL_ARG_INT, VKL_AS_INT(&H), 64, 65536, .help = "H  a multiple of 64"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&steps), 0, 1000, .help = "N  (0: plan only, the memory figures)"},
        {"--batch", NULL, VKL_ARG_INT, VKL_AS_INT(&batch), 1, 64, .help = "N"},
        {"--weights", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f16|f32|nf4|nf4dq", .help = "T"},
        {"--lora-rank", NULL, VKL_ARG_INT, VKL_AS_INT(&lora_rank), 0, 1024, .help = "R  (0: none)"},
    };
    int prc = vkl_bench_args("unet", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    dt = dtypes[dti];
    if (W % 64 || H % 64) {
        fprintf(stderr, "vklora bench unet: --width %d --height %d: expected multiples of 64\n", W, H);
        return 2;
    }
    vkl_sd_config cfg;
    vkl_err e = {{0}};
    vkl_ctx *c = NULL;
    vkl_weights *w = NULL;
    vkl_graph *g = NULL;
    vkl_tensor *x = NULL, *t = NULL, *ctx = NULL, *pooled = NULL, *time_ids = NULL;
    vkl_lora lora;
    memset(&lora, 0, sizeof lora);
    vkl_lora_set *set = NULL;
    int rc = 1;
    if (vkl_sd_config_preset(family, &cfg, &e) || vkl_ctx_create(NULL, &c, &e)) goto done;
    w = vkl_weights_new();
    double t0 = vkl_progress_now();
    if (vkl_sd_random_weights(c, &cfg, "unet.", dt, 1, w, &e)) goto done;
    fprintf(stderr, "random %s UNet (%.0f MiB of weights) in %.1f s\n", family, vkl_weights_bytes(w) / 1048576.0,
            vkl_progress_now() - t0);
    int h = H / 8, wd = W / 8;
    x = vkl_tensor_new(c, VKL_F32, 4, (int64_t[]){batch, cfg.unet.in_channels, h, wd}, &e);
    t = x ? vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){batch}, &e) : NULL;
    ctx = t ? vkl_tensor_new(c, VKL_F32, 3, (int64_t[]){batch, 77, cfg.unet.cross_attention_dim}, &e) : NULL;
    if (!ctx) goto done;
    size_t nx = (size_t)batch * cfg.unet.in_channels * h * wd, nc = (size_t)batch * 77 * cfg.unet.cross_attention_dim;
    float *hx = calloc(nx > nc ? nx : nc, sizeof(float)), tv[64];
    for (size_t i = 0; i < (nx > nc ? nx : nc); i++) hx[i] = (float)((i * 2654435761u) % 2000) / 1000.0f - 1.0f;
    for (int i = 0; i < batch && i < 64; i++) tv[i] = 500.0f;
    int up = !hx || vkl_tensor_upload(c, x, hx, VKL_F32, &e) || vkl_tensor_upload(c, ctx, hx, VKL_F32, &e) ||
             vkl_tensor_upload(c, t, tv, VKL_F32, &e);
    /* SDXL: a pooled text embedding and the size/crop ids of a WxH image */
    vkl_unet_added add = {NULL, NULL};
    if (!up && cfg.unet.add_text_time) {
        int P = cfg.unet.projection_class_embeddings_input_dim - 6 * cfg.unet.addition_time_embed_dim;
        float ids[6] = {(float)H, (float)W, 0, 0, (float)H, (float)W}, *rows = malloc(sizeof(float) * 6 * batch);
        pooled = P > 0 ? vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){batch, P}, &e) : NULL;
        time_ids = pooled ? vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){batch, 6}, &e) : NULL;
        for (int b = 0; rows && b < batch; b++) memcpy(rows + 6 * b, ids, sizeof ids);
        up = !rows || !time_ids || vkl_tensor_upload(c, pooled, hx, VKL_F32, &e) ||
             vkl_tensor_upload(c, time_ids, rows, VKL_F32, &e);
        free(rows);
        add = (vkl_unet_added){pooled, time_ids};
    }
    free(hx);
    if (up) goto done;
    /* with --lora-rank: run-time adapters on every attention projection, as a
     * style LoRA has them, to measure what the low-rank path costs per step */
    if (lora_rank > 0) {
        vkl_lora_use use = {&lora, 1.0f, 1.0f};
        if (vkl_lora_init_sd(&cfg, vkl_lora_select_unet_attention, NULL, lora_rank, (float)lora_rank, 2, 1, &lora, &e) ||
            vkl_lora_set_build(c, &use, 1, &set, &e))
            goto done;
    }
    vkl_unet m = {&cfg.unet, w, set, 0};
    g = vkl_graph_new(c);
    vkl_tensor *y = vkl_unet_forward_added(g, &m, 0, x, t, ctx, &add, NULL);
    vkl_graph_keep(g, y);
    vkl_mem_reset_peak(c);
    t0 = vkl_progress_now();
    if (vkl_graph_plan(g, &e)) goto done;
    double plan_s = vkl_progress_now() - t0;
    double best = 1e30, sum = 0;
    for (int s = 0; s < steps; s++) {
        t0 = vkl_progress_now();
        if (vkl_graph_run(g, &e)) goto done;
        double dtm = vkl_progress_now() - t0;
        sum += dtm;
        if (dtm < best) best = dtm;
        fprintf(stderr, "step %d: %.2f s\n", s + 1, dtm);
    }
    vkl_mem_stats ms;
    vkl_mem_get_stats(c, &ms);
    if (steps)
        printf("unet %s %dx%d batch %d (%s weights%s): %.2f s per step (best of %d, mean %.2f), plan %.1f s; "
               "activation arena %.0f MiB, peak device memory %.0f MiB; device %s\n",
               family, W, H, batch, vkl_dtype_name(dt), lora_rank ? ", run-time LoRA on attention" : "", best, steps,
               sum / steps, plan_s, vkl_graph_arena_bytes(g) / 1048576.0, ms.total_peak / 1048576.0,
               vkl_ctx_caps(c)->name);
    else
        printf("unet %s %dx%d batch %d (%s weights%s): planned only (--steps 0), plan %.1f s; activation arena "
               "%.0f MiB, peak device memory %.0f MiB; device %s\n",
               family, W, H, batch, vkl_dtype_name(dt), lora_rank ? ", run-time LoRA on attention" : "", plan_s,
               vkl_graph_arena_bytes(g) / 1048576.0, ms.total_peak / 1048576.0, vkl_ctx_caps(c)->name);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora bench unet: %s\n", e.msg);
    vkl_graph_free(g);
    vkl_lora_set_free(set);
    vkl_lora_free(&lora);
    vkl_tensor_free(x);
    vkl_tensor_free(t);
    vkl_tensor_free(ctx);
    vkl_tensor_free(pooled);
    vkl_tensor_free(time_ids);
    vkl_weights_free(w);
    vkl_ctx_destroy(c);
    return rc;
}
