/* Loading a LLaMA GGUF file: hyper-parameters from the metadata, every
 * weight checked for presence, shape and block type before any upload, q/k
 * rows put back into HF's order (on the raw blocks: a row is whole blocks),
 * then each weight either dequantised on the device into the model's dtype
 * or (VKL_LLAMA_AS_STORED) uploaded as its blocks, for the matmul to read. */
#include "llama/llama_gguf.h"

#include "io/gguf.h"
#include "io/gguf_device.h"
#include "quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* per layer: GGUF name, HF name */
static const char *const layer_names[][2] = {
    {"attn_norm", "input_layernorm"}, {"ffn_norm", "post_attention_layernorm"}, {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},   {"attn_v", "self_attn.v_proj"},           {"attn_output", "self_attn.o_proj"},
    {"ffn_gate", "mlp.gate_proj"},    {"ffn_up", "mlp.up_proj"},                {"ffn_down", "mlp.down_proj"},
};
#define NLAYER_NAMES (int)(sizeof layer_names / sizeof *layer_names)

int vkl_llama_gguf_name(const char *hf, char *out, size_t n)
{
    if (!strcmp(hf, "model.embed_tokens.weight")) return snprintf(out, n, "token_embd.weight"), 0;
    if (!strcmp(hf, "model.norm.weight")) return snprintf(out, n, "output_norm.weight"), 0;
    if (!strcmp(hf, "lm_head.weight")) return snprintf(out, n, "output.weight"), 0;
    int l, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &l, &used) != 1 || !used || l < 0) return -1;
    const char *rest = hf + used;
    for (int i = 0; i < NLAYER_NAMES; i++) {
        size_t k = strlen(layer_names[i][1]);
        if (!strncmp(rest, layer_names[i][1], k) && !strcmp(rest + k, ".weight"))
            return snprintf(out, n, "blk.%d.%s.weight", l, layer_names[i][0]), 0;
    }
    return -1;
}

int vkl_llama_gguf_permute_rows(uint8_t *rows, int heads, int hd, size_t row_bytes, int to_gguf)
{
    uint8_t *tmp = malloc(row_bytes * (size_t)hd);
    if (!tmp) return -1;
    for (int h = 0; h < heads; h++) {
        uint8_t *head = rows + (size_t)h * hd * row_bytes;
        for (int i = 0; i < hd / 2; i++)
            for (int j = 0; j < 2; j++) {
                size_t hf = (size_t)j * (hd / 2) + i, gg = (size_t)2 * i + j;
                memcpy(tmp + (to_gguf ? gg : hf) * row_bytes, head + (to_gguf ? hf : gg) * row_bytes, row_bytes);
            }
        memcpy(head, tmp, row_bytes * (size_t)hd);
    }
    free(tmp);
    return 0;
}

int vkl_llama_is_gguf(const char *path)
{
    FILE *f = fopen(path, "rb");
    char m[4] = {0};
    int yes = f && fread(m, 1, 4, f) == 4 && !memcmp(m, "GGUF", 4);
    if (f) fclose(f);
    return yes;
}

/* A count from the metadata: required (must be there) or left as is. */
static int meta_int(const vkl_gguf_file *f, const char *key, int *out, int required, vkl_err *e)
{
    uint64_t v;
    int r = vkl_gguf_get_uint(f, key, &v, e);
    if (r < 0) return -1;
    if (!r) return required ? vkl_fail(e, "%s: metadata key %s is missing", vkl_gguf_label(f), key) : 0;
    if (v > (1u << 30)) return vkl_fail(e, "%s: %s is %llu, out of range", vkl_gguf_label(f), key, (unsigned long long)v);
    *out = (int)v;
    return 0;
}

static int meta_float(const vkl_gguf_file *f, const char *key, float *out, vkl_err *e)
{
    double v;
    int r = vkl_gguf_get_float(f, key, &v, e);
    if (r > 0) *out = (float)v;
    return r < 0 ? -1 : 0;
}

