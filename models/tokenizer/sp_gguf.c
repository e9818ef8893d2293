/* GGUF keeps the pieces of a SentencePiece model as parallel arrays; they are
 * turned back into the ModelProto they came from (pieces with score and
 * type; trainer_spec: BPE, byte fallback; normalizer_spec: the dummy prefix,
 * no whitespace folding, as llama.cpp's tokenizer) and read by the same
 * reader as a tokenizer.model, so both encode identically. */
#include "tokenizer/sp_gguf.h"

#include <stdlib.h>
#include <string.h>

typedef struct pbuf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} pbuf;

static void put(pbuf *b, const void *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 65536;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void varint(pbuf *b, uint64_t v)
{
    uint8_t x[10];
    int n = 0;
    do {
        x[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) x[n] |= 0x80;
        n++;
    } while (v);
    put(b, x, (size_t)n);
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >>= 7) n++;
    return n;
}

int vkl_sp_from_gguf(const vkl_gguf_file *f, vkl_sp **out, vkl_err *e)
{
    *out = NULL;
    const char *L = vkl_gguf_label(f), *model = NULL;
    if (vkl_gguf_get_str(f, "tokenizer.ggml.model", &model, e) < 0) return -1;
    if (!model) return vkl_fail(e, "%s: no tokenizer in the metadata (tokenizer.ggml.model)", L);
    if (strcmp(model, "llama"))
        return vkl_fail(e, "%s: tokenizer.ggml.model '%.32s' is not supported (only the SentencePiece 'llama' type)", L,
                        model);
    const vkl_gguf_kv *tok = vkl_gguf_kv_find(f, "tokenizer.ggml.tokens");
    const vkl_gguf_kv *sc = vkl_gguf_kv_find(f, "tokenizer.ggml.scores");
    const vkl_gguf_kv *ty = vkl_gguf_kv_find(f, "tokenizer.ggml.token_type");
    if (!tok || tok->type != VKL_GGUF_ARRAY || tok->atype != VKL_GGUF_STRING || !tok->n)
        return vkl_fail(e, "%s: tokenizer.ggml.tokens is missing or not an array of strings", L);
    if (sc && (sc->type != VKL_GGUF_ARRAY || sc->atype != VKL_GGUF_F32 || sc->n != tok->n))
        return vkl_fail(e, "%s: tokenizer.ggml.scores is not an f32 array of %llu", L, (unsigned long long)tok->n);
    if (ty && (ty->type != VKL_GGUF_ARRAY || (ty->atype != VKL_GGUF_I32 && ty->atype != VKL_GGUF_U32) || ty->n != tok->n))
        return vkl_fail(e, "%s: tokenizer.ggml.token_type is not an i32 array of %llu", L, (unsigned long long)tok->n);
    int prefix = 1;
    if (vkl_gguf_get_bool(f, "tokenizer.ggml.add_space_prefix", &prefix, e) < 0) return -1;
    pbuf b = {0};
    for (uint64_t i = 0; i < tok->n; i++) {
        uint64_t len = tok->lens[i];
        double type = ty ? vkl_gguf_arr_num(ty, i) : 1;
        if (type < 1 || type > 6)
            return free(b.p), vkl_fail(e, "%s: token %llu has type %g (1 to 6 expected)", L, (unsigned long long)i, type);
        float score = sc ? (float)vkl_gguf_arr_num(sc, i) : 0.0f;
        uint32_t sbits;
        memcpy(&sbits, &score, 4);
        uint8_t s4[4] = {(uint8_t)sbits, (uint8_t)(sbits >> 8), (uint8_t)(sbits >> 16), (uint8_t)(sbits >> 24)};
        size_t body = 1 + varint_len(len) + (size_t)len + 1 + 4 + 1 + varint_len((uint64_t)type);
        varint(&b, 1 << 3 | 2); /* pieces */
        varint(&b, body);
        varint(&b, 1 << 3 | 2); /* piece */
        varint(&b, len);
        put(&b, tok->strs[i], (size_t)len);
        varint(&b, 2 << 3 | 5); /* score */
        put(&b, s4, 4);
        varint(&b, 3 << 3 | 0); /* type */
        varint(&b, (uint64_t)type);
    }
    /* trainer_spec {model_type: BPE, byte_fallback: true} */
    varint(&b, 2 << 3 | 2);
    varint(&b, 2 + 3);
    varint(&b, 3 << 3 | 0);
    varint(&b, 2);
    varint(&b, 35 << 3 | 0);
    varint(&b, 1);
    /* normalizer_spec {add_dummy_prefix, remove_extra_whitespaces: false, escape_whitespaces: true} */
    varint(&b, 3 << 3 | 2);
    varint(&b, 6);
    varint(&b, 3 << 3 | 0);
    varint(&b, (uint64_t)(prefix != 0));
    varint(&b, 4 << 3 | 0);
    varint(&b, 0);
    varint(&b, 5 << 3 | 0);
    varint(&b, 1);
    if (b.oom) {
        free(b.p);
        return vkl_fail(e, "%s: out of memory for the tokenizer", L);
    }
    int rc = vkl_sp_load_memory(b.p, b.n, L, out, e);
    free(b.p);
    return rc;
}

int vkl_sp_load_gguf(const char *path, vkl_sp **out, vkl_err *e)
{
    *out = NULL;
    vkl_gguf_file *f;
    if (vkl_gguf_open(path, &f, e)) return -1;
    int rc = vkl_sp_from_gguf(f, out, e);
    vkl_gguf_close(f);
    return rc;
}
