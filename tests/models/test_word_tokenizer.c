/* Word-level tokenizer: building tokenizer.json from a caption folder (JSON
 * structure, id order, determinism), reading it back through
 * vkl_clip_tokenizer_load (encoding, padding, prompt weighting and chunking as
 * the SD pipeline uses them), the model-folder lookup of the SD loader, and
 * the errors for files it cannot read. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "vkl_test.h"
#include "io/dir.h"
#include "sd/sd_model.h"
#include "tokenizer/clip_tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer/word_tokenizer.h"

static char root[256];      /* temporary folder of this program */
static char captions[300];  /* the caption folder */
static char built[300];     /* the tokenizer built from it */

/* Ids the captions below must give: count descending, then byte order. */
static const char *const WANT_VOCAB[] = {
    "<|startoftext|>", "<|endoftext|>", "<|unk|>", "apple", "red", "!", ",", "big", "café", "crème",
    "eyes", "face", "green", "grinning", "heart", "with",
};
#define N_WANT (sizeof WANT_VOCAB / sizeof *WANT_VOCAB)
enum { BOS = 0, EOS = 1, UNK = 2, APPLE = 3, RED = 4, BANG = 5, COMMA = 6, CAFE = 8, HEART = 14 };

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void make_dir(const char *p)
{
    if (mkdir(p, 0755)) fail_msg("cannot create %s", p);
}

static void build(const char *const *dirs, size_t n, int min_count, const char *out)
{
    vkl_word_build_opts o;
    vkl_word_build_opts_default(&o);
    o.min_count = min_count;
    o.force = 1;
    vkl_word_build_stats st;
    vkl_err e = {{0}};
    if (vkl_word_tokenizer_build(dirs, n, &o, out, &st, &e)) fail_msg("build %s: %s", out, e.msg);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "%s", vkl_test_tmpdir());
    snprintf(captions, sizeof captions, "%s/captions", root);
    snprintf(built, sizeof built, "%s/tok", root);
    make_dir(captions);
    char sub[400];
    snprintf(sub, sizeof sub, "%s/sub", captions);
    make_dir(sub);
    write_file(captions, "a.txt", "Red heart");
    write_file(captions, "b.txt", "red apple, green apple\n");
    write_file(captions, "c.txt", "Grinning face with big eyes!");
    write_file(sub, "d.txt", "Café CRÈME <|endoftext|>");
    write_file(captions, "e.md", "not a caption");
    write_file(captions, ".hidden.txt", "hidden words");
    const char *dirs[] = {captions};
    build(dirs, 1, 1, built);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(root);
    return 0;
}

static cJSON *read_json(const char *dir, const char *name)
{
    char *text = vkl_test_slurp(dir, name);
    if (!text) fail_msg("cannot read %s/%s", dir, name);
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!j) fail_msg("%s/%s is not valid JSON", dir, name);
    return j;
}

static const cJSON *get(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) fail_msg("no \"%s\"", key);
    return v;
}

static void assert_str(const cJSON *v, const char *want)
{
    if (!cJSON_IsString(v) || strcmp(v->valuestring, want))
        fail_msg("expected \"%s\", got %s", want, cJSON_IsString(v) ? v->valuestring : "(not a string)");
}

static void assert_template_piece(const cJSON *p, const char *kind, const char *id)
{
    const cJSON *in = get(p, kind);
    assert_str(get(in, "id"), id);
    assert_true(cJSON_IsNumber(get(in, "type_id")));
}

