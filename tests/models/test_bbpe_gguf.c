/* Byte-level BPE (tokenizer.ggml.model "gpt2") from GGUF metadata: a small
 * vocabulary written here (the 256 byte tokens over GPT-2's byte alphabet,
 * built from its definition in this file, then merged tokens) encodes a text
 * to ids worked out by hand from GPT-2's pre-tokenizer pattern and the merge
 * ranks, and every text decodes back to its bytes; bad metadata is refused. */
#include "vkl_test.h"

#include "io/gguf.h"
#include "tokenizer/bbpe.h"

#include <stdlib.h>
#include <string.h>

/* GPT-2's bytes_to_unicode: '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF stand
 * for themselves; the other bytes, in order, for U+0100, U+0101, ... */
static uint32_t byte_cp(int b)
{
    int keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    if (keep) return (uint32_t)b;
    uint32_t n = 0;
    for (int x = 0; x < b; x++) n += !((x >= '!' && x <= '~') || (x >= 0xA1 && x <= 0xAC) || (x >= 0xAE && x <= 0xFF));
    return 256 + n;
}

static void utf8(uint32_t cp, char *o)
{
    if (cp < 0x80) o[0] = (char)cp, o[1] = 0;
    else o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), o[2] = 0;
}

static char toks[270][8];

static const char *write_vocab(const char *dir, const char *pre, int bad_merge, uint32_t bad_type)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/tok.gguf", dir);
    const char *merged[] = {"he", "ll", "hell", "hello", "\xc4\xa0w", "or", "\xc4\xa0wor", "\xc4\xa0t", "\xc4\xa0the",
                            "<|end|>"};
    const char *merges[] = {"h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or", "\xc4\xa0 t",
                            "\xc4\xa0t he"};
    const char *tp[266];
    int32_t types[266];
    for (int b = 0; b < 256; b++) {
        utf8(byte_cp(b), toks[b]);
        tp[b] = toks[b];
        types[b] = 6;
    }
    for (int i = 0; i < 10; i++) {
        tp[256 + i] = merged[i];
        types[256 + i] = i == 9 ? 3 : 1;
    }
    if (bad_merge) merges[3] = "hello";
    if (bad_type) types[7] = (int32_t)bad_type;
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    vkl_err e;
    assert_int_equal(vkl_gguf_w_str(w, "tokenizer.ggml.model", "gpt2", &e), 0);
    if (pre) assert_int_equal(vkl_gguf_w_str(w, "tokenizer.ggml.pre", pre, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.tokens", VKL_GGUF_STRING, 266, tp, &e), 0);
    /* a type past INT_MAX needs the u32 array form llama.cpp also accepts */
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.token_type", bad_type > 0x7fffffffu ? VKL_GGUF_U32 : VKL_GGUF_I32,
                                      266, types, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.merges", VKL_GGUF_STRING, 9, merges, &e), 0);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    return path;
}

static vkl_bbpe *open_tok(const char *path, vkl_err *e)
{
    vkl_gguf_file *f = NULL;
    assert_int_equal(vkl_gguf_open(path, &f, e), 0);
    vkl_bbpe *t = NULL;
    int rc = vkl_bbpe_from_gguf(f, &t, e);
    vkl_gguf_close(f);
    return rc ? NULL : t;
}

static void encodes_as_gpt2(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    vkl_err e = {{0}};
    vkl_bbpe *t = open_tok(write_vocab(dir, "default", 0, 0), &e);
    assert_non_null(t);
    /* pieces: "hello" " world" "," " the" " I" "'m" " " " 42" "!" "\n" */
    const char *text = "hello world, the I'm  42!\n";
    const int32_t want[] = {259, 262, 'l', 'd', ',', 264, ' ', 'I', '\'', 'm', ' ', ' ', '4', '2', '!', '\n'};
    int32_t *ids = NULL;
    int n = 0;
    assert_int_equal(vkl_bbpe_encode(t, text, &ids, &n, &e), 0);
    assert_int_equal(n, (int)(sizeof want / sizeof *want));
    assert_memory_equal(ids, want, sizeof want);
    char *back = vkl_bbpe_decode(t, ids, n);
    assert_string_equal(back, text);
    free(back);
    free(ids);
    /* any bytes round-trip; the control token decodes to nothing */
    const char *utf = "h\xc3\xa9llo \xe2\x9c\x93 \x01\x7f\xff";
    assert_int_equal(vkl_bbpe_encode(t, utf, &ids, &n, &e), 0);
    back = vkl_bbpe_decode(t, ids, n);
    assert_string_equal(back, utf);
    free(back);
    free(ids);
    int32_t with_end[] = {259, 265, 33};
    back = vkl_bbpe_decode(t, with_end, 3);
    assert_string_equal(back, "hello!");
    free(back);
    vkl_bbpe_free(t);
    vkl_test_rmtree(dir);
}

static void refuses_bad_metadata(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    vkl_err e = {{0}};
    assert_null(open_tok(write_vocab(dir, "llama-bpe", 0, 0), &e));
    assert_non_null(strstr(e.msg, "tokenizer.ggml.pre 'llama-bpe' is not supported"));
    assert_null(open_tok(write_vocab(dir, NULL, 1, 0), &e));
    assert_non_null(strstr(e.msg, "merge 3 'hello' is not two tokens"));
    /* found by fuzz_gguf (UBSan: a u32 type past INT_MAX converted to int) */
    assert_null(open_tok(write_vocab(dir, NULL, 0, 0xffffffffu), &e));
    assert_non_null(strstr(e.msg, "token 7 has type 4.29497e+09"));
    assert_null(open_tok(write_vocab(dir, NULL, 0, 9), &e));
    assert_non_null(strstr(e.msg, "token 7 has type 9"));
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(encodes_as_gpt2),
        cmocka_unit_test(refuses_bad_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
