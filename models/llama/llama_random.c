/* A LLaMA of any shape with random weights (benchmarks): every weight the
 * forward reads, stored as vkl_llama_weight_dtype says for the base dtype
 * (NF4 projections are quantised from the random values on upload). */
#include "llama/llama.h"
#include "rng.h"

#include <stdio.h>
#include <stdlib.h>

/* uniform in [-a, a): splitmix64, cheap enough for a billion weights */
static float draw(uint64_t *s, float a)
{
    uint64_t z = vkl_splitmix64(s);
    return a * (2.0f * (float)(z >> 40) / 16777216.0f - 1.0f);
}

static int put(vkl_llama *m, vkl_dtype base, const char *name, int ndim, int64_t s0, int64_t s1, uint64_t *rng,
               float **buf, uint64_t *cap, vkl_err *e)
{
    uint64_t n = (uint64_t)s0 * (uint64_t)s1;
    if (n > *cap) {
        float *nb = realloc(*buf, sizeof(float) * n);
        if (!nb) return vkl_fail(e, "out of host memory for %s", name);
        *buf = nb;
        *cap = n;
    }
    /* norms at one; matrices with the spread of a 0.02-std initialisation */
    for (uint64_t i = 0; i < n; i++) (*buf)[i] = ndim == 1 ? 1.0f : draw(rng, 0.035f);
    int64_t shape[2] = {s0, s1};
    vkl_tensor *t = vkl_tensor_new(m->ctx, vkl_llama_weight_dtype(name, ndim, base), ndim, shape, e);
    if (!t) return vkl_err_prefix(e, "%s: ", name), -1;
    if (vkl_tensor_upload(m->ctx, t, *buf, VKL_F32, e) || vkl_weights_put(m->w, name, t, e)) {
        if (vkl_weights_find(m->w, name) != t) vkl_tensor_free(t);
        return vkl_err_prefix(e, "%s: ", name), -1;
    }
    return 0;
}

int vkl_llama_random(vkl_ctx *c, const vkl_llama_config *cfg, vkl_dtype base, uint64_t seed, vkl_llama **out,
                     vkl_err *e)
{
    *out = NULL;
    if (base != VKL_F32 && base != VKL_F16 && base != VKL_BF16 && base != VKL_NF4 && base != VKL_NF4_DQ)
        return vkl_fail(e, "LLaMA weights are stored as f32, f16, bf16, nf4 or nf4dq, not %s", vkl_dtype_name(base));
    if (vkl_llama_config_check(cfg, e)) return -1;
    vkl_llama *m = calloc(1, sizeof *m);
    if (!m || !(m->w = vkl_weights_new())) {
        free(m);
        return vkl_fail(e, "out of host memory");
    }
    m->ctx = c;
    m->cfg = *cfg;
    int64_t H = cfg->hidden, qd = (int64_t)cfg->heads * cfg->head_dim, kd = (int64_t)cfg->kv_heads * cfg->head_dim;
    int64_t I = cfg->intermediate, V = cfg->vocab;
    uint64_t rng = seed, cap = 0;
    float *buf = NULL;
    char name[96];
    int rc = put(m, base, "model.embed_tokens.weight", 2, V, H, &rng, &buf, &cap, e) ||
             put(m, base, "model.norm.weight", 1, H, 1, &rng, &buf, &cap, e) ||
             (!cfg->tie_embeddings && put(m, base, "lm_head.weight", 2, V, H, &rng, &buf, &cap, e));
    static const char *const parts[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    const int64_t rows[7] = {qd, kd, kd, H, I, I, H}, cols[7] = {H, H, H, qd, H, H, I};
    for (int l = 0; l < cfg->layers && !rc; l++) {
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
        rc = put(m, base, name, 1, H, 1, &rng, &buf, &cap, e);
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
        rc = rc || put(m, base, name, 1, H, 1, &rng, &buf, &cap, e);
        for (int p = 0; p < 7 && !rc; p++) {
            snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, parts[p]);
            rc = put(m, base, name, 2, rows[p], cols[p], &rng, &buf, &cap, e);
        }
    }
    free(buf);
    if (rc) {
        vkl_llama_free(m);
        return -1;
    }
    *out = m;
    return 0;
}
