/* Writing a LLaMA model as GGUF in llama.cpp's layout (llama_gguf.h): the
 * weights are read back from the device as f32, q/k rows reordered for
 * llama.cpp's RoPE, matrices quantised (with the block-size fallback), and
 * the hyper-parameters and tokenizer written as llama.cpp names them. */
#include "llama/llama_gguf.h"

#include "io/gguf.h"
#include "tokenizer/sp_bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fits(int type, int64_t row) { return row % vkl_gguf_type_block(type) == 0; }

/* The type a matrix with rows of `row` values gets when `type` is asked for. */
static int matrix_type(int type, int64_t row)
{
    if (fits(type, row)) return type;
    int fb = type == VKL_GQ_Q4_K ? VKL_GQ_Q5_0 : type == VKL_GQ_Q5_K ? VKL_GQ_Q5_1 : type == VKL_GQ_Q6_K ? VKL_GQ_Q8_0 : -1;
    if (fb >= 0 && fits(fb, row)) return fb;
    return VKL_GQ_F16;
}

/* llama.cpp's general.file_type for a model quantised to one type */
static int file_type(int type)
{
    switch (type) {
    case VKL_GQ_F32: return 0;
    case VKL_GQ_F16: return 1;
    case VKL_GQ_Q4_0: return 2;
    case VKL_GQ_Q4_1: return 3;
    case VKL_GQ_Q8_0: return 7;
    case VKL_GQ_Q5_0: return 8;
    case VKL_GQ_Q5_1: return 9;
    case VKL_GQ_Q4_K: return 14;
    case VKL_GQ_Q5_K: return 16;
    case VKL_GQ_Q6_K: return 18;
    default: return 32; /* BF16 */
    }
}

static int write_meta(vkl_gguf_writer *w, const vkl_llama_config *c, int type, const char *name, vkl_err *e)
{
    return vkl_gguf_w_str(w, "general.architecture", "llama", e) || vkl_gguf_w_str(w, "general.type", "model", e) ||
           vkl_gguf_w_str(w, "general.name", name, e) || vkl_gguf_w_u32(w, "general.alignment", 32, e) ||
           vkl_gguf_w_u32(w, "general.file_type", (uint32_t)file_type(type), e) ||
           vkl_gguf_w_u32(w, "llama.context_length", (uint32_t)c->max_pos, e) ||
           vkl_gguf_w_u32(w, "llama.embedding_length", (uint32_t)c->hidden, e) ||
           vkl_gguf_w_u32(w, "llama.block_count", (uint32_t)c->layers, e) ||
           vkl_gguf_w_u32(w, "llama.feed_forward_length", (uint32_t)c->intermediate, e) ||
           vkl_gguf_w_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim, e) ||
           vkl_gguf_w_u32(w, "llama.attention.head_count", (uint32_t)c->heads, e) ||
           vkl_gguf_w_u32(w, "llama.attention.head_count_kv", (uint32_t)c->kv_heads, e) ||
           vkl_gguf_w_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim, e) ||
           vkl_gguf_w_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim, e) ||
           vkl_gguf_w_f32(w, "llama.attention.layer_norm_rms_epsilon", c->rms_eps, e) ||
           vkl_gguf_w_f32(w, "llama.rope.freq_base", c->rope_theta, e) ||
           vkl_gguf_w_u32(w, "llama.vocab_size", (uint32_t)c->vocab, e);
}

static int write_tokenizer(vkl_gguf_writer *w, const vkl_sp *tok, const vkl_llama_config *c, vkl_err *e)
{
    int n = vkl_sp_size(tok);
    const char **pieces = malloc(sizeof *pieces * (size_t)n);
    float *scores = malloc(sizeof *scores * (size_t)n);
    int32_t *types = malloc(sizeof *types * (size_t)n);
    int rc = pieces && scores && types ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; i < n && !rc; i++) {
        pieces[i] = vkl_sp_piece(tok, i);
        scores[i] = vkl_sp_score(tok, i);
        types[i] = vkl_sp_type_of(tok, i);
    }
    rc = rc || vkl_gguf_w_str(w, "tokenizer.ggml.model", "llama", e) ||
         vkl_gguf_w_array(w, "tokenizer.ggml.tokens", VKL_GGUF_STRING, (uint64_t)n, pieces, e) ||
         vkl_gguf_w_array(w, "tokenizer.ggml.scores", VKL_GGUF_F32, (uint64_t)n, scores, e) ||
         vkl_gguf_w_array(w, "tokenizer.ggml.token_type", VKL_GGUF_I32, (uint64_t)n, types, e) ||
         vkl_gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", vkl_sp_add_dummy_prefix(tok), e) ||
         vkl_gguf_w_bool(w, "tokenizer.ggml.add_bos_token", 1, e) ||
         vkl_gguf_w_bool(w, "tokenizer.ggml.add_eos_token", 0, e) ||
         (c->bos >= 0 && vkl_gguf_w_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)c->bos, e)) ||
         (c->eos >= 0 && vkl_gguf_w_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)c->eos, e)) ||
         (vkl_sp_unk(tok) >= 0 && vkl_gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)vkl_sp_unk(tok), e));
    free(pieces);
    free(scores);
    free(types);
    return rc;
}

