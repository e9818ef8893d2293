/* Loading an HF LLaMA directory into the weights store; KV cache and mask tensors. */
#include "llama/llama.h"
#include "llama/llama_gguf.h"

#include "io/safetensors.h"
#include "llama/llama_shards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct expect {
    char name[96];
    int ndim;
    int64_t shape[2];
} expect;

/* Every weight the forward reads, with its shape. Returns the count. */
static int expected_weights(const vkl_llama_config *c, expect *x, int cap)
{
    int n = 0, H = c->hidden, qd = c->heads * c->head_dim, kd = c->kv_heads * c->head_dim, I = c->intermediate;
#define ADD(nd, s0, s1, ...)                                                                                           \
    do {                                                                                                               \
        if (n < cap) {                                                                                                 \
            snprintf(x[n].name, sizeof x[n].name, __VA_ARGS__);                                                        \
            x[n].ndim = nd;                                                                                            \
            x[n].shape[0] = s0;                                                                                        \
            x[n].shape[1] = s1;                                                                                        \
        }                                                                                                              \
        n++;                                                                                                           \
    } while (0)
    ADD(2, c->vocab, H, "model.embed_tokens.weight");
    ADD(1, H, 1, "model.norm.weight");
    if (!c->tie_embeddings) ADD(2, c->vocab, H, "lm_head.weight");
    for (int l = 0; l < c->layers; l++) {
        ADD(1, H, 1, "model.layers.%d.input_layernorm.weight", l);
        ADD(1, H, 1, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(2, qd, H, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(2, kd, H, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(2, kd, H, "model.layers.%d.self_attn.v_proj.weight", l);
        ADD(2, H, qd, "model.layers.%d.self_attn.o_proj.weight", l);
        if (c->qkv_bias) {
            ADD(1, qd, 1, "model.layers.%d.self_attn.q_proj.bias", l);
            ADD(1, kd, 1, "model.layers.%d.self_attn.k_proj.bias", l);
            ADD(1, kd, 1, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        if (c->o_bias) ADD(1, H, 1, "model.layers.%d.self_attn.o_proj.bias", l);
        ADD(2, I, H, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(2, I, H, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(2, H, I, "model.layers.%d.mlp.down_proj.weight", l);
    }
#undef ADD
    return n;
}

void vkl_llama_free(vkl_llama *m)
{
    if (!m) return;
    vkl_weights_free(m->w);
    free(m);
}

vkl_dtype vkl_llama_weight_dtype(const char *name, int ndim, vkl_dtype base)
{
    if (ndim != 2) return VKL_F32;
    /* nf4dq: every matrix, the embedding (read by embedding.comp) and lm_head
     * too, with double-quantised scales: the smallest base (about 3.9x under f16) */
    if (base == VKL_NF4_DQ) return VKL_NF4_DQ;
    if (base != VKL_NF4) return base;
    /* QLoRA quantises the layers' linear projections; the embedding (read by
     * row, not through a matmul) and lm_head stay 16-bit */
    size_t n = strlen(name), k = strlen("_proj.weight");
    return n > k && !strcmp(name + n - k, "_proj.weight") && !strncmp(name, "model.layers.", 13) ? VKL_NF4 : VKL_F16;
}

int vkl_llama_load(vkl_ctx *c, const char *dir, vkl_dtype matrix_dtype, vkl_llama **out, vkl_err *e)
{
    *out = NULL;
    int as_stored = matrix_dtype == VKL_LLAMA_AS_STORED;
    if (matrix_dtype != VKL_F32 && matrix_dtype != VKL_F16 && matrix_dtype != VKL_BF16 && matrix_dtype != VKL_NF4 &&
        matrix_dtype != VKL_NF4_DQ && !as_stored)
        return vkl_fail(e, "LLaMA weights are stored as f32, f16, bf16, nf4 or nf4dq, not %s",
                        vkl_dtype_name(matrix_dtype));
    struct stat st;
    if (as_stored && (stat(dir, &st) || !S_ISREG(st.st_mode) || !vkl_llama_is_gguf(dir)))
        return vkl_fail(e, "%s: only a GGUF model's weights can stay as stored", dir);
    if (!stat(dir, &st) && S_ISREG(st.st_mode))
        return vkl_llama_is_gguf(dir) ? vkl_llama_load_gguf(c, dir, matrix_dtype, out, e)
                                      : vkl_llama_load_llama2c(c, dir, matrix_dtype, out, e);
    char path[4096];
    vkl_llama *m = calloc(1, sizeof *m);
    if (!m) return vkl_fail(e, "out of host memory");
    m->ctx = c;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (vkl_llama_config_read(path, &m->cfg, e)) {
        free(m);
        return -1;
    }
    vkl_llama_shards sh; /* model.safetensors or its shards */
    if (vkl_llama_shards_open(dir, &sh, e)) {
        free(m);
        return -1;
    }
    snprintf(path, sizeof path, "%s", sh.label);
    int n = expected_weights(&m->cfg, NULL, 0);
    expect *x = calloc((size_t)n, sizeof *x);
    m->w = vkl_weights_new();
    float *buf = NULL;
    int rc = (!x || !m->w) ? vkl_fail(e, "out of host memory") : 0;
    if (!rc) expected_weights(&m->cfg, x, n);
    /* shapes first, so a wrong file fails before any upload */
    for (int i = 0; i < n && !rc; i++) {
        const vkl_st_file *f;
        const vkl_st_tensor *t = vkl_llama_shards_find(&sh, x[i].name, &f);
        if (!t) {
            rc = vkl_fail(e, "%s: weight %s is missing", path, x[i].name);
            break;
        }
        int ok = t->ndim == x[i].ndim && t->shape[0] == x[i].shape[0] && (x[i].ndim == 1 || t->shape[1] == x[i].shape[1]);
        if (!ok)
            rc = vkl_fail(e, "%s: weight %s has shape %s[%lld%s%lld], the config implies [%lld%s%lld]", path, x[i].name,
                          vkl_dtype_name(t->dtype), (long long)t->shape[0], t->ndim > 1 ? "," : "",
                          t->ndim > 1 ? (long long)t->shape[1] : 0LL, (long long)x[i].shape[0],
                          x[i].ndim > 1 ? "," : "", x[i].ndim > 1 ? (long long)x[i].shape[1] : 0LL);
    }
    uint64_t cap = 0;
    for (int i = 0; i < n && !rc; i++) {
        const vkl_st_file *f;
        const vkl_st_tensor *t = vkl_llama_shards_find(&sh, x[i].name, &f);
        if (t->nelem > cap) {
            float *nb = realloc(buf, sizeof(float) * t->nelem);
            if (!nb) {
                rc = vkl_fail(e, "out of host memory reading %s", x[i].name);
                break;
            }
            buf = nb;
            cap = t->nelem;
        }
        vkl_tensor *d = NULL;
        rc = vkl_st_read(f, t, VKL_F32, buf, e);
        if (!rc) d = vkl_tensor_new(c, vkl_llama_weight_dtype(x[i].name, t->ndim, matrix_dtype), t->ndim, t->shape, e);
        if (!rc && (!d || vkl_tensor_upload(c, d, buf, VKL_F32, e) || vkl_weights_put(m->w, x[i].name, d, e))) {
            if (d && vkl_weights_find(m->w, x[i].name) != d) vkl_tensor_free(d);
            rc = -1;
        }
        if (rc) vkl_err_prefix(e, "%s: %s: ", path, x[i].name);
    }
    free(buf);
    free(x);
    vkl_llama_shards_close(&sh);
    if (rc) {
        vkl_llama_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void vkl_llama_kv_free(vkl_llama_kv *kv)
{
    if (!kv) return;
    for (int l = 0; l < kv->layers; l++) {
        if (kv->k) vkl_tensor_free(kv->k[l]);
        if (kv->v) vkl_tensor_free(kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv);
}

int vkl_llama_kv_new(const vkl_llama *m, int batch, int max_len, vkl_llama_kv **out, vkl_err *e)
{
    *out = NULL;
    if (batch < 1 || max_len < 1) return vkl_fail(e, "KV cache: batch %d and length %d must be positive", batch, max_len);
    vkl_llama_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return vkl_fail(e, "out of host memory");
    kv->max_len = max_len;
    kv->batch = batch;
    kv->layers = m->cfg.layers;
    kv->k = calloc((size_t)kv->layers, sizeof *kv->k);
    kv->v = calloc((size_t)kv->layers, sizeof *kv->v);
    if (!kv->k || !kv->v) {
        vkl_llama_kv_free(kv);
        return vkl_fail(e, "out of host memory");
    }
    int64_t shape[4] = {max_len, batch, m->cfg.kv_heads, m->cfg.head_dim};
    for (int l = 0; l < kv->layers; l++) {
        kv->k[l] = vkl_tensor_new(m->ctx, VKL_F32, 4, shape, e);
        kv->v[l] = kv->k[l] ? vkl_tensor_new(m->ctx, VKL_F32, 4, shape, e) : NULL;
        if (!kv->v[l]) {
            vkl_err_prefix(e, "KV cache of %d positions: ", max_len);
            vkl_llama_kv_free(kv);
            return -1;
        }
    }
    *out = kv;
    return 0;
}

void vkl_llama_mask_values(int B, int L, int pos0, const int *attn, float *h)
{
    int Lk = pos0 + L;
    /* finite, so that a 0 * mask product in a gradient stays finite */
    const float neg = -1e30f;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++)
            for (int j = 0; j < Lk; j++) {
                int visible = j <= pos0 + i && (!attn || attn[(size_t)b * Lk + j]);
                h[((size_t)b * L + i) * Lk + j] = visible ? 0.0f : neg;
            }
}

vkl_tensor *vkl_llama_mask(vkl_ctx *c, int B, int L, int pos0, const int *attn, vkl_err *e)
{
    int Lk = pos0 + L;
    float *h = malloc(sizeof(float) * (size_t)B * (size_t)L * (size_t)Lk);
    if (!h) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    vkl_llama_mask_values(B, L, pos0, attn, h);
    int64_t shape[4] = {B, 1, L, Lk};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, 4, shape, e);
    if (t && vkl_tensor_upload(c, t, h, VKL_F32, e)) {
        vkl_tensor_free(t);
        t = NULL;
    }
    free(h);
    return t;
}
