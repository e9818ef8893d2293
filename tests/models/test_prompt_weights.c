/* AUTOMATIC1111 prompt syntax: parse results worked out by hand from A1111's
 * parse_prompt_attention rules, and the 77-id rows cross-checked against the
 * plain encoder. */
#include <stdlib.h>
#include <string.h>

#include "vkl_test.h"
#include "tokenizer/clip_tokenizer.h"

#define BPE_DIR "data/clip-bpe"

typedef struct {
    const char *text;
    double weight;
} want_span;

static void check_parse(const char *prompt, const want_span *want, size_t n_want)
{
    vkl_prompt_span *s;
    size_t n;
    vkl_err e = {{0}};
    if (vkl_prompt_parse(prompt, &s, &n, &e))
        fail_msg("parse \"%s\": %s", prompt, e.msg);
    int ok = n == n_want;
    for (size_t i = 0; ok && i < n; i++)
        ok = strcmp(s[i].text, want[i].text) == 0 && s[i].weight == want[i].weight;
    if (!ok) {
        fprintf(stderr, "parse \"%s\" gave:\n", prompt);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, "  [\"%s\", %.17g]\n", s[i].text, s[i].weight);
        fail_msg("unexpected parse of \"%s\"", prompt);
    }
    vkl_prompt_spans_free(s, n);
}

#define PARSE(prompt, ...)                                                   \
    do {                                                                     \
        const want_span w_[] = {__VA_ARGS__};                                \
        check_parse(prompt, w_, sizeof w_ / sizeof *w_);                     \
    } while (0)

static void test_parse(void **state)
{
    (void)state;
    const double up = 1.1, down = 1 / 1.1;
    PARSE("a cat", {"a cat", 1.0});
    PARSE("", {"", 1.0});
    PARSE("(word)", {"word", up});
    PARSE("[word]", {"word", down});
    PARSE("a (b:1.3) c", {"a ", 1.0}, {"b", 1.3}, {" c", 1.0});
    PARSE("((a))", {"a", 1.0 * up * up});
    PARSE("(((a)))", {"a", 1.0 * up * up * up});
    PARSE("[[a]]", {"a", 1.0 * down * down});
    /* inner bracket closes first, so b is (1/1.1) then x1.1 */
    PARSE("(a [b] c)", {"a ", up}, {"b", 1.0 * down * up}, {" c", up});
    PARSE("(a (b:2) c:0.5)", {"a ", 0.5}, {"b", 2.0 * 0.5}, {" c", 0.5});
    PARSE("( a : 1.5 )", {" a ", 1.5});
    PARSE("(a:-0.5)", {"a", -0.5});
    PARSE("(a:.5)", {"a", 0.5});
    PARSE("\\(not\\) \\[weighted\\]", {"(not) [weighted]", 1.0});
    PARSE("a\\\\b", {"a\\b", 1.0});
    PARSE("a\\b", {"ab", 1.0}); /* a lone backslash is dropped */
    PARSE("a:b", {"a:b", 1.0});
    PARSE("x:1.2)", {"x:1.2)", 1.0}); /* no open bracket: literal text */
    PARSE("a) b]", {"a) b]", 1.0});
    PARSE("(a:1.5", {"a:1.5", up}); /* unclosed: weight x1.1 to the end */
    PARSE("[a (b", {"a ", down}, {"b", 1.0 * up * down});
    PARSE("a BREAK b", {"a", 1.0}, {"BREAK", -1.0}, {"b", 1.0});
    PARSE("BREAK", {"", 1.0}, {"BREAK", -1.0}, {"", 1.0});
    PARSE("aBREAK b_BREAK BREAKs", {"aBREAK b_BREAK BREAKs", 1.0});
    PARSE("a,BREAK,b", {"a,", 1.0}, {"BREAK", -1.0}, {",b", 1.0});
    /* brackets multiply the BREAK marker too, turning it into plain text */
    PARSE("(a BREAK b)", {"a", up}, {"BREAK", -1.0 * up}, {"b", up});
    PARSE("caf\xc3\xa9 (\xe6\x9d\xb1:1.2)", {"caf\xc3\xa9 ", 1.0}, {"\xe6\x9d\xb1", 1.2});

    vkl_prompt_span *s;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_prompt_parse("(a:1.2.3)", &s, &n, &e), -1);
    assert_non_null(strstr(e.msg, "1.2.3"));
    assert_int_equal(vkl_prompt_parse("(a:.)", &s, &n, &e), -1);
    assert_int_equal(vkl_prompt_parse("bad \xff utf8", &s, &n, &e), -1);
}

