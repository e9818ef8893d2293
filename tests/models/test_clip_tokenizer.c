/* CLIP tokenizer against the reference ids of transformers' CLIPTokenizer
 * (refkit/sd/vectors/tokenizer_prompts.json) and openai/CLIP's SimpleTokenizer
 * (data/clip-bpe/reference_encodings.tsv), from both vocabulary forms. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>
#include <cjson/cJSON.h>

#include "vkl_test.h"
#include "tokenizer/clip_tokenizer.h"

#define PROMPTS "refkit/sd/vectors/tokenizer_prompts.json"
#define BPE_DIR "data/clip-bpe"
#define BPE_GZ "data/clip-bpe/bpe_simple_vocab_16e6.txt.gz"
#define TINY_TOK "refkit/sd/tiny-sd/tokenizer"
#define TOK_ST "refkit/sd/vectors/tokenizer.safetensors"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static vkl_clip_tokenizer *load(const char *rel)
{
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {{0}};
    double t0 = now_s();
    if (vkl_clip_tokenizer_load(&t, vkl_test_shared_path(rel), &e))
        fail_msg("loading %s: %s", rel, e.msg);
    fprintf(stderr, "loaded %s in %.1f ms\n", rel, (now_s() - t0) * 1e3);
    return t;
}

static cJSON *read_json(const char *rel)
{
    FILE *f = fopen(vkl_test_shared_path(rel), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    assert_non_null(j);
    return j;
}

/* Compares content ids with a reference row that has BOS/EOS around it. */
static int same_ids(const int32_t *got, size_t n, const cJSON *want_row, int with_specials)
{
    int off = with_specials ? 1 : 0;
    int want_n = cJSON_GetArraySize(want_row) - 2 * off;
    if ((int)n != want_n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != cJSON_GetArrayItem(want_row, (int)i + off)->valueint)
            return 0;
    return 1;
}

static void print_row(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "  %s:", what);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Counts prompts whose ids (flags) equal the reference rows `key`. */
static int match_prompts(vkl_clip_tokenizer *t, unsigned flags, const char *key, int verbose)
{
    cJSON *j = read_json(PROMPTS);
    cJSON *prompts = cJSON_GetObjectItem(j, "prompts"), *rows = cJSON_GetObjectItem(j, key);
    assert_int_equal(cJSON_GetArraySize(prompts), 40);
    int ok = 0;
    double t0 = now_s();
    for (int i = 0; i < 40; i++) {
        const char *p = cJSON_GetArrayItem(prompts, i)->valuestring;
        int32_t *ids;
        size_t n;
        vkl_err e = {{0}};
        if (vkl_clip_encode(t, p, strlen(p), flags, &ids, &n, &e))
            fail_msg("prompt %d: %s", i, e.msg);
        if (same_ids(ids, n, cJSON_GetArrayItem(rows, i), 1)) {
            ok++;
        } else if (verbose) {
            fprintf(stderr, "prompt %d differs (%s):\n", i, key);
            print_row("got", ids, n);
        }
        free(ids);
    }
    fprintf(stderr, "%s: %d/40 prompts match, %.1f us per prompt\n", key, ok,
            (now_s() - t0) * 1e6 / 40);
    cJSON_Delete(j);
    return ok;
}

static void test_prompts_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(PROMPTS);
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load(BPE_DIR);
    assert_int_equal(vkl_clip_vocab_size(t), 49408);
    assert_int_equal(vkl_clip_bos(t), 49406);
    assert_int_equal(vkl_clip_eos(t), 49407);
    assert_int_equal(match_prompts(t, 0, "untruncated_ids", 1), 40);
    /* second pass runs from the BPE cache */
    assert_int_equal(match_prompts(t, 0, "untruncated_ids", 1), 40);
    vkl_clip_tokenizer_free(t);
}

static void test_prompts_gz_and_tiny_sd(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(PROMPTS);
    VKL_REQUIRE_SHARED(BPE_GZ);
    VKL_REQUIRE_SHARED(TINY_TOK "/vocab.json");
    vkl_clip_tokenizer *g = load(BPE_GZ), *f = load(BPE_DIR), *s = load(TINY_TOK);
    assert_int_equal(match_prompts(g, 0, "untruncated_ids", 1), 40);
    assert_int_equal(match_prompts(s, 0, "untruncated_ids", 1), 40);
    /* The three forms describe one vocabulary: same string for every id. */
    assert_int_equal(vkl_clip_vocab_size(g), vkl_clip_vocab_size(f));
    assert_int_equal(vkl_clip_vocab_size(s), vkl_clip_vocab_size(f));
    for (int32_t id = 0; id < (int32_t)vkl_clip_vocab_size(f); id++) {
        assert_string_equal(vkl_clip_token_str(g, id), vkl_clip_token_str(f, id));
        assert_string_equal(vkl_clip_token_str(s, id), vkl_clip_token_str(f, id));
        assert_int_equal(vkl_clip_token_id(g, vkl_clip_token_str(f, id)), id);
    }
    assert_null(vkl_clip_token_str(f, 49408));
    assert_null(vkl_clip_token_str(f, -1));
    assert_int_equal(vkl_clip_token_id(f, "photo</w>"), 1125);
    assert_int_equal(vkl_clip_token_id(f, "no such token"), -1);
    vkl_clip_tokenizer_free(g);
    vkl_clip_tokenizer_free(f);
    vkl_clip_tokenizer_free(s);
}