static void test_tokenizer_json(void **state)
{
    (void)state;
    cJSON *j = read_json(built, "tokenizer.json");
    assert_str(get(j, "version"), "1.0");
    assert_true(cJSON_IsNull(get(j, "truncation")));
    assert_true(cJSON_IsNull(get(j, "padding")));
    const cJSON *added = get(j, "added_tokens");
    assert_true(cJSON_IsArray(added));
    assert_int_equal(cJSON_GetArraySize(added), 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *a = cJSON_GetArrayItem(added, i);
        assert_true(cJSON_IsNumber(get(a, "id")));
        assert_int_equal(get(a, "id")->valueint, i);
        assert_str(get(a, "content"), WANT_VOCAB[i]);
        assert_true(cJSON_IsTrue(get(a, "special")));
        assert_true(cJSON_IsFalse(get(a, "normalized")));
        assert_true(cJSON_IsFalse(get(a, "lstrip")));
        assert_true(cJSON_IsFalse(get(a, "rstrip")));
        assert_true(cJSON_IsFalse(get(a, "single_word")));
    }
    assert_str(get(get(j, "normalizer"), "type"), "Lowercase");
    assert_str(get(get(j, "pre_tokenizer"), "type"), "Whitespace");
    const cJSON *pp = get(j, "post_processor");
    assert_str(get(pp, "type"), "TemplateProcessing");
    const cJSON *single = get(pp, "single");
    assert_int_equal(cJSON_GetArraySize(single), 3);
    assert_template_piece(cJSON_GetArrayItem(single, 0), "SpecialToken", "<|startoftext|>");
    assert_template_piece(cJSON_GetArrayItem(single, 1), "Sequence", "A");
    assert_template_piece(cJSON_GetArrayItem(single, 2), "SpecialToken", "<|endoftext|>");
    assert_true(cJSON_IsArray(get(pp, "pair")));
    for (int i = 0; i < 2; i++) {
        const cJSON *sp = get(get(pp, "special_tokens"), WANT_VOCAB[i]);
        assert_str(get(sp, "id"), WANT_VOCAB[i]);
        assert_int_equal(cJSON_GetArraySize(get(sp, "ids")), 1);
        assert_int_equal(cJSON_GetArrayItem(get(sp, "ids"), 0)->valueint, i);
        assert_str(cJSON_GetArrayItem(get(sp, "tokens"), 0), WANT_VOCAB[i]);
    }
    assert_true(cJSON_IsNull(get(j, "decoder")));
    const cJSON *model = get(j, "model");
    assert_str(get(model, "type"), "WordLevel");
    assert_str(get(model, "unk_token"), "<|unk|>");
    const cJSON *vocab = get(model, "vocab");
    assert_true(cJSON_IsObject(vocab));
    assert_int_equal(cJSON_GetArraySize(vocab), N_WANT);
    int id = 0;
    for (const cJSON *v = vocab->child; v; v = v->next, id++) { /* written in id order */
        assert_true(cJSON_IsNumber(v));
        if (strcmp(v->string, WANT_VOCAB[id]) || v->valueint != id)
            fail_msg("vocab entry %d: \"%s\": %d, want \"%s\": %d", id, v->string, v->valueint, WANT_VOCAB[id], id);
    }
    cJSON_Delete(j);

    j = read_json(built, "tokenizer_config.json");
    assert_str(get(j, "tokenizer_class"), "PreTrainedTokenizerFast");
    assert_int_equal(get(j, "model_max_length")->valueint, 77);
    assert_str(get(j, "bos_token"), "<|startoftext|>");
    assert_str(get(j, "eos_token"), "<|endoftext|>");
    assert_str(get(j, "unk_token"), "<|unk|>");
    assert_str(get(j, "pad_token"), "<|endoftext|>");
    assert_str(get(get(get(j, "added_tokens_decoder"), "2"), "content"), "<|unk|>");
    cJSON_Delete(j);

    j = read_json(built, "special_tokens_map.json");
    assert_str(get(j, "bos_token"), "<|startoftext|>");
    assert_str(get(j, "eos_token"), "<|endoftext|>");
    assert_str(get(j, "unk_token"), "<|unk|>");
    assert_str(get(j, "pad_token"), "<|endoftext|>");
    cJSON_Delete(j);
}

static vkl_clip_tokenizer *load(const char *path)
{
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {{0}};
    if (vkl_clip_tokenizer_load(&t, path, &e)) fail_msg("loading %s: %s", path, e.msg);
    return t;
}