static int read_config(const vkl_gguf_file *f, vkl_llama_config *c, vkl_err *e)
{
    const char *L = vkl_gguf_label(f), *arch = NULL;
    if (vkl_gguf_get_str(f, "general.architecture", &arch, e) < 0) return -1;
    if (!arch) return vkl_fail(e, "%s: no general.architecture; not a GGUF model", L);
    if (strcmp(arch, "llama"))
        return vkl_fail(e, "%s: general.architecture is '%.64s'; only llama models are read", L, arch);
    const char *type = NULL;
    if (vkl_gguf_get_str(f, "general.type", &type, e) < 0) return -1;
    if (type && strcmp(type, "model")) return vkl_fail(e, "%s: general.type is '%.64s', not a model", L, type);
    *c = (vkl_llama_config){.rope_theta = 10000.0f, .rms_eps = 1e-5f, .bos = -1, .eos = -1, .max_pos = 2048};
    if (meta_int(f, "llama.embedding_length", &c->hidden, 1, e) || meta_int(f, "llama.block_count", &c->layers, 1, e) ||
        meta_int(f, "llama.feed_forward_length", &c->intermediate, 1, e) ||
        meta_int(f, "llama.attention.head_count", &c->heads, 1, e))
        return -1;
    c->kv_heads = c->heads;
    c->head_dim = c->heads ? c->hidden / c->heads : 0;
    int rope_dims = -1;
    if (meta_int(f, "llama.attention.head_count_kv", &c->kv_heads, 0, e) ||
        meta_int(f, "llama.attention.key_length", &c->head_dim, 0, e) ||
        meta_int(f, "llama.rope.dimension_count", &rope_dims, 0, e) ||
        meta_int(f, "llama.context_length", &c->max_pos, 0, e) ||
        meta_int(f, "tokenizer.ggml.bos_token_id", &c->bos, 0, e) ||
        meta_int(f, "tokenizer.ggml.eos_token_id", &c->eos, 0, e) ||
        meta_float(f, "llama.rope.freq_base", &c->rope_theta, e) ||
        meta_float(f, "llama.attention.layer_norm_rms_epsilon", &c->rms_eps, e))
        return -1;
    if (rope_dims >= 0 && rope_dims != c->head_dim)
        return vkl_fail(e, "%s: llama.rope.dimension_count %d differs from the head size %d (partial rotary embeddings "
                           "are not supported)", L, rope_dims, c->head_dim);
    int vlen = -1;
    if (meta_int(f, "llama.vocab_size", &vlen, 0, e)) return -1;
    const vkl_gguf_tensor *emb = vkl_gguf_find(f, "token_embd.weight");
    if (!emb) return vkl_fail(e, "%s: tensor token_embd.weight is missing", L);
    c->vocab = emb->ndim == 2 && emb->ne[1] <= (1u << 30) ? (int)emb->ne[1] : 0;
    if (vlen >= 0 && vlen != c->vocab)
        return vkl_fail(e, "%s: llama.vocab_size %d differs from token_embd.weight's %d rows", L, vlen, c->vocab);
    c->tie_embeddings = !vkl_gguf_find(f, "output.weight");
    if (vkl_llama_config_check(c, e)) return vkl_err_prefix(e, "%s: ", L), -1;
    return 0;
}

int vkl_llama_gguf_config(const char *path, vkl_llama_config *c, vkl_err *e)
{
    vkl_gguf_file *f = NULL;
    if (vkl_gguf_open(path, &f, e)) return -1;
    int rc = read_config(f, c, e);
    vkl_gguf_close(f);
    return rc;
}

typedef struct want {
    char hf[96], gg[64];
    int ndim;
    int64_t shape[2]; /* HF order: [out, in] */
    int permute_heads; /* q/k: heads to un-permute, else 0 */
} want;

static int wanted(const vkl_llama_config *c, want *w)
{
    int n = 0, H = c->hidden, qd = c->heads * c->head_dim, kd = c->kv_heads * c->head_dim, I = c->intermediate;
    int64_t shapes[NLAYER_NAMES][2] = {{H, 1}, {H, 1}, {qd, H}, {kd, H}, {kd, H}, {H, qd}, {I, H}, {I, H}, {H, I}};
    w[n++] = (want){"model.embed_tokens.weight", "token_embd.weight", 2, {c->vocab, H}, 0};
    w[n++] = (want){"model.norm.weight", "output_norm.weight", 1, {H, 1}, 0};
    if (!c->tie_embeddings) w[n++] = (want){"lm_head.weight", "output.weight", 2, {c->vocab, H}, 0};
    for (int l = 0; l < c->layers; l++)
        for (int i = 0; i < NLAYER_NAMES; i++) {
            want *x = &w[n++];
            snprintf(x->hf, sizeof x->hf, "model.layers.%d.%s.weight", l, layer_names[i][1]);
            snprintf(x->gg, sizeof x->gg, "blk.%d.%s.weight", l, layer_names[i][0]);
            x->ndim = i < 2 ? 1 : 2;
            x->shape[0] = shapes[i][0];
            x->shape[1] = shapes[i][1];
            x->permute_heads = i == 2 ? c->heads : i == 3 ? c->kv_heads : 0;
        }
    return n;
}