/* The JSON also lists each prompt's BPE token strings. */
static void test_token_strings(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(PROMPTS);
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load(BPE_DIR);
    cJSON *j = read_json(PROMPTS);
    cJSON *prompts = cJSON_GetObjectItem(j, "prompts"), *toks = cJSON_GetObjectItem(j, "tokens");
    for (int i = 0; i < 40; i++) {
        const char *p = cJSON_GetArrayItem(prompts, i)->valuestring;
        int32_t *ids;
        size_t n;
        vkl_err e = {{0}};
        assert_int_equal(vkl_clip_encode(t, p, strlen(p), 0, &ids, &n, &e), 0);
        cJSON *row = cJSON_GetArrayItem(toks, i);
        assert_int_equal((int)n + 2, cJSON_GetArraySize(row));
        for (size_t k = 0; k < n; k++)
            assert_string_equal(vkl_clip_token_str(t, ids[k]), cJSON_GetArrayItem(row, (int)k + 1)->valuestring);
        free(ids);
    }
    cJSON_Delete(j);
    vkl_clip_tokenizer_free(t);
}

/* 77-id rows: BOS, first 75 ids, EOS, EOS padding (the JSON's untruncated
 * rows cut by hand; prompts 35-38 are the 75/76-word and long ones). */
static void test_padded_rows(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(PROMPTS);
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load(BPE_DIR);
    cJSON *j = read_json(PROMPTS);
    cJSON *prompts = cJSON_GetObjectItem(j, "prompts"), *rows = cJSON_GetObjectItem(j, "untruncated_ids");
    int truncated = 0;
    for (int i = 0; i < 40; i++) {
        const char *p = cJSON_GetArrayItem(prompts, i)->valuestring;
        cJSON *row = cJSON_GetArrayItem(rows, i);
        int full = cJSON_GetArraySize(row) - 2;
        int32_t out[VKL_CLIP_CONTEXT], want[VKL_CLIP_CONTEXT];
        int keep = full < 75 ? full : 75;
        want[0] = 49406;
        for (int k = 0; k < keep; k++)
            want[1 + k] = cJSON_GetArrayItem(row, 1 + k)->valueint;
        for (int k = keep + 1; k < VKL_CLIP_CONTEXT; k++)
            want[k] = 49407;
        size_t nc = 0;
        vkl_err e = {{0}};
        assert_int_equal(vkl_clip_encode_padded(t, p, 0, out, &nc, &e), 0);
        assert_int_equal((int)nc, full);
        assert_memory_equal(out, want, sizeof out);
        assert_int_equal(out[76], 49407);
        truncated += full > 75;
    }
    assert_true(truncated >= 2);
    cJSON_Delete(j);
    vkl_clip_tokenizer_free(t);
}

/* Reads one int64 [40, 77] tensor of tokenizer.safetensors. A minimal reader
 * here keeps this test independent of the runtime's safetensors code. */
static void read_ids_tensor(const char *name, int64_t *out)
{
    FILE *f = fopen(vkl_test_shared_path(TOK_ST), "rb");
    assert_non_null(f);
    uint64_t hl;
    assert_int_equal(fread(&hl, 8, 1, f), 1);
    assert_true(hl < (1u << 20));
    char *h = malloc(hl + 1);
    assert_int_equal(fread(h, 1, hl, f), hl);
    h[hl] = 0;
    cJSON *j = cJSON_Parse(h);
    free(h);
    cJSON *t = cJSON_GetObjectItem(j, name);
    assert_non_null(t);
    assert_string_equal(cJSON_GetObjectItem(t, "dtype")->valuestring, "I64");
    cJSON *off = cJSON_GetObjectItem(t, "data_offsets");
    long begin = (long)cJSON_GetArrayItem(off, 0)->valuedouble;
    long end = (long)cJSON_GetArrayItem(off, 1)->valuedouble;
    assert_int_equal(end - begin, 40 * 77 * 8);
    fseek(f, 8 + (long)hl + begin, SEEK_SET);
    assert_int_equal(fread(out, 8, 40 * 77, f), 40 * 77);
    fclose(f);
    cJSON_Delete(j);
}