static void expect_ids(vkl_clip_tokenizer *t, const char *text, const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    vkl_err e = {{0}};
    if (vkl_clip_encode(t, text, strlen(text), 0, &ids, &n, &e)) fail_msg("encode \"%s\": %s", text, e.msg);
    int ok = n == n_want && (n == 0 || memcmp(ids, want, n * sizeof *ids) == 0);
    if (!ok) {
        fprintf(stderr, "encode \"%s\" gave", text);
        for (size_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
        fail_msg("unexpected ids for \"%s\"", text);
    }
    free(ids);
}

#define IDS(t, text, ...)                                        \
    do {                                                         \
        const int32_t w_[] = {__VA_ARGS__};                      \
        expect_ids(t, text, w_, sizeof w_ / sizeof *w_);         \
    } while (0)

static void test_encode(void **state)
{
    (void)state;
    vkl_clip_tokenizer *t = load(built);
    assert_int_equal(vkl_clip_vocab_size(t), N_WANT);
    assert_int_equal(vkl_clip_bos(t), BOS);
    assert_int_equal(vkl_clip_eos(t), EOS);
    for (size_t i = 0; i < N_WANT; i++) {
        assert_string_equal(vkl_clip_token_str(t, (int32_t)i), WANT_VOCAB[i]);
        assert_int_equal(vkl_clip_token_id(t, WANT_VOCAB[i]), (int32_t)i);
    }
    assert_null(vkl_clip_token_str(t, (int32_t)N_WANT));
    assert_int_equal(vkl_clip_token_id(t, "purple"), -1);

    IDS(t, "Red heart!", RED, HEART, BANG);
    IDS(t, "RED   HEART", RED, HEART);           /* case-insensitive, any spaces */
    IDS(t, "purple heart", UNK, HEART);          /* unknown word */
    IDS(t, "red,apple", RED, COMMA, APPLE);      /* punctuation splits words */
    IDS(t, "red!!", RED, UNK);                   /* a run of punctuation is one word */
    IDS(t, "café", CAFE);                        /* letters beyond ASCII stay in the word */
    IDS(t, "CAFÉ", CAFE);                        /* ... and are lower-cased */
    IDS(t, "cafe\xcc\x81", UNK);                 /* a combining mark joins the word (not NFC'd) */
    IDS(t, "red_heart", UNK);                    /* _ is a word character */
    IDS(t, "red\xc2\xb2 !\xc2\xb2", UNK, UNK);     /* Oniguruma: "red²" one word, "!²" one run */
    IDS(t, "heart\xe2\x9d\xa4\xef\xb8\x8f", HEART, UNK, UNK); /* "❤" punctuation, VS16 a mark */
    IDS(t, "<|startoftext|>red<|endoftext|>", BOS, RED, EOS); /* specials cut out of raw text */
    IDS(t, "<|UNK|>", UNK, UNK, UNK);            /* ... case-sensitively: "<|", "unk", "|>" */
    IDS(t, "\t\n ");
    IDS(t, "");
    int32_t *ids;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_encode(t, "red \xff", 5, 0, &ids, &n, &e), -1); /* invalid UTF-8 */
    assert_non_null(strstr(e.msg, "UTF-8"));
    vkl_clip_tokenizer_free(t);
}

static void test_word_class(void **state)
{
    (void)state;
    /* \w of Oniguruma (what tokenizers' Whitespace splits with) */
    const uint32_t word[] = {'a', 'Z', '5', '_', 0xE9, 0x301, 0x903, 0x2160, 0x24B6, 0x0661, 0x4E00, 0xFE0F};
    const uint32_t other[] = {' ', '!', '-', 0xB2, 0xBD, 0x2764, 0x1F600, 0x3000, 0x2019, 0xA0, 0x200D, 0};
    for (size_t i = 0; i < sizeof word / sizeof *word; i++)
        if (!vkl_uc_is_word(word[i])) fail_msg("U+%04X should be a word character", word[i]);
    for (size_t i = 0; i < sizeof other / sizeof *other; i++)
        if (vkl_uc_is_word(other[i])) fail_msg("U+%04X should not be a word character", other[i]);
}

static void test_padded(void **state)
{
    (void)state;
    vkl_clip_tokenizer *t = load(built);
    int32_t row[VKL_CLIP_CONTEXT];
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_encode_padded(t, "Red heart!", 0, row, &n, &e), 0);
    assert_int_equal(n, 3);
    const int32_t head[] = {BOS, RED, HEART, BANG, EOS};
    assert_memory_equal(row, head, sizeof head);
    for (int i = 5; i < VKL_CLIP_CONTEXT; i++) assert_int_equal(row[i], EOS);

    char longp[1000] = "";
    for (int i = 0; i < 100; i++) strcat(longp, "red ");
    assert_int_equal(vkl_clip_encode_padded(t, longp, 0, row, &n, &e), 0);
    assert_int_equal(n, 100); /* untruncated length, for the warning */
    assert_int_equal(row[0], BOS);
    for (int i = 1; i <= VKL_CLIP_CHUNK; i++) assert_int_equal(row[i], RED);
    assert_int_equal(row[VKL_CLIP_CONTEXT - 1], EOS);
    vkl_clip_tokenizer_free(t);
}