static int check(const vkl_gguf_file *f, const want *w, vkl_err *e)
{
    const char *L = vkl_gguf_label(f);
    const vkl_gguf_tensor *t = vkl_gguf_find(f, w->gg);
    if (!t) return vkl_fail(e, "%s: tensor %s is missing", L, w->gg);
    /* GGUF shapes are innermost first */
    int ok = t->ndim == w->ndim && t->ne[0] == (uint64_t)(w->ndim == 2 ? w->shape[1] : w->shape[0]) &&
             (w->ndim == 1 || t->ne[1] == (uint64_t)w->shape[0]);
    if (!ok)
        return vkl_fail(e, "%s: tensor %s has ne [%llu, %llu] (%d dims); the metadata implies [%lld, %lld]", L, w->gg,
                        (unsigned long long)t->ne[0], (unsigned long long)t->ne[1], t->ndim,
                        (long long)(w->ndim == 2 ? w->shape[1] : w->shape[0]), (long long)(w->ndim == 2 ? w->shape[0] : 1));
    if (w->ndim == 1 && t->type != VKL_GQ_F32 && t->type != VKL_GQ_F16 && t->type != VKL_GQ_BF16)
        return vkl_fail(e, "%s: norm weight %s is %s (F32, F16 or BF16 expected)", L, w->gg, vkl_gguf_type_name(t->type));
    return 0;
}

static int upload(vkl_llama *m, const vkl_gguf_tensor *t, const want *w, vkl_dtype matrix_dtype, vkl_err *e)
{
    vkl_gguf_tensor tt = *t;
    uint8_t *copy = NULL;
    if (w->permute_heads) {
        size_t row_bytes = (size_t)(t->nbytes / t->ne[1]);
        copy = malloc((size_t)t->nbytes);
        if (!copy) return vkl_fail(e, "out of host memory");
        memcpy(copy, t->data, (size_t)t->nbytes);
        if (vkl_llama_gguf_permute_rows(copy, w->permute_heads, m->cfg.head_dim, row_bytes, 0)) {
            free(copy);
            return vkl_fail(e, "out of host memory");
        }
        tt.data = copy;
    }
    vkl_tensor *d = NULL;
    vkl_dtype kept = VKL_F32;
    if (matrix_dtype == VKL_LLAMA_AS_STORED && w->ndim == 2 && !vkl_gguf_dtype(t->type, &kept) &&
        (strcmp(w->hf, "model.embed_tokens.weight") || !vkl_dtype_is_quant(kept))) {
        /* the blocks as they are (F32 / F16 / BF16 bytes are those dtypes' too) */
        d = vkl_tensor_new(m->ctx, kept, 2, w->shape, e);
        if (d && vkl_tensor_upload(m->ctx, d, tt.data, kept, e)) {
            vkl_tensor_free(d);
            d = NULL;
            vkl_err_prefix(e, "tensor '%s' (%s): ", t->name, vkl_gguf_type_name(t->type));
        }
    } else {
        /* AS_STORED: a quantised embedding becomes f16 for the gather */
        vkl_dtype dt = w->ndim == 1 ? VKL_F32 : matrix_dtype == VKL_LLAMA_AS_STORED ? VKL_F16 : matrix_dtype;
        d = vkl_gguf_tensor_load(m->ctx, &tt, dt, w->ndim, w->shape, e);
    }
    free(copy);
    if (!d) return -1;
    if (vkl_weights_put(m->w, w->hf, d, e)) {
        vkl_tensor_free(d);
        return -1;
    }
    return 0;
}

int vkl_llama_load_gguf(vkl_ctx *c, const char *path, vkl_dtype matrix_dtype, vkl_llama **out, vkl_err *e)
{
    *out = NULL;
    vkl_gguf_file *f = NULL;
    if (vkl_gguf_open(path, &f, e)) return -1;
    vkl_llama *m = calloc(1, sizeof *m);
    int rc = m && (m->w = vkl_weights_new()) ? 0 : vkl_fail(e, "out of host memory");
    if (!rc) {
        m->ctx = c;
        rc = read_config(f, &m->cfg, e);
    }
    want *w = NULL;
    int n = 0;
    if (!rc) {
        w = calloc((size_t)m->cfg.layers * NLAYER_NAMES + 3, sizeof *w);
        rc = w ? 0 : vkl_fail(e, "out of host memory");
    }
    if (!rc) n = wanted(&m->cfg, w);
    for (int i = 0; i < n && !rc; i++) rc = check(f, &w[i], e);
    for (int i = 0; i < n && !rc; i++) {
        rc = upload(m, vkl_gguf_find(f, w[i].gg), &w[i], matrix_dtype, e);
        if (rc) vkl_err_prefix(e, "%s: ", path);
    }
    free(w);
    vkl_gguf_close(f);
    if (rc) {
        vkl_llama_free(m);
        return -1;
    }
    *out = m;
    return 0;
}