/* The padded rows against the reference tensors input_ids (default) and
 * input_ids_ftfy (ftfy-like mode). */
static void test_reference_tensor(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(TOK_ST);
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load(BPE_DIR);
    cJSON *j = read_json(PROMPTS);
    cJSON *prompts = cJSON_GetObjectItem(j, "prompts");
    int64_t *want = malloc(40 * 77 * sizeof *want);
    const char *names[2] = {"input_ids", "input_ids_ftfy"};
    for (int mode = 0; mode < 2; mode++) {
        read_ids_tensor(names[mode], want);
        for (int i = 0; i < 40; i++) {
            int32_t row[VKL_CLIP_CONTEXT];
            vkl_err e = {{0}};
            assert_int_equal(vkl_clip_encode_padded(t, cJSON_GetArrayItem(prompts, i)->valuestring,
                                                    mode ? VKL_CLIP_FTFY_LIKE : 0, row, NULL, &e), 0);
            for (int k = 0; k < VKL_CLIP_CONTEXT; k++)
                if (row[k] != want[i * 77 + k])
                    fail_msg("%s prompt %d position %d: %d, want %lld", names[mode], i, k, row[k],
                             (long long)want[i * 77 + k]);
        }
    }
    free(want);
    cJSON_Delete(j);
    vkl_clip_tokenizer_free(t);
}

/* openai/CLIP's own tokenizer output for 10 prompts. */
static void test_openai_reference_tsv(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(BPE_DIR "/reference_encodings.tsv");
    vkl_clip_tokenizer *t = load(BPE_GZ);
    FILE *f = fopen(vkl_test_shared_path(BPE_DIR "/reference_encodings.tsv"), "r");
    assert_non_null(f);
    char line[8192];
    int rows = 0;
    assert_non_null(fgets(line, sizeof line, f)); /* header */
    while (fgets(line, sizeof line, f)) {
        char *tab1 = strchr(line, '\t');
        assert_non_null(tab1);
        *tab1 = 0;
        char *tab2 = strchr(tab1 + 1, '\t');
        if (tab2)
            *tab2 = 0;
        cJSON *q = cJSON_Parse(line); /* the prompt is JSON-quoted */
        assert_true(cJSON_IsString(q));
        int32_t want[256];
        size_t nw = 0;
        for (char *s = tab1 + 1, *end; *s && *s != '\n'; s = end) {
            long v = strtol(s, &end, 10);
            if (end == s)
                break;
            want[nw++] = (int32_t)v;
        }
        int32_t *ids;
        size_t n;
        vkl_err e = {{0}};
        assert_int_equal(vkl_clip_encode(t, q->valuestring, strlen(q->valuestring), 0, &ids, &n, &e), 0);
        assert_int_equal(n, nw);
        assert_memory_equal(ids, want, n * sizeof *ids);
        free(ids);
        cJSON_Delete(q);
        rows++;
    }
    fclose(f);
    assert_int_equal(rows, 10);
    vkl_clip_tokenizer_free(t);
}

/* ftfy-like mode against openai/CLIP (= transformers with ftfy) ids. */
static void test_ftfy_like(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(PROMPTS);
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load(BPE_DIR);
    assert_int_equal(match_prompts(t, VKL_CLIP_FTFY_LIKE, "openai_clip_ids", 1), 40);
    vkl_clip_tokenizer_free(t);
}

/* Exactly known ids from the cleanup rules (checked against the vocabulary). */
static void test_cleanup_rules(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(BPE_DIR "/vocab.json");
    vkl_clip_tokenizer *t = load(BPE_DIR);
    struct { const char *a, *b; unsigned flags; } same[] = {
        {"A Photo", "a photo", 0},
        {"\xce\x9f\xce\x94\xce\x9f\xce\xa3", "\xce\xbf\xce\xb4\xce\xbf\xcf\x82", 0}, /* final sigma */
        {"e\xcc\x81", "\xc3\xa9", 0},                       /* NFC */
        {"a\x01\xe2\x80\x8b" "b", "ab", 0},                  /* control + ZWSP removed */
        {"a\xe3\x80\x80" "b", "a b", 0},                     /* ideographic space */
        {"\xef\xac\x81", "fi", VKL_CLIP_FTFY_LIKE},          /* ligature */
        {"&eacute;&#233;&#xE9;", "\xc3\xa9\xc3\xa9\xc3\xa9", VKL_CLIP_FTFY_LIKE},
        {"<b> &amp;", "<b> &amp;", VKL_CLIP_FTFY_LIKE},      /* '<' turns unescaping off */
        {"a<|endoftext|>b", "a <|endoftext|> b", 0},
    };
    for (size_t i = 0; i < sizeof same / sizeof *same; i++) {
        int32_t *x, *y;
        size_t nx, ny;
        vkl_err e = {{0}};
        assert_int_equal(vkl_clip_encode(t, same[i].a, strlen(same[i].a), same[i].flags, &x, &nx, &e), 0);
        assert_int_equal(vkl_clip_encode(t, same[i].b, strlen(same[i].b), same[i].flags, &y, &ny, &e), 0);
        if (nx != ny || memcmp(x, y, nx * sizeof *x)) {
            print_row(same[i].a, x, nx);
            print_row(same[i].b, y, ny);
            fail_msg("case %zu differs", i);
        }
        free(x);
        free(y);
    }
    /* "<lora:x>" pre-splits as '<', letters, ':', letters, '>' */
    int32_t *ids;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_encode(t, "", 0, 0, &ids, &n, &e), 0);
    assert_int_equal(n, 0);
    free(ids);
    vkl_clip_tokenizer_free(t);
}