static void test_prompt_weighting(void **state)
{
    (void)state;
    vkl_clip_tokenizer *t = load(built);
    vkl_prompt_tokens p;
    vkl_err e = {{0}};
    /* the call vkl_sd_encode_prompt makes */
    vkl_prompt_opts po = {0, 0, 20};
    if (vkl_clip_encode_prompt(t, "(red:1.2) heart", &po, &p, &e)) fail_msg("%s", e.msg);
    assert_int_equal(p.n_chunks, 1);
    assert_int_equal(p.n_tokens, 2);
    const int32_t head[] = {BOS, RED, HEART, EOS};
    assert_memory_equal(p.ids, head, sizeof head);
    assert_true(p.weights[0] == 1.0f && p.weights[1] == 1.2f && p.weights[2] == 1.0f && p.weights[3] == 1.0f);
    for (int i = 4; i < VKL_CLIP_CONTEXT; i++) assert_int_equal(p.ids[i], EOS);
    vkl_prompt_tokens_free(&p);

    if (vkl_clip_encode_prompt(t, "[RED] BREAK heart", NULL, &p, &e)) fail_msg("%s", e.msg);
    assert_int_equal(p.n_chunks, 2);
    assert_int_equal(p.ids[1], RED);
    assert_true(fabsf(p.weights[1] - 1.0f / 1.1f) < 1e-6f);
    assert_int_equal(p.ids[2], EOS);
    assert_int_equal(p.ids[VKL_CLIP_CONTEXT + 1], HEART);
    vkl_prompt_tokens_free(&p);

    /* a full row moves the words after a recent comma to the next row: the
     * comma is "," in a word vocabulary (",</w>" in CLIP's) */
    char longp[2000] = "";
    for (int i = 0; i < 70; i++) strcat(longp, "red ");
    strcat(longp, ", ");
    for (int i = 0; i < 10; i++) strcat(longp, "heart ");
    if (vkl_clip_encode_prompt(t, longp, NULL, &p, &e)) fail_msg("%s", e.msg);
    assert_int_equal(p.n_chunks, 2);
    assert_int_equal(p.ids[70], RED);
    assert_int_equal(p.ids[71], COMMA);
    assert_int_equal(p.ids[72], EOS);
    for (int i = 1; i <= 10; i++) assert_int_equal(p.ids[VKL_CLIP_CONTEXT + i], HEART);
    assert_int_equal(p.ids[VKL_CLIP_CONTEXT + 11], EOS);
    vkl_prompt_tokens_free(&p);
    vkl_clip_tokenizer_free(t);
}

static void assert_same_files(const char *a, const char *b)
{
    const char *names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 3; i++) {
        char *x = vkl_test_slurp(a, names[i]), *y = vkl_test_slurp(b, names[i]);
        assert_non_null(x);
        assert_non_null(y);
        if (strcmp(x, y)) fail_msg("%s differs between %s and %s", names[i], a, b);
        free(x);
        free(y);
    }
}

static void test_deterministic(void **state)
{
    (void)state;
    char again[400], sub[400], split[400];
    snprintf(again, sizeof again, "%s/again", root);
    snprintf(sub, sizeof sub, "%s/sub", captions);
    const char *dirs[] = {captions};
    build(dirs, 1, 1, again);
    assert_same_files(built, again);
    /* the caption folders in the other order count the same words */
    snprintf(split, sizeof split, "%s/split", root);
    const char *two[] = {sub, captions};
    build(two, 2, 1, split);
    char *x = vkl_test_slurp(split, "tokenizer.json");
    assert_non_null(x);
    /* sub/ is read twice: café and crème join apple and red among the words used twice */
    assert_non_null(strstr(x, "\"apple\":\t3,\n\t\t\t\"café\":\t4,\n\t\t\t\"crème\":\t5,\n\t\t\t\"red\":\t6,"));
    free(x);
}

