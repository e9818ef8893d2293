#include "bench_lm.h"

#include "app.h"
#include "bench_util.h"
#include "llama/llama_generate.h"
#include "progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Published shapes (config.json of TinyLlama-1.1B and Meta-Llama-3-8B); tiny
 * is for smoke tests. */
static int shape(const char *name, vkl_llama_config *c)
{
    if (!strcmp(name, "tinyllama"))
        *c = (vkl_llama_config){.hidden = 2048, .layers = 22, .heads = 32, .kv_heads = 4, .head_dim = 64,
                                .intermediate = 5632, .vocab = 32000, .max_pos = 2048, .rope_theta = 10000,
                                .rms_eps = 1e-5f, .bos = 1, .eos = 2};
    else if (!strcmp(name, "llama3-8b"))
        *c = (vkl_llama_config){.hidden = 4096, .layers = 32, .heads = 32, .kv_heads = 8, .head_dim = 128,
                                .intermediate = 14336, .vocab = 128256, .max_pos = 8192, .rope_theta = 500000,
                                .rms_eps = 1e-5f, .bos = 128000, .eos = 128001};
    else if (!strcmp(name, "tiny"))
        *c = (vkl_llama_config){.hidden = 64, .layers = 2, .heads = 4, .kv_heads = 2, .head_dim = 16,
                                .intermediate = 172, .vocab = 1000, .max_pos = 512, .rope_theta = 10000,
                                .rms_eps = 1e-5f, .bos = 1, .eos = 2};
    else return -1;
    return 0;
}

/* One random weight: N(0, ~0.02)-like values from a hash (norms: 1). */
static int put(vkl_llama *m, vkl_dtype dt, const char *name, int64_t r, int64_t k, float *buf, vkl_err *e)
{
    int nd = k ? 2 : 1;
    int64_t shape[2] = {r, k}, n = r * (k ? k : 1);
    for (int64_t i = 0; i < n; i++)
        buf[i] = k ? (float)((int64_t)((uint64_t)(i + r) * 2654435761u % 2001) - 1000) * 4e-5f : 1.0f;
    vkl_tensor *t = vkl_tensor_new(m->ctx, nd == 2 ? dt : VKL_F32, nd, shape, e);
    if (!t || vkl_tensor_upload(m->ctx, t, buf, VKL_F32, e) || vkl_weights_put(m->w, name, t, e)) {
        if (t && vkl_weights_find(m->w, name) != t) vkl_tensor_free(t);
        return vkl_err_prefix(e, "%s: ", name), -1;
    }
    return 0;
}