static void test_errors(void **state)
{
    (void)state;
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {{0}};
    char out[256];
    unsetenv("VKLORA_CLIP_VOCAB");
    assert_int_equal(vkl_clip_vocab_resolve(NULL, out, sizeof out, &e), -1);
    assert_non_null(strstr(e.msg, "VKLORA_CLIP_VOCAB"));
    assert_int_equal(vkl_clip_tokenizer_load(&t, "/nonexistent/vocab", &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/vocab"));
    assert_null(t);

    const char *dir = vkl_test_tmpdir();
    char p[1024];
    assert_int_equal(vkl_clip_tokenizer_load(&t, dir, &e), -1);
    assert_non_null(strstr(e.msg, "vocab.json"));

    /* not gzip and not a merges list */
    snprintf(p, sizeof p, "%s/bad.txt.gz", dir);
    FILE *f = fopen(p, "wb");
    fputs("\x1f\x8b\x08\x00garbage garbage garbage", f);
    fclose(f);
    assert_int_equal(vkl_clip_tokenizer_load(&t, p, &e), -1);
    assert_non_null(strstr(e.msg, "bad.txt.gz"));

    /* a valid gzip with too few merges */
    snprintf(p, sizeof p, "%s/short.txt.gz", dir);
    gzFile gz = gzopen(p, "wb");
    gzputs(gz, "#version: 0.2\nt h\nth e</w>\n");
    gzclose(gz);
    assert_int_equal(vkl_clip_tokenizer_load(&t, p, &e), -1);
    assert_non_null(strstr(e.msg, "only 2 merges"));

    /* folder with corrupt vocab.json */
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    f = fopen(p, "wb");
    fputs("{\"a\": 0, ", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    f = fopen(p, "wb");
    fputs("#version: 0.2\n", f);
    fclose(f);
    assert_int_equal(vkl_clip_tokenizer_load(&t, dir, &e), -1);
    assert_non_null(strstr(e.msg, "vocab.json"));

    /* env var resolution */
    setenv("VKLORA_CLIP_VOCAB", dir, 1);
    assert_int_equal(vkl_clip_vocab_resolve("", out, sizeof out, &e), 0);
    assert_string_equal(out, dir);
    unsetenv("VKLORA_CLIP_VOCAB");
    vkl_test_rmtree(dir);

    if (!vkl_test_shared_exists(BPE_DIR "/vocab.json"))
        return;
    t = load(BPE_DIR);
    int32_t *ids = NULL;
    size_t n;
    assert_int_equal(vkl_clip_encode(t, "caf\xc3", 4, 0, &ids, &n, &e), -1);
    assert_non_null(strstr(e.msg, "UTF-8"));
    assert_int_equal(vkl_clip_encode(t, "a\xed\xa0\x80", 4, 0, &ids, &n, &e), -1);
    /* a 20000-byte word is refused rather than taking seconds */
    char *big = malloc(20001);
    memset(big, '!', 20000);
    big[20000] = 0;
    assert_int_equal(vkl_clip_encode(t, big, 20000, 0, &ids, &n, &e), -1);
    assert_non_null(strstr(e.msg, "20000 bytes"));
    free(big);
    vkl_clip_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prompts_folder),
        cmocka_unit_test(test_prompts_gz_and_tiny_sd),
        cmocka_unit_test(test_token_strings),
        cmocka_unit_test(test_padded_rows),
        cmocka_unit_test(test_reference_tensor),
        cmocka_unit_test(test_openai_reference_tsv),
        cmocka_unit_test(test_ftfy_like),
        cmocka_unit_test(test_cleanup_rules),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