static void test_min_count_and_replace(void **state)
{
    (void)state;
    char out[400];
    snprintf(out, sizeof out, "%s/min2", root);
    const char *dirs[] = {captions};
    build(dirs, 1, 2, out);
    vkl_clip_tokenizer *t = load(out);
    assert_int_equal(vkl_clip_vocab_size(t), 5);
    IDS(t, "red apple heart", 4, 3, UNK);
    vkl_clip_tokenizer_free(t);

    vkl_word_build_opts o;
    vkl_word_build_opts_default(&o);
    vkl_err e = {{0}};
    assert_int_equal(vkl_word_tokenizer_build(dirs, 1, &o, out, NULL, &e), -1); /* exists */
    assert_non_null(strstr(e.msg, out));
    assert_non_null(strstr(e.msg, "--force"));
    o.force = 1;
    o.max_length = 64;
    assert_int_equal(vkl_word_tokenizer_build(dirs, 1, &o, out, NULL, &e), 0);
    cJSON *j = read_json(out, "tokenizer_config.json");
    assert_int_equal(get(j, "model_max_length")->valueint, 64);
    cJSON_Delete(j);
    t = load(out);
    assert_int_equal(vkl_clip_vocab_size(t), N_WANT);
    vkl_clip_tokenizer_free(t);

    char empty[400];
    snprintf(empty, sizeof empty, "%s/empty", root);
    make_dir(empty);
    const char *none[] = {empty};
    assert_int_equal(vkl_word_tokenizer_build(none, 1, &o, out, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "no *.txt caption files"));
    t = load(out); /* a failed build leaves the old folder alone */
    vkl_clip_tokenizer_free(t);
}

/* ---- reading files written elsewhere ------------------------------------ */

static const char *bad_dir(void)
{
    static char d[400];
    snprintf(d, sizeof d, "%s/bad", root);
    mkdir(d, 0755);
    return d;
}

static void expect_error(const char *json, const char *phrase)
{
    const char *d = bad_dir();
    write_file(d, "tokenizer.json", json);
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {{0}};
    if (vkl_clip_tokenizer_load(&t, d, &e) == 0) fail_msg("loaded %s", json);
    assert_null(t);
    if (!strstr(e.msg, phrase) || !strstr(e.msg, "tokenizer.json"))
        fail_msg("message \"%s\" should name the file and say \"%s\"", e.msg, phrase);
    fprintf(stderr, "ok: %s\n", e.msg);
}

#define PIPE "\"normalizer\":{\"type\":\"Lowercase\"},\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
#define SPECIALS "\"<|startoftext|>\":0,\"<|endoftext|>\":1,\"<|unk|>\":2"
#define WL(vocab, unk) "{" PIPE "\"model\":{\"type\":\"WordLevel\",\"vocab\":{" vocab "},\"unk_token\":\"" unk "\"}}"

static void test_errors(void **state)
{
    (void)state;
    expect_error("{\"model\": {\"type\": \"WordLevel\", \"vocab\": {", "malformed JSON");
    expect_error("[1, 2]", "not a JSON object");
    expect_error("{\"normalizer\": null}", "no \"model\"");
    expect_error("{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
                 "\"BPE\" is not supported");
    expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}", "only with a WordLevel model");
    expect_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[[\"a\",0.0]]}}", "\"Unigram\" is not supported");
    expect_error("{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", "\"WordPiece\" is not supported");
    expect_error("{" PIPE "\"model\":{\"type\":\"WordLevel\",\"unk_token\":\"<|unk|>\"}}", "no \"vocab\"");
    expect_error(WL("", "<|unk|>"), "vocabulary is empty");
    expect_error(WL(SPECIALS ",\"a\":3,\"b\":3", "<|unk|>"), "both have id 3");
    expect_error(WL(SPECIALS ",\"a\":7", "<|unk|>"), "out of range");
    expect_error(WL(SPECIALS ",\"a\":-1", "<|unk|>"), "no valid id");
    expect_error(WL(SPECIALS ",\"a\":3.5", "<|unk|>"), "no valid id");
    expect_error(WL(SPECIALS ",\"a\":\"3\"", "<|unk|>"), "no valid id");
    expect_error(WL(SPECIALS ",\"a\":3,\"a\":4", "<|unk|>"), "appears twice");
    expect_error(WL(SPECIALS, "<unk>"), "unk_token \"<unk>\" is not in the vocabulary");
    expect_error("{" PIPE "\"model\":{\"type\":\"WordLevel\",\"vocab\":{" SPECIALS "}}}", "no \"unk_token\"");
    expect_error("{\"normalizer\":{\"type\":\"NFKC\"},\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
                 "\"model\":{\"type\":\"WordLevel\",\"vocab\":{" SPECIALS "},\"unk_token\":\"<|unk|>\"}}",
                 "normalizer \"NFKC\" is not supported");
    expect_error("{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                 "\"model\":{\"type\":\"WordLevel\",\"vocab\":{" SPECIALS "},\"unk_token\":\"<|unk|>\"}}",
                 "pre_tokenizer \"ByteLevel\" is not supported");
    expect_error("{" PIPE "\"added_tokens\":[{\"id\":1,\"content\":\"a\"}],"
                 "\"model\":{\"type\":\"WordLevel\",\"vocab\":{" SPECIALS ",\"a\":3},\"unk_token\":\"<|unk|>\"}}",
                 "has id 1 but the vocabulary gives it 3");
    expect_error(WL("\"a\":0,\"<unk>\":1", "<unk>"), "no begin-of-text token");
}

