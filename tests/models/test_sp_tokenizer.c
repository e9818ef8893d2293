/* SentencePiece BPE tokenizer on tiny-llama's tokenizer.model against
 * sentencepiece 0.1.97 (refkit/lm/tokenizer_vectors.json, tokenizer_pieces.json):
 * every piece's text, score and type; sp_ids of all 44 strings exactly;
 * LlamaTokenizer's ids ([BOS] + sp_ids) for the 43 strings without literal
 * special-token text; decode of every string; damaged models refused. */
#include "vkl_test.h"
#include "tokenizer/sp_bpe.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static cJSON *read_json(const char *rel)
{
    FILE *f = fopen(vkl_test_shared_path(rel), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    cJSON *j = cJSON_Parse(s);
    free(s);
    assert_non_null(j);
    return j;
}

static vkl_sp *load(void)
{
    vkl_err e = {{0}};
    vkl_sp *s = NULL;
    if (vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &s, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    return s;
}

static void test_pieces(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tokenizer_pieces.json");
    vkl_sp *s = load();
    cJSON *j = read_json("refkit/lm/tokenizer_pieces.json");
    const cJSON *ps = cJSON_GetObjectItem(j, "pieces");
    assert_int_equal(cJSON_GetArraySize(ps), vkl_sp_size(s));
    static const char *types[] = {"", "NORMAL", "UNKNOWN", "CONTROL", "USER_DEFINED", "UNUSED", "BYTE"};
    const cJSON *p;
    cJSON_ArrayForEach(p, ps)
    {
        int id = cJSON_GetObjectItem(p, "id")->valueint;
        assert_string_equal(vkl_sp_piece(s, id), cJSON_GetObjectItem(p, "piece")->valuestring);
        assert_float_equal(vkl_sp_score(s, id), cJSON_GetObjectItem(p, "score")->valuedouble, 0);
        assert_string_equal(types[vkl_sp_type_of(s, id)], cJSON_GetObjectItem(p, "type")->valuestring);
        assert_int_equal(vkl_sp_find(s, vkl_sp_piece(s, id)), id);
    }
    cJSON_Delete(j);
    vkl_sp_free(s);
}

static void test_strings(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tokenizer_vectors.json");
    vkl_sp *s = load();
    cJSON *j = read_json("refkit/lm/tokenizer_vectors.json");
    const cJSON *c;
    int n_sp = 0, n_hf = 0, n_dec = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "strings"))
    {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int32_t *ids = NULL;
        int n = 0;
        vkl_err e = {{0}};
        assert_int_equal(vkl_sp_encode(s, text, &ids, &n, &e), 0);
        const cJSON *want = cJSON_GetObjectItem(c, "sp_ids");
        int ok = n == cJSON_GetArraySize(want);
        for (int i = 0; ok && i < n; i++) ok = ids[i] == cJSON_GetArrayItem(want, i)->valueint;
        if (!ok) {
            print_error("%s: sp_ids differ (%d ids, want %d)\n", name, n, cJSON_GetArraySize(want));
            fail();
        }
        n_sp++;
        /* LlamaTokenizer: BOS + the same ids, except where the text spells special tokens */
        const cJSON *hf = cJSON_GetObjectItem(c, "hf_ids");
        if (strcmp(name, "special_literal")) {
            assert_int_equal(cJSON_GetArraySize(hf), n + 1);
            assert_int_equal(cJSON_GetArrayItem(hf, 0)->valueint, 1);
            for (int i = 0; i < n; i++) assert_int_equal(cJSON_GetArrayItem(hf, i + 1)->valueint, ids[i]);
            n_hf++;
        }
        char *dec = vkl_sp_decode(s, ids, n);
        assert_string_equal(dec, cJSON_GetObjectItem(c, "sp_decode")->valuestring);
        n_dec++;
        free(dec);
        free(ids);
    }
    printf("  sp_ids %d/44, hf_ids %d/43, decode %d/44\n", n_sp, n_hf, n_dec);
    assert_int_equal(n_sp, 44);
    cJSON_Delete(j);
    vkl_sp_free(s);
}

static void test_damaged(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_sp *s = NULL;
    const uint8_t bad[] = {0x0a, 0x20, 0x0a, 0x01}; /* a piece longer than the data */
    assert_int_equal(vkl_sp_load_memory(bad, sizeof bad, "bad.model", &s, &e), -1);
    printf("  error: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "bad.model"));
    const uint8_t unigram[] = {0x12, 0x02, 0x18, 0x01}; /* trainer_spec.model_type = UNIGRAM */
    assert_int_equal(vkl_sp_load_memory(unigram, sizeof unigram, "uni.model", &s, &e), -1);
    printf("  error: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "BPE"));
    assert_null(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pieces),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_damaged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
