/* Encoding a long text in parts cut by vkl_tok_chunk_end gives exactly the
 * ids of encoding it whole, for LLaMA's SentencePiece model (tiny-llama) and
 * a llama2.c tokenizer (stories260K): prose with punctuation, double spaces,
 * newlines, digits and non-ASCII text, cut into parts of at least 1, 7 and
 * 40 bytes. Also where the cuts fall on a small known string. */
#include "vkl_test.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/sp_bpe.h"
#include "tokenizer/tok_chunks.h"

#include <stdlib.h>
#include <string.h>

static const char TEXT[] =
    "You may convey verbatim copies of the Program's source code as you receive it, in any medium,  provided that "
    "you conspicuously and appropriately publish on each copy an appropriate copyright notice;\nkeep intact all "
    "notices stating that this License and any non-permissive terms added in accord with section 7 apply to the "
    "code. Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.  "
    "Café, naïve, 12345 + 678 = 13023.\n\n  Indented line, then   three spaces, tab\there, end. ";

static void check(const char *what, int (*enc)(const void *, const char *, int, int32_t **, int *), const void *tok)
{
    int32_t *whole = NULL;
    int nw = 0;
    assert_int_equal(enc(tok, TEXT, 1, &whole, &nw), 0);
    size_t len = strlen(TEXT);
    static const size_t mins[] = {1, 7, 40};
    for (size_t m = 0; m < 3; m++) {
        int32_t *all = malloc(sizeof(int32_t) * (size_t)(nw + 64));
        int n = 0, parts = 0;
        char part[sizeof TEXT];
        for (size_t s = 0; s < len;) {
            size_t end = vkl_tok_chunk_end(TEXT, s, len, mins[m]);
            memcpy(part, TEXT + s, end - s);
            part[end - s] = 0;
            int32_t *ids = NULL;
            int k = 0;
            assert_int_equal(enc(tok, part, s == 0, &ids, &k), 0);
            assert_true(n + k <= nw + 64);
            memcpy(all + n, ids, sizeof(int32_t) * (size_t)k);
            n += k;
            free(ids);
            parts++;
            s = end + 1;
        }
        printf("  %s: %d ids whole, %d parts of >= %zu bytes give %d\n", what, nw, parts, mins[m], n);
        assert_true(parts > 3);
        assert_int_equal(n, nw);
        assert_memory_equal(all, whole, sizeof(int32_t) * (size_t)nw);
        free(all);
    }
    free(whole);
}

static int sp_enc(const void *t, const char *text, int bos, int32_t **ids, int *n)
{
    vkl_err e = {{0}};
    int32_t *v = NULL;
    int k = 0;
    if (vkl_sp_encode(t, text, &v, &k, &e)) return -1;
    *ids = malloc(sizeof(int32_t) * (size_t)(k + 1));
    *n = 0;
    if (bos) (*ids)[(*n)++] = 1;
    memcpy(*ids + *n, v, sizeof(int32_t) * (size_t)k);
    *n += k;
    free(v);
    return 0;
}

static int l2c_enc(const void *t, const char *text, int bos, int32_t **ids, int *n)
{
    vkl_err e = {{0}};
    return vkl_l2c_tok_encode(t, text, bos ? 1 : -1, -1, ids, n, &e);
}

static void test_cut_points(void **state)
{
    (void)state;
    const char *s = "ab  cd ef g h";
    size_t len = strlen(s);
    assert_int_equal(vkl_tok_chunk_end(s, 0, len, 1), 6);  /* not inside the double space */
    assert_int_equal(vkl_tok_chunk_end(s, 7, len, 1), 9);
    assert_int_equal(vkl_tok_chunk_end(s, 10, len, 1), 11);
    assert_int_equal(vkl_tok_chunk_end(s, 12, len, 1), len); /* no word after: the rest */
    assert_int_equal(vkl_tok_chunk_end(s, 0, len, 100), len);
    assert_int_equal(vkl_tok_chunk_end("a b ", 0, 4, 1), 1);
    assert_int_equal(vkl_tok_chunk_end("a b ", 2, 4, 1), 4); /* a trailing space is kept */
}

static void test_sp(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/tokenizer.model");
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
    check("sentencepiece", sp_enc, sp);
    vkl_sp_free(sp);
}

static void test_l2c(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/tok512.bin");
    vkl_err e = {{0}};
    vkl_l2c_tok *t = NULL;
    assert_int_equal(vkl_l2c_tok_load(vkl_test_shared_path("refkit/lm/stories260K/tok512.bin"), 512, &t, &e), 0);
    check("llama2.c", l2c_enc, t);
    vkl_l2c_tok_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_points),
        cmocka_unit_test(test_sp),
        cmocka_unit_test(test_l2c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