/* A file tokenizers could have written for another model: its own special
 * tokens named by the template, no normalizer (case-sensitive), an added
 * token outside the model's vocabulary; loaded by naming the file itself. */
static void test_foreign_file(void **state)
{
    (void)state;
    const char *d = bad_dir();
    write_file(d, "tokenizer.json",
               "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":5,\"content\":\"[MASK]\",\"special\":true}],"
               "\"normalizer\":null,\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
               "\"post_processor\":{\"type\":\"TemplateProcessing\","
               "\"single\":[{\"SpecialToken\":{\"id\":\"[CLS]\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
               "{\"SpecialToken\":{\"id\":\"[SEP]\",\"type_id\":0}}],"
               "\"special_tokens\":{\"[CLS]\":{\"id\":\"[CLS]\",\"ids\":[1],\"tokens\":[\"[CLS]\"]},"
               "\"[SEP]\":{\"id\":\"[SEP]\",\"ids\":[2],\"tokens\":[\"[SEP]\"]}}},"
               "\"model\":{\"type\":\"WordLevel\",\"vocab\":{\"[UNK]\":0,\"[CLS]\":1,\"[SEP]\":2,\"hello\":3,\"world\":4},"
               "\"unk_token\":\"[UNK]\"}}");
    char file[500];
    snprintf(file, sizeof file, "%s/tokenizer.json", d);
    vkl_clip_tokenizer *t = load(file);
    assert_int_equal(vkl_clip_vocab_size(t), 6);
    assert_int_equal(vkl_clip_bos(t), 1);
    assert_int_equal(vkl_clip_eos(t), 2);
    IDS(t, "hello world", 3, 4);
    IDS(t, "Hello [MASK]world", 0, 5, 4);
    vkl_clip_tokenizer_free(t);

    /* Lowercase maps one char at a time (Rust's char::to_lowercase): a final
     * capital sigma is σ, not ς; İ becomes i + U+0307 */
    write_file(d, "tokenizer.json",
               "{\"normalizer\":{\"type\":\"Lowercase\"},\"pre_tokenizer\":{\"type\":\"Whitespace\"},"
               "\"model\":{\"type\":\"WordLevel\",\"vocab\":{" SPECIALS ",\"\u03bf\u03b4\u03bf\u03c3\":3,"
               "\"i\u0307\":4},\"unk_token\":\"<|unk|>\"}}");
    t = load(d);
    IDS(t, "\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xc4\xb0", 3, 4); /* "ΟΔΟΣ İ" */
    vkl_clip_tokenizer_free(t);

    /* no template: BOS/EOS from tokenizer_config.json beside it */
    write_file(d, "tokenizer.json",
               "{\"pre_tokenizer\":{\"type\":\"Whitespace\"},\"model\":{\"type\":\"WordLevel\","
               "\"vocab\":{\"[UNK]\":0,\"[CLS]\":1,\"[SEP]\":2,\"hello\":3},\"unk_token\":\"[UNK]\"}}");
    write_file(d, "tokenizer_config.json", "{\"bos_token\":{\"content\":\"[CLS]\"},\"eos_token\":\"[SEP]\"}");
    t = load(d);
    assert_int_equal(vkl_clip_bos(t), 1);
    assert_int_equal(vkl_clip_eos(t), 2);
    vkl_clip_tokenizer_free(t);
    write_file(d, "tokenizer_config.json", "{\"bos_token\":");
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_tokenizer_load(&t, d, &e), -1);
    assert_non_null(strstr(e.msg, "tokenizer_config.json"));
    char cfg[500];
    snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", d);
    remove(cfg);
}

