/* A LLaMA GGUF file for the CLI tests: random weights, every matrix Q4_K
 * (rows of whole 256-blocks), with tiny-llama's SentencePiece tokenizer or
 * (gpt2 set) a byte-level BPE vocabulary: the 256 byte tokens over GPT-2's
 * byte alphabet, <s>, </s> and three merges. */
#ifndef VKL_TEST_GGUF_FIXTURE_H
#define VKL_TEST_GGUF_FIXTURE_H

#include "vkl_test.h"

#include "io/gguf.h"
#include "tokenizer/sp_bpe.h"

#include <stdio.h>
#include <stdlib.h>

/* GPT-2's bytes_to_unicode: '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF stand
 * for themselves; the other bytes, in order, for U+0100, U+0101, ... */
static inline int gpt2_keeps(int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); }
static inline uint32_t gpt2_byte_cp(int b)
{
    if (gpt2_keeps(b)) return (uint32_t)b;
    uint32_t n = 0;
    for (int x = 0; x < b; x++) n += !gpt2_keeps(x);
    return 256 + n;
}

static inline void put_q4k(vkl_gguf_writer *w, vkl_test_rng *r, const char *name, uint64_t in, uint64_t out, float scale)
{
    uint64_t n = in * out;
    float *x = malloc(sizeof(float) * n);
    vkl_test_fill(r, x, n, -scale, scale);
    int type = out > 1 ? VKL_GQ_Q4_K : VKL_GQ_F32;
    uint64_t bytes = n / (uint64_t)vkl_gguf_type_block(type) * (uint64_t)vkl_gguf_type_bytes(type);
    void *b = malloc(bytes);
    vkl_err e;
    assert_int_equal(vkl_gguf_quantize(type, x, n, b, &e), 0);
    if (out == 1)
        for (uint64_t i = 0; i < n; i++) ((float *)b)[i] = 1.0f; /* norm weights */
    assert_int_equal(vkl_gguf_w_tensor(w, name, type, out > 1 ? 2 : 1, (uint64_t[]){in, out}, b, bytes, &e), 0);
    free(b);
    free(x);
}

static inline void write_q4k_model(const char *path, int gpt2)
{
    enum { H = 256, I = 512, L = 2 };
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    int V = 256 + 5;
    static char bytes[256][4];
    if (!gpt2) {
        assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
        V = vkl_sp_size(sp);
    }
    const char **pieces = malloc(sizeof *pieces * (size_t)V);
    float *scores = malloc(sizeof *scores * (size_t)V);
    int32_t *types = malloc(sizeof *types * (size_t)V);
    for (int i = 0; i < V; i++) {
        if (gpt2 && i < 256) { /* the byte tokens over GPT-2's alphabet, in byte order */
            uint32_t cp = gpt2_byte_cp(i);
            if (cp < 0x80) bytes[i][0] = (char)cp, bytes[i][1] = 0;
            else bytes[i][0] = (char)(0xC0 | cp >> 6), bytes[i][1] = (char)(0x80 | (cp & 0x3F)), bytes[i][2] = 0;
        }
        static const char *const extra[] = {"<s>", "</s>", "\xc4\xa0t", "he", "\xc4\xa0the"};
        pieces[i] = !gpt2 ? vkl_sp_piece(sp, i) : i < 256 ? bytes[i] : extra[i - 256];
        scores[i] = !gpt2 ? vkl_sp_score(sp, i) : 0;
        types[i] = !gpt2 ? vkl_sp_type_of(sp, i) : i < 256 ? 6 : i < 258 ? 3 : 1;
    }
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "llama", &e), 0);
    const char *keys[] = {"llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                          "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    uint32_t vals[] = {H, L, I, 4, 2, 128, gpt2 ? 256 : 1, gpt2 ? 257 : 2};
    for (int i = 0; i < 8; i++) assert_int_equal(vkl_gguf_w_u32(w, keys[i], vals[i], &e), 0);
    assert_int_equal(vkl_gguf_w_str(w, "tokenizer.ggml.model", gpt2 ? "gpt2" : "llama", &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.tokens", VKL_GGUF_STRING, (uint64_t)V, pieces, &e), 0);
    if (gpt2) {
        const char *merges[] = {"\xc4\xa0 t", "h e", "\xc4\xa0t he"};
        assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.merges", VKL_GGUF_STRING, 3, merges, &e), 0);
    } else {
        assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.scores", VKL_GGUF_F32, (uint64_t)V, scores, &e), 0);
    }
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.token_type", VKL_GGUF_I32, (uint64_t)V, types, &e), 0);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 44);
    put_q4k(w, &r, "token_embd.weight", H, (uint64_t)V, 1.0f);
    char n[64];
    for (int l = 0; l < L; l++) {
        struct { const char *s; uint64_t in, out; } mats[] = {
            {"attn_q", H, 256}, {"attn_k", H, 128}, {"attn_v", H, 128}, {"attn_output", 256, H},
            {"ffn_gate", H, I}, {"ffn_up", H, I}, {"ffn_down", I, H}, {"attn_norm", H, 1}, {"ffn_norm", H, 1}};
        for (int k = 0; k < 9; k++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, mats[k].s);
            put_q4k(w, &r, n, mats[k].in, mats[k].out, 0.1f);
        }
    }
    put_q4k(w, &r, "output_norm.weight", H, 1, 1.0f);
    put_q4k(w, &r, "output.weight", H, (uint64_t)V, 0.1f);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    free(pieces);
    free(scores);
    free(types);
    vkl_sp_free(sp);
}

#endif