static vkl_clip_tokenizer *load(void)
{
    vkl_clip_tokenizer *t;
    vkl_err e = {{0}};
    if (vkl_clip_tokenizer_load(&t, vkl_test_shared_path(BPE_DIR), &e))
        fail_msg("%s", e.msg);
    return t;
}

static void plain_ids(vkl_clip_tokenizer *t, const char *text, int32_t **ids, size_t *n)
{
    vkl_err e = {{0}};
    if (vkl_clip_encode(t, text, strlen(text), 0, ids, n, &e))
        fail_msg("%s", e.msg);
}

/* Checks row r holds BOS, want[0..n), EOS padding and EOS. */
static void check_row(const vkl_prompt_tokens *p, size_t r, const int32_t *want, size_t n)
{
    const int32_t *row = p->ids + r * VKL_CLIP_CONTEXT;
    assert_true(n <= VKL_CLIP_CHUNK);
    assert_int_equal(row[0], 49406);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(row[1 + i], want[i]);
    for (size_t i = n + 1; i < VKL_CLIP_CONTEXT; i++)
        assert_int_equal(row[i], 49407);
}

static char *repeat(const char *word, int times, const char *tail)
{
    size_t len = strlen(word), tl = tail ? strlen(tail) : 0;
    char *s = malloc(len * (size_t)times + tl + 1), *q = s;
    for (int i = 0; i < times; i++, q += len)
        memcpy(q, word, len);
    if (tail)
        memcpy(q, tail, tl);
    q[tl] = 0;
    return s;
}

static void test_weights_and_ids(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load();
    vkl_prompt_tokens p;
    vkl_err e = {{0}};

    /* "a (cat:1.5) on a [mat]": ids as the plain prompt, weights per token */
    assert_int_equal(vkl_clip_encode_prompt(t, "a (cat:1.5) on a [mat]", NULL, &p, &e), 0);
    int32_t *ids;
    size_t n;
    plain_ids(t, "a cat on a mat", &ids, &n);
    assert_int_equal(n, 5);
    assert_int_equal(p.n_chunks, 1);
    assert_int_equal(p.n_tokens, 5);
    check_row(&p, 0, ids, n);
    const float want_w[7] = {1.0f, 1.0f, 1.5f, 1.0f, 1.0f, (float)(1 / 1.1), 1.0f};
    assert_memory_equal(p.weights, want_w, sizeof want_w);
    for (int i = 7; i < VKL_CLIP_CONTEXT; i++)
        assert_true(p.weights[i] == 1.0f);
    free(ids);
    vkl_prompt_tokens_free(&p);

    /* escapes give the literal brackets' ids */
    assert_int_equal(vkl_clip_encode_prompt(t, "\\(x\\) \\[y\\]", NULL, &p, &e), 0);
    plain_ids(t, "(x) [y]", &ids, &n);
    check_row(&p, 0, ids, n);
    free(ids);
    vkl_prompt_tokens_free(&p);

    /* plain mode keeps brackets as text */
    vkl_prompt_opts plain = {0, 1, 20};
    assert_int_equal(vkl_clip_encode_prompt(t, "(x:1.3)", &plain, &p, &e), 0);
    plain_ids(t, "(x:1.3)", &ids, &n);
    check_row(&p, 0, ids, n);
    for (int i = 0; i < VKL_CLIP_CONTEXT; i++)
        assert_true(p.weights[i] == 1.0f);
    free(ids);
    vkl_prompt_tokens_free(&p);

    /* empty prompt: one row of BOS + EOS padding */
    assert_int_equal(vkl_clip_encode_prompt(t, "", NULL, &p, &e), 0);
    assert_int_equal(p.n_chunks, 1);
    assert_int_equal(p.n_tokens, 0);
    check_row(&p, 0, NULL, 0);
    vkl_prompt_tokens_free(&p);

    /* BREAK closes the row: 75 counted for the full row, then 1 */
    assert_int_equal(vkl_clip_encode_prompt(t, "a BREAK cat", NULL, &p, &e), 0);
    assert_int_equal(p.n_chunks, 2);
    assert_int_equal(p.n_tokens, 76);
    const int32_t a_id = 320, cat_id = 2368;
    check_row(&p, 0, &a_id, 1);
    check_row(&p, 1, &cat_id, 1);
    vkl_prompt_tokens_free(&p);
    vkl_clip_tokenizer_free(t);
}