/* ---- where the SD loader finds it --------------------------------------- */

static void test_model_folder(void **state)
{
    (void)state;
    char model[400], tokdir[500], where[1024];
    snprintf(model, sizeof model, "%s/model", root);
    make_dir(model);
    write_file(model, "model_index.json", "{\"_class_name\": \"StableDiffusionPipeline\"}");
    snprintf(tokdir, sizeof tokdir, "%s/tokenizer", model);
    const char *dirs[] = {captions};
    build(dirs, 1, 1, tokdir);
    vkl_err e = {{0}};
    if (vkl_clip_vocab_resolve(model, where, sizeof where, &e)) fail_msg("%s", e.msg);
    assert_string_equal(where, tokdir);
    vkl_clip_tokenizer *t = load(model);
    IDS(t, "red heart", RED, HEART);
    vkl_clip_tokenizer_free(t);
    setenv("VKLORA_CLIP_VOCAB", model, 1);
    t = load(NULL);
    assert_int_equal(vkl_clip_vocab_size(t), N_WANT);
    vkl_clip_tokenizer_free(t);
    unsetenv("VKLORA_CLIP_VOCAB");

    assert_int_equal(vkl_clip_vocab_resolve(root, where, sizeof where, &e), -1);
    assert_non_null(strstr(e.msg, "tokenizer.json"));
}

/* A CLIP folder that also holds a tokenizer.json still loads as CLIP's BPE. */
static void test_bpe_first(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd/tokenizer");
    char dir[400];
    snprintf(dir, sizeof dir, "%s/both", root);
    vkl_err e = {{0}};
    if (vkl_dir_copy(vkl_test_shared_path("refkit/sd/tiny-sd/tokenizer"), dir, NULL, NULL, &e)) fail_msg("%s", e.msg);
    char *tj = vkl_test_slurp(built, "tokenizer.json");
    assert_non_null(tj);
    write_file(dir, "tokenizer.json", tj);
    free(tj);
    vkl_clip_tokenizer *t = load(dir);
    assert_int_equal(vkl_clip_vocab_size(t), 49408);
    assert_int_equal(vkl_clip_bos(t), 49406);
    vkl_clip_tokenizer_free(t);
}

static int not_tokenizer(const char *rel, void *user)
{
    (void)user;
    return strncmp(rel, "tokenizer/", 10) == 0;
}

/* The tiny SD model with its CLIP vocabulary swapped for a word tokenizer:
 * vkl_sd_model_load finds tokenizer/tokenizer.json and a weighted prompt
 * runs through the text encoder. */
static void test_sd_model_load(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char model[400], tokdir[500];
    snprintf(model, sizeof model, "%s/tiny-word", root);
    vkl_err e = {{0}};
    if (vkl_dir_copy(vkl_test_shared_path("refkit/sd/tiny-sd"), model, not_tokenizer, NULL, &e)) fail_msg("%s", e.msg);
    snprintf(tokdir, sizeof tokdir, "%s/tokenizer", model);
    vkl_test_rmtree(tokdir);
    const char *dirs[] = {captions};
    build(dirs, 1, 1, tokdir);
    vkl_ctx *ctx = vkl_test_ctx(NULL);
    vkl_sd_model *m = NULL;
    if (vkl_sd_model_load(ctx, model, NULL, &m, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_clip_vocab_size(m->tok), N_WANT);
    float *z;
    int chunks;
    if (vkl_sd_encode_prompt(m, "(red:1.2) heart", 1, 0, 1, &z, &chunks, &e)) fail_msg("%s", e.msg);
    assert_int_equal(chunks, 1);
    size_t n = (size_t)VKL_CLIP_CONTEXT * (size_t)m->cfg->te[0].hidden;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(z[i])) fail_msg("embedding %zu is not finite", i);
    free(z);
    vkl_sd_model_free(m);
    vkl_test_ctx_done(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_json),
        cmocka_unit_test(test_encode),
        cmocka_unit_test(test_word_class),
        cmocka_unit_test(test_padded),
        cmocka_unit_test(test_prompt_weighting),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_min_count_and_replace),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_foreign_file),
        cmocka_unit_test(test_model_folder),
        cmocka_unit_test(test_bpe_first),
        cmocka_unit_test(test_sd_model_load),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