static int random_model(vkl_llama *m, vkl_dtype dt, vkl_err *e)
{
    const vkl_llama_config *c = &m->cfg;
    int64_t H = c->hidden, q = (int64_t)c->heads * c->head_dim, kv = (int64_t)c->kv_heads * c->head_dim,
            I = c->intermediate, big = (int64_t)c->vocab * H > I * H ? (int64_t)c->vocab * H : I * H;
    float *buf = malloc(sizeof(float) * (size_t)big);
    if (!buf) return vkl_fail(e, "out of host memory");
    int rc = put(m, dt, "model.embed_tokens.weight", c->vocab, H, buf, e) || put(m, dt, "lm_head.weight", c->vocab, H, buf, e) ||
             put(m, dt, "model.norm.weight", H, 0, buf, e);
    char n[128];
    static const char *const parts[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    for (int l = 0; !rc && l < c->layers; l++) {
        int64_t rows[7] = {q, kv, kv, H, I, I, H}, cols[7] = {H, H, H, q, H, H, I};
        for (int p = 0; !rc && p < 7; p++) {
            snprintf(n, sizeof n, "model.layers.%d.%s.weight", l, parts[p]);
            rc = put(m, dt, n, rows[p], cols[p], buf, e);
        }
        snprintf(n, sizeof n, "model.layers.%d.input_layernorm.weight", l);
        rc = rc || put(m, dt, n, H, 0, buf, e);
        snprintf(n, sizeof n, "model.layers.%d.post_attention_layernorm.weight", l);
        rc = rc || put(m, dt, n, H, 0, buf, e);
    }
    free(buf);
    return rc;
}

typedef struct clock_state {
    double first, last;
    int n;
} clock_state;

static int tick(void *user, int32_t id)
{
    (void)id;
    clock_state *s = user;
    s->last = vkl_progress_now();
    if (!s->n++) s->first = s->last;
    return 0;
}

int vkl_bench_lm(int argc, char **argv)
{
    const char *name = "tinyllama";
    int64_t prompt = 128, gen = 32, steps = 1;
    vkl_dtype dt = VKL_F16;
    int dti = 0;
    static const vkl_dtype dtypes[] = {VKL_F16, VKL_BF16, VKL_F32};
    const vkl_arg opts[] = {
        {"--shape", NULL, VKL_ARG_STR, VKL_AS_STR(&name), .help = "tinyllama|llama3-8b|tiny"},
        {"--prompt-tokens", NULL, VKL_ARG_I64, VKL_AS_I64(&prompt), 1, 1 << 30, .help = "N"},
        {"--new-tokens", NULL, VKL_ARG_I64, VKL_AS_I64(&gen), 1, 1 << 30, .help = "N"},
        {"--weights", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&dti), .choices = "f16|bf16|f32", .help = "T"},
        {"--steps", NULL, VKL_ARG_I64, VKL_AS_I64(&steps), 0, 1, .help = "1|0  (0: plan the prefill only)"},
    };
    int prc = vkl_bench_args("lm", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    dt = dtypes[dti];
    vkl_llama m = {0};
    if (shape(name, &m.cfg)) {
        fprintf(stderr, "vklora bench lm: unknown shape '%s' (tinyllama, llama3-8b, tiny)\n", name);
        return 2;
    }
    if (prompt + gen > m.cfg.max_pos) {
        fprintf(stderr, "vklora bench lm: %lld + %lld tokens exceed the shape's %d positions\n", (long long)prompt,
                (long long)gen, m.cfg.max_pos);
        return 2;
    }
    vkl_err e = {{0}};
    int rc = 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(prompt + gen));
    vkl_tensor *tid = NULL, *mask = NULL;
    vkl_graph *g = NULL;
    if (!ids || vkl_ctx_create(NULL, &m.ctx, &e)) goto done;
    m.w = vkl_weights_new();
    double t0 = vkl_progress_now();
    if (!m.w || random_model(&m, dt, &e)) goto done;
    fprintf(stderr, "random %s (%.0f MiB of %s weights) in %.1f s\n", name, vkl_weights_bytes(m.w) / 1048576.0,
            vkl_dtype_name(dt), vkl_progress_now() - t0);
    for (int64_t i = 0; i < prompt; i++) ids[i] = (int32_t)(3 + (i * 7919) % (m.cfg.vocab - 3));
    vkl_mem_reset_peak(m.ctx);
    if (!steps) {
        /* the prefill graph, planned: its activation memory without running */
        tid = vkl_tensor_new(m.ctx, VKL_I32, 2, (int64_t[]){1, prompt}, &e);
        mask = tid ? vkl_llama_mask(m.ctx, 1, (int)prompt, 0, NULL, &e) : NULL;
        if (!mask) goto done;
        g = vkl_graph_new(m.ctx);
        vkl_llama_fwd f = {.mask = mask, .explicit_attn = 1};
        vkl_tensor *logits = vkl_llama_forward(g, &m, tid, &f);
        vkl_graph_keep(g, logits);
        t0 = vkl_progress_now();
        if (vkl_graph_failed(g)) {
            vkl_fail(&e, "%s", vkl_graph_error(g));
            goto done;
        }
        if (vkl_graph_plan(g, &e)) goto done;
        vkl_mem_stats ms;
        vkl_mem_get_stats(m.ctx, &ms);
        printf("lm %s %s weights, prefill of %lld tokens planned in %.1f s (not run): activation arena %.0f MiB, "
               "weights %.0f MiB, peak device memory %.0f MiB; device %s\n",
               name, vkl_dtype_name(dt), (long long)prompt, vkl_progress_now() - t0, vkl_graph_arena_bytes(g) / 1048576.0,
               vkl_weights_bytes(m.w) / 1048576.0, ms.total_peak / 1048576.0, vkl_ctx_caps(m.ctx)->name);
        rc = 0;
        goto done;
    }
    clock_state cs = {0};
    int32_t *out = ids + prompt;
    int nout = 0;
    vkl_llama_gen_opts o = {.max_new = (int)gen, .stop_id = -1, .on_token = tick, .user = &cs};
    t0 = vkl_progress_now();
    if (vkl_llama_generate(&m, ids, (int)prompt, &o, out, &nout, &e)) goto done;
    double pre = cs.first - t0, dec = cs.last - cs.first;
    vkl_mem_stats ms;
    vkl_mem_get_stats(m.ctx, &ms);
    printf("lm %s %s weights: prefill %lld tokens in %.2f s (%.1f tokens/s), decode %d tokens in %.2f s "
           "(%.2f tokens/s); peak device memory %.0f MiB (weights %.0f MiB); device %s\n",
           name, vkl_dtype_name(dt), (long long)prompt, pre, prompt / pre, nout - 1, dec, nout > 1 ? (nout - 1) / dec : 0.0,
           ms.total_peak / 1048576.0, vkl_weights_bytes(m.w) / 1048576.0, vkl_ctx_caps(m.ctx)->name);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora bench lm: %s\n", e.msg);
    vkl_graph_free(g);
    vkl_tensor_free(mask);
    vkl_tensor_free(tid);
    vkl_weights_free(m.w);
    if (m.ctx) vkl_ctx_destroy(m.ctx);
    free(ids);
    return rc;
}