static void test_long_prompts(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load();
    vkl_prompt_tokens p;
    vkl_err e = {{0}};
    int32_t *ids;
    size_t n;

    /* 160 words: rows of 75, 75, 10; ids as the plain encoder's, in order */
    char *s = repeat("red apple ", 80, NULL);
    plain_ids(t, s, &ids, &n);
    assert_int_equal(n, 160);
    assert_int_equal(vkl_clip_encode_prompt(t, s, NULL, &p, &e), 0);
    assert_int_equal(p.n_chunks, 3);
    assert_int_equal(p.n_tokens, 160);
    check_row(&p, 0, ids, 75);
    check_row(&p, 1, ids + 75, 75);
    check_row(&p, 2, ids + 150, 10);
    free(ids);
    free(s);
    vkl_prompt_tokens_free(&p);

    /* exactly 75 ids: one row */
    s = repeat("cat ", 75, NULL);
    assert_int_equal(vkl_clip_encode_prompt(t, s, NULL, &p, &e), 0);
    assert_int_equal(p.n_chunks, 1);
    assert_int_equal(p.n_tokens, 75);
    free(s);
    vkl_prompt_tokens_free(&p);

    /* 70 cats, a comma, 10 dogs. With backtracking (A1111's default 20) the
     * row that fills at 75 ids moves the 4 dogs after the comma to row 2. */
    s = repeat("cat ", 70, ", dog dog dog dog dog dog dog dog dog dog");
    plain_ids(t, s, &ids, &n);
    assert_int_equal(n, 81);
    assert_int_equal(ids[70], 267); /* ",</w>" */
    assert_int_equal(vkl_clip_encode_prompt(t, s, NULL, &p, &e), 0);
    assert_int_equal(p.n_chunks, 2);
    assert_int_equal(p.n_tokens, 75 + 10);
    check_row(&p, 0, ids, 71);
    check_row(&p, 1, ids + 71, 10);
    vkl_prompt_tokens_free(&p);
    vkl_prompt_opts nob = {0, 0, 0};
    assert_int_equal(vkl_clip_encode_prompt(t, s, &nob, &p, &e), 0);
    assert_int_equal(p.n_chunks, 2);
    assert_int_equal(p.n_tokens, 75 + 6);
    check_row(&p, 0, ids, 75);
    check_row(&p, 1, ids + 75, 6);
    vkl_prompt_tokens_free(&p);
    /* a comma further back than the limit does not move anything */
    vkl_prompt_opts near = {0, 0, 3};
    assert_int_equal(vkl_clip_encode_prompt(t, s, &near, &p, &e), 0);
    check_row(&p, 0, ids, 75);
    vkl_prompt_tokens_free(&p);
    free(ids);
    free(s);

    /* weights travel with moved ids: 70 cats, comma, (dog:1.5) x10 */
    s = repeat("cat ", 70, ", (dog dog dog dog dog dog dog dog dog dog:1.5)");
    assert_int_equal(vkl_clip_encode_prompt(t, s, NULL, &p, &e), 0);
    assert_int_equal(p.n_chunks, 2);
    for (int i = 1; i <= 71; i++)
        assert_true(p.weights[i] == 1.0f);
    for (int i = 72; i < VKL_CLIP_CONTEXT; i++)
        assert_true(p.weights[i] == 1.0f); /* padding */
    for (int i = 1; i <= 10; i++)
        assert_true(p.weights[VKL_CLIP_CONTEXT + i] == 1.5f);
    free(s);
    vkl_prompt_tokens_free(&p);

    assert_int_equal(vkl_clip_encode_prompt(t, "(a:1..2)", NULL, &p, &e), -1);
    vkl_clip_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_weights_and_ids),
        cmocka_unit_test(test_long_prompts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