/* One weight: read back, reordered (q/k), quantised, added. */
static int write_weight(vkl_gguf_writer *w, const vkl_llama *m, const char *hf, vkl_tensor *t, int type, int *counts,
                        vkl_err *e)
{
    char gg[64];
    if (vkl_llama_gguf_name(hf, gg, sizeof gg)) return vkl_fail(e, "weight %s has no GGUF name", hf);
    int64_t n = vkl_tensor_nelem(t), row = t->shape[t->ndim - 1], rows = n / row;
    float *x = malloc(sizeof(float) * (size_t)n);
    if (!x) return vkl_fail(e, "out of host memory for %s", hf);
    if (vkl_tensor_download(m->ctx, t, x, VKL_F32, e)) return free(x), -1;
    int rc = 0;
    const char *q = strstr(hf, "self_attn.q_proj"), *k = strstr(hf, "self_attn.k_proj");
    if (q || k)
        if (vkl_llama_gguf_permute_rows((uint8_t *)x, q ? m->cfg.heads : m->cfg.kv_heads, m->cfg.head_dim,
                                        sizeof(float) * (size_t)row, 1))
            rc = vkl_fail(e, "out of host memory");
    int tt = t->ndim == 2 ? matrix_type(type, row) : VKL_GQ_F32;
    uint64_t bytes = (uint64_t)n / (uint64_t)vkl_gguf_type_block(tt) * (uint64_t)vkl_gguf_type_bytes(tt);
    void *blocks = rc ? NULL : malloc((size_t)bytes);
    if (!rc && !blocks) rc = vkl_fail(e, "out of host memory for %s", hf);
    uint64_t ne[2] = {(uint64_t)row, (uint64_t)rows};
    rc = rc || vkl_gguf_quantize(tt, x, (uint64_t)n, blocks, e) ||
         vkl_gguf_w_tensor(w, gg, tt, t->ndim == 2 ? 2 : 1, ne, blocks, bytes, e);
    if (!rc && counts && tt < 32) counts[tt]++;
    free(blocks);
    free(x);
    return rc;
}

int vkl_llama_save_gguf(const vkl_llama *m, const struct vkl_sp *tok, int type, const char *name, const char *path,
                        int *counts, vkl_err *e)
{
    if (!vkl_gguf_type_block(type)) return vkl_fail(e, "block type %d is not supported", type);
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    if (!w) return vkl_fail(e, "out of host memory");
    int rc = write_meta(w, &m->cfg, type, name ? name : "vklora", e) || (tok && write_tokenizer(w, tok, &m->cfg, e));
    /* llama.cpp's order: embeddings, then layer by layer, then the head */
    const char *top[] = {"model.embed_tokens.weight"};
    for (int i = 0; i < 1 && !rc; i++) {
        vkl_tensor *t = vkl_weights_find(m->w, top[i]);
        rc = t ? write_weight(w, m, top[i], t, type, counts, e) : vkl_fail(e, "weight %s is missing", top[i]);
    }
    for (int i = 0; i < vkl_weights_count(m->w) && !rc; i++) {
        const char *hf;
        vkl_tensor *t = vkl_weights_at(m->w, i, &hf);
        if (!strncmp(hf, "model.layers.", 13)) rc = write_weight(w, m, hf, t, type, counts, e);
    }
    const char *tail[] = {"model.norm.weight", "lm_head.weight"};
    for (int i = 0; i < 2 && !rc; i++) {
        vkl_tensor *t = vkl_weights_find(m->w, tail[i]);
        if (t) rc = write_weight(w, m, tail[i], t, type, counts, e);
        else if (i == 0 || !m->cfg.tie_embeddings) rc = vkl_fail(e, "weight %s is missing", tail[i]);
    }
    rc = rc || vkl_gguf_writer_finish(w, path, e);
    vkl_gguf_writer_free(w);
    return rc;
}
