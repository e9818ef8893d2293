/* Byte-level BPE tokenizer.json: the GPT-2 / Llama 3 / Qwen2 split regexes on
 * their edge cases (pieces worked out by hand from the patterns' ordered
 * alternatives), then small tokenizer.json files built here with known
 * merges, whose ids follow by hand from the algorithm (lowest rank first,
 * leftmost on ties; ignore_merges; added tokens and their flags; the
 * template and add_bos_token; NFC), decoding, and the files refused. */
#include "vkl_test.h"
#include "tokenizer/hf_bpe_internal.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- split regexes ---- */

/* Splits text with rx and compares the pieces with the NULL-terminated list. */
static void check_split(vkl_hf_regex rx, const char *text, ...)
{
    vkl_ucbuf cp = {0};
    vkl_i32buf spans = {0};
    vkl_err e = {{0}};
    if (vkl_utf8_decode(text, strlen(text), &cp, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_hf_regex_split(rx, cp.v, cp.n, &spans), 0);
    va_list ap;
    va_start(ap, text);
    size_t k = 0;
    for (const char *want; (want = va_arg(ap, const char *)); k += 2) {
        if (k >= spans.n) fail_msg("rx %d \"%s\": %zu pieces, expected more (next \"%s\")", rx, text, k / 2, want);
        char got[256];
        size_t len = 0;
        for (int32_t i = spans.v[k]; i < spans.v[k + 1]; i++) len += vkl_utf8_put(cp.v[i], (unsigned char *)got + len);
        got[len] = 0;
        if (strcmp(got, want)) fail_msg("rx %d \"%s\": piece %zu is \"%s\", expected \"%s\"", rx, text, k / 2, got, want);
    }
    va_end(ap);
    if (k != spans.n) fail_msg("rx %d \"%s\": %zu pieces, expected %zu", rx, text, spans.n / 2, k / 2);
    vkl_ucbuf_free(&cp);
    vkl_i32buf_free(&spans);
}

static void gpt2_regex(void **state)
{
    (void)state;
    const vkl_hf_regex G = VKL_RX_GPT2;
    check_split(G, "Hello world", "Hello", " world", NULL);
    check_split(G, "I'm here's", "I", "'m", " here", "'s", NULL);
    check_split(G, "I'M", "I", "'", "M", NULL); /* case-sensitive contractions */
    check_split(G, "it's  ok", "it", "'s", " ", " ok", NULL);
    check_split(G, "a   \n b", "a", "   \n", " b", NULL); /* \s+(?!\S) leaves the last space */
    check_split(G, "x1234567 42", "x", "1234567", " 42", NULL);
    check_split(G, "end.  ", "end", ".", "  ", NULL);
    check_split(G, "?! (hi)", "?!", " (", "hi", ")", NULL);
    check_split(G, "Привет мир", "Привет", " мир", NULL);
    check_split(G, "\xF0\x9F\x98\x80\xF0\x9F\x98\x80 hi", "\xF0\x9F\x98\x80\xF0\x9F\x98\x80", " hi", NULL);
    check_split(G, "a\xC2\xA0" "b", "a", "\xC2\xA0", "b", NULL); /* NBSP is \s but not " ?" */
    check_split(G, "e\xCC\x81", "e", "\xCC\x81", NULL);         /* a combining mark is neither L nor N */
}

static void llama3_regex(void **state)
{
    (void)state;
    const vkl_hf_regex L = VKL_RX_LLAMA3;
    check_split(L, "I'M don't", "I", "'M", " don", "'t", NULL); /* (?i:...) */
    check_split(L, "1234567", "123", "456", "7", NULL);
    check_split(L, "abc123 12", "abc", "123", " ", "12", NULL);
    check_split(L, "hello\n\nworld", "hello", "\n\n", "world", NULL);
    check_split(L, "a \n  b", "a", " \n", " ", " b", NULL);
    check_split(L, ".\n\nfoo", ".\n\n", "foo", NULL);
    check_split(L, " (hi)", " (", "hi", ")", NULL);
    check_split(L, "(hi", "(hi", NULL);
    check_split(L, "\tfoo  ", "\tfoo", "  ", NULL);
    check_split(L, "a\xC2\xA0" "b", "a", "\xC2\xA0" "b", NULL);
    check_split(L, "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C!", "\xE4\xBD\xA0\xE5\xA5\xBD\xE4\xB8\x96\xE7\x95\x8C",
                "!", NULL);
    /* thumbs up + skin tone (So, Sk): one run of other characters */
    check_split(L, "ok \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", "ok", " \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD", NULL);
    check_split(L, "x\r\n", "x", "\r\n", NULL);
    check_split(VKL_RX_QWEN2, "ab1234 I'm", "ab", "1", "2", "3", "4", " I", "'m", NULL);
}

/* ---- tokenizer.json files ---- */

/* GPT-2's bytes_to_unicode, from its definition. */
static void byte_char(int b, char *out)
{
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    int cp = b, n = 0;
    if (!printable) {
        for (int k = 0; k < b; k++) n += !((k >= 33 && k <= 126) || (k >= 161 && k <= 172) || (k >= 174 && k <= 255));
        cp = 256 + n;
    }
    size_t len = vkl_utf8_put((uint32_t)cp, (unsigned char *)out);
    out[len] = 0;
}

#define G_ "\xC4\xA0" /* Ġ, the space byte */
/* Merges in rank order; the merged tokens get ids 256, 257, ... */
static const char *const MERGES[][2] = {
    {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {G_, "w"}, {"o", "r"}, {G_ "w", "or"}, {"l", "d"},
    {G_ "wor", "ld"}, {G_, G_}, {"1", "2"}, {"12", "3"}, {"'", "s"}, {"\xC4\x8A", "\xC4\x8A"}, {"a", "a"},
    {"b", "c"}, {"a", "b"},
};
enum { HE = 256, LL, HELL, HELLO, GW, OR, GWOR, LD, GWORLD, GG, N12, N123, APOS_S, NLNL, AA, BC, AB, GZZ = 273 };
enum { BOS = 280, END = 281, MASK = 282, XYZ = 283, NICE = 284 };
#define NMERGES (sizeof MERGES / sizeof *MERGES)

typedef struct opts {
    const char *pre;  /* pre_tokenizer JSON */
    const char *norm; /* normalizer JSON or NULL */
    const char *post; /* post_processor JSON or NULL */
    int ignore_merges, array_merges;
} opts;

static const char *SPLIT_LLAMA3 =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\","
    "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":false}]}";
static const char *SPLIT_QWEN2 =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},\"behavior\":\"Isolated\","
    "\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]}";
static const char *BYTELEVEL = "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":true,\"use_regex\":true}";
static const char *TEMPLATE_BOS =
    "{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<|bos|>\",\"type_id\":0}},"
    "{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}],\"pair\":[],\"special_tokens\":{\"<|bos|>\":{\"id\":\"<|bos|>\","
    "\"ids\":[280],\"tokens\":[\"<|bos|>\"]}}}";

static void add_token(cJSON *list, int id, const char *content, int special, int normalized, int lstrip,
                      int single_word)
{
    cJSON *a = cJSON_CreateObject();
    cJSON_AddNumberToObject(a, "id", id);
    cJSON_AddStringToObject(a, "content", content);
    cJSON_AddBoolToObject(a, "single_word", single_word);
    cJSON_AddBoolToObject(a, "lstrip", lstrip);
    cJSON_AddBoolToObject(a, "rstrip", 0);
    cJSON_AddBoolToObject(a, "normalized", normalized);
    cJSON_AddBoolToObject(a, "special", special);
    cJSON_AddItemToArray(list, a);
}

static char *make_json(const opts *o)
{
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(), *vocab = cJSON_CreateObject();
    cJSON *merges = cJSON_CreateArray(), *added = cJSON_CreateArray();
    char s[64];
    for (int b = 0; b < 256; b++) {
        byte_char(b, s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    for (size_t i = 0; i < NMERGES; i++) {
        snprintf(s, sizeof s, "%s%s", MERGES[i][0], MERGES[i][1]);
        cJSON_AddNumberToObject(vocab, s, 256 + (int)i);
        if (o->array_merges) {
            cJSON *pair = cJSON_CreateArray();
            cJSON_AddItemToArray(pair, cJSON_CreateString(MERGES[i][0]));
            cJSON_AddItemToArray(pair, cJSON_CreateString(MERGES[i][1]));
            cJSON_AddItemToArray(merges, pair);
        } else {
            snprintf(s, sizeof s, "%s %s", MERGES[i][0], MERGES[i][1]);
            cJSON_AddItemToArray(merges, cJSON_CreateString(s));
        }
    }
    cJSON_AddNumberToObject(vocab, G_ "zz", GZZ); /* reachable only whole (ignore_merges) */
    add_token(added, BOS, "<|bos|>", 1, 0, 0, 0);
    add_token(added, END, "<|end|>", 1, 0, 0, 0);
    add_token(added, MASK, "<mask>", 1, 0, 1, 0);
    add_token(added, XYZ, "xyz", 0, 0, 0, 1);
    add_token(added, NICE, "nice", 0, 1, 0, 0);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddBoolToObject(model, "byte_fallback", 0);
    cJSON_AddBoolToObject(model, "ignore_merges", o->ignore_merges);
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", merges);
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddItemToObject(root, "added_tokens", added);
    cJSON_AddItemToObject(root, "normalizer", o->norm ? cJSON_Parse(o->norm) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "pre_tokenizer", cJSON_Parse(o->pre));
    cJSON_AddItemToObject(root, "post_processor", o->post ? cJSON_Parse(o->post) : cJSON_CreateNull());
    cJSON_AddItemToObject(root, "decoder", cJSON_Parse("{\"type\":\"ByteLevel\"}"));
    cJSON_AddItemToObject(root, "model", model);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return text;
}

static vkl_hfbpe *load(const opts *o, const char *config)
{
    char *json = make_json(o);
    vkl_hfbpe *t = NULL;
    vkl_err e = {{0}};
    if (vkl_hfbpe_load_text(json, config, "test tokenizer.json", &t, &e)) fail_msg("%s", e.msg);
    free(json);
    return t;
}

/* Encodes text and compares with the ids that follow (-1 ends the list). */
static void check_ids(const vkl_hfbpe *t, int add_special, const char *text, ...)
{
    int32_t *ids = NULL;
    int n = 0;
    vkl_err e = {{0}};
    if (vkl_hfbpe_encode(t, text, add_special, &ids, &n, &e)) fail_msg("\"%s\": %s", text, e.msg);
    va_list ap;
    va_start(ap, text);
    int k = 0;
    for (int want; (want = va_arg(ap, int)) >= 0; k++) {
        if (k >= n) fail_msg("\"%s\": %d ids, expected more (next %d)", text, n, want);
        if (ids[k] != want) fail_msg("\"%s\": id %d is %d, expected %d", text, k, ids[k], want);
    }
    va_end(ap);
    if (k != n) fail_msg("\"%s\": %d ids, expected %d", text, n, k);
    free(ids);
}

static void gpt2_style(void **state)
{
    (void)state;
    opts o = {.pre = BYTELEVEL, .post = "{\"type\":\"ByteLevel\"}"};
    vkl_hfbpe *t = load(&o, NULL);
    assert_int_equal(vkl_hfbpe_size(t), 285);
    check_ids(t, 1, "hello world", HELLO, GWORLD, -1);
    check_ids(t, 1, " hello", ' ', HELLO, -1); /* "Ġhello" is no merge */
    check_ids(t, 1, "abc", 'a', BC, -1);       /* rank 15 (b c) before rank 16 (a b) */
    check_ids(t, 1, "aaa", AA, 'a', -1);       /* equal ranks: leftmost first */
    check_ids(t, 1, "  world", ' ', GWORLD, -1);
    check_ids(t, 1, "   x", GG, ' ', 'x', -1); /* "  " then " x" (no Ġx merge) */
    check_ids(t, 1, "1234", N123, '4', -1);     /* GPT-2 keeps digit runs whole */
    check_ids(t, 1, "he's\n\n", HE, APOS_S, NLNL, -1);
    check_ids(t, 1, " zz", ' ', 'z', 'z', -1); /* without ignore_merges */
    check_ids(t, 1, "hello<|end|>world", HELLO, END, 'w', OR, LD, -1);
    check_ids(t, 1, "a <mask>b", 'a', MASK, 'b', -1); /* lstrip takes the space */
    check_ids(t, 1, "axyz a xyz", 'a', 'x', 'y', 'z', ' ', 'a', ' ', XYZ, -1); /* single_word */
    check_ids(t, 1, "\xC3\xA9\xF0\x9F\x98\x80", 0xC3, 0xA9, 0xF0, 0x9F, 0x98, 0x80, -1);
    check_ids(t, 1, "", -1);
    /* decoding: bytes back, special tokens kept or skipped, invalid UTF-8 replaced */
    int32_t ids[] = {BOS, HELLO, GWORLD, 0xF0, 0x9F, 0x98, 0x80};
    char *s = vkl_hfbpe_decode(t, ids, 7, 0);
    assert_string_equal(s, "<|bos|>hello world\xF0\x9F\x98\x80");
    free(s);
    s = vkl_hfbpe_decode(t, ids, 3, 1);
    assert_string_equal(s, "hello world");
    free(s);
    s = vkl_hfbpe_decode(t, ids + 3, 3, 1); /* an emoji cut short: one U+FFFD */
    assert_string_equal(s, "\xEF\xBF\xBD");
    free(s);
    int32_t bad[] = {0xE0, 0x80, 'x', 0xC3};
    s = vkl_hfbpe_decode(t, bad, 4, 1); /* E0 80 is two invalid bytes; C3 at the end one more */
    assert_string_equal(s, "\xEF\xBF\xBD\xEF\xBF\xBDx\xEF\xBF\xBD");
    free(s);
    vkl_hfbpe_free(t);

    /* SmolLM's pre-tokenizer: digits isolated one by one before GPT-2's split */
    o.pre = "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
            "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}]}";
    t = load(&o, NULL);
    check_ids(t, 1, "a12 34", 'a', '1', '2', ' ', '3', '4', -1); /* without Digits: a, 12, " 34" */
    vkl_hfbpe_free(t);

    o.ignore_merges = 1;
    o.array_merges = 1;
    o.pre = "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":true}";
    t = load(&o, NULL);
    check_ids(t, 1, "hello", ' ', HELLO, -1);       /* the prefix space */
    check_ids(t, 1, "zz", GZZ, -1);                 /* " zz" is a token: kept whole */
    check_ids(t, 1, "hello<|end|>world", ' ', HELLO, END, GWORLD, -1);
    vkl_hfbpe_free(t);
}

static void llama3_style(void **state)
{
    (void)state;
    opts o = {.pre = SPLIT_LLAMA3, .post = TEMPLATE_BOS, .ignore_merges = 1};
    vkl_hfbpe *t = load(&o, NULL);
    assert_int_equal(vkl_hfbpe_bos(t), BOS);
    check_ids(t, 1, "hello  world", BOS, HELLO, ' ', GWORLD, -1);
    check_ids(t, 0, "hello  world", HELLO, ' ', GWORLD, -1);
    check_ids(t, 0, " zz", GZZ, -1);
    check_ids(t, 0, "1234567", N123, '4', '5', '6', '7', -1); /* groups of three: "123" "456" "7" */
    check_ids(t, 0, "HE'S", 'H', 'E', '\'', 'S', -1);         /* "'S" one piece; no 'S merge */
    check_ids(t, 0, "e\xCC\x81", 'e', 0xCC, 0x81, -1);       /* no normalizer: the mark stays apart */
    check_ids(t, 0, "<|bos|><|bos|>nice", BOS, BOS, NICE, -1);
    vkl_hfbpe_free(t);

    /* tokenizer_config.json's add_bos_token replaces the template */
    t = load(&o, "{\"add_bos_token\":false,\"bos_token\":\"<|bos|>\",\"eos_token\":{\"content\":\"<|end|>\"}}");
    check_ids(t, 1, "hello", HELLO, -1);
    assert_int_equal(vkl_hfbpe_eos(t), END);
    vkl_hfbpe_free(t);
    /* clean_up_tokenization_spaces: transformers' replaces, in order */
    t = load(&o, "{\"clean_up_tokenization_spaces\":true}");
    int32_t *ids = NULL;
    int n = 0;
    vkl_err e = {{0}};
    assert_int_equal(vkl_hfbpe_encode(t, "I do n't know , he said ' hi ' .", 0, &ids, &n, &e), 0);
    char *text = vkl_hfbpe_decode(t, ids, n, 1);
    assert_string_equal(text, "I don't know, he said'hi '.");
    free(text);
    free(ids);
    vkl_hfbpe_free(t);
    /* ... but not for a class that keeps the file's template (Llama 3's) */
    t = load(&o, "{\"add_bos_token\":false,\"tokenizer_class\":\"PreTrainedTokenizerFast\"}");
    check_ids(t, 1, "hello", BOS, HELLO, -1);
    vkl_hfbpe_free(t);
    o.post = NULL;
    t = load(&o, "{\"add_bos_token\":true,\"bos_token\":\"<|bos|>\",\"tokenizer_class\":\"LlamaTokenizerFast\"}");
    check_ids(t, 1, "hello", BOS, HELLO, -1);
    vkl_hfbpe_free(t);
}

static void qwen2_style(void **state)
{
    (void)state;
    opts o = {.pre = SPLIT_QWEN2, .norm = "{\"type\":\"NFC\"}"};
    vkl_hfbpe *t = load(&o, NULL);
    check_ids(t, 1, "1234", '1', '2', '3', '4', -1);
    check_ids(t, 1, "e\xCC\x81", 0xC3, 0xA9, -1); /* NFC: e + U+0301 -> U+00E9 */
    check_ids(t, 1, "hello\n\n", HELLO, NLNL, -1);
    /* "nice" is normalized: matched after NFC; "xyz" is not and must stand alone */
    check_ids(t, 1, "a nice xyz", 'a', ' ', NICE, ' ', XYZ, -1);
    vkl_hfbpe_free(t);
}

static void refused(void **state)
{
    (void)state;
    struct {
        const char *find, *replace, *error;
    } cases[] = {
        {"\"BPE\"", "\"WordPiece\"", "WordPiece"},
        {"\"byte_fallback\":false", "\"byte_fallback\":true", "tokenizer.model"},
        {"\\\\p{N}{1,3}", "\\\\p{N}{1,4}", "Split regex"},
        {"\"Isolated\"", "\"Removed\"", "Isolated"},
        {"\"h e\"", "\"h q\"", "merge 0"},
        {"\"id\":280", "\"id\":99999999", "dense"},
        {"\"Sequence\"", "\"Metaspace\"", "Metaspace"},
    };
    opts o = {.pre = SPLIT_LLAMA3, .post = TEMPLATE_BOS};
    char *json = make_json(&o);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *at = strstr(json, cases[i].find);
        if (!at) fail_msg("case %zu: \"%s\" not in the file", i, cases[i].find);
        size_t pre = (size_t)(at - json), fl = strlen(cases[i].find), rl = strlen(cases[i].replace);
        char *bad = malloc(strlen(json) + rl + 1);
        memcpy(bad, json, pre);
        strcpy(bad + pre, cases[i].replace);
        strcat(bad, at + fl);
        vkl_hfbpe *t = NULL;
        vkl_err e = {{0}};
        if (!vkl_hfbpe_load_text(bad, NULL, "bad.json", &t, &e)) fail_msg("case %zu loaded", i);
        if (!strstr(e.msg, cases[i].error)) fail_msg("case %zu: \"%s\" does not name %s", i, e.msg, cases[i].error);
        assert_null(t);
        free(bad);
    }
    free(json);
    vkl_hfbpe *t = load(&o, NULL);
    int32_t *ids = NULL;
    int n = 0;
    vkl_err e = {{0}};
    assert_int_equal(vkl_hfbpe_encode(t, "ok\xFF", 1, &ids, &n, &e), -1);
    assert_non_null(strstr(e.msg, "invalid UTF-8"));
    vkl_hfbpe_free(t);
    assert_int_equal(vkl_hfbpe_load_text("[1,2]", NULL, "x.json", &t, &e), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gpt2_regex),  cmocka_unit_test(llama3_regex), cmocka_unit_test(gpt2_style),
        cmocka_unit_test(llama3_style), cmocka_unit_test(qwen2_style), cmocka_unit_test(refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
