/* Pad tokens of CLIP tokenizers against transformers' CLIPTokenizer
 * (refkit/sdxl/vectors/tokenizer.safetensors): SDXL's tokenizer pads with
 * <|endoftext|>, its tokenizer_2 with "!" (id 0) and splits every literal "!"
 * out as that special token. An SD 2.x-style tokenizer folder (the SD 1.x
 * vocabulary with pad_token "!" in its config) must give tokenizer_2's ids. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "vkl_test.h"
#include "tokenizer/clip_tokenizer.h"

#define KIT "refkit/sdxl/"
#define IDS KIT "vectors/tokenizer.safetensors"
#define PROMPTS KIT "vectors/tokenizer_prompts.json"
#define TOK1 KIT "tiny-sdxl/tokenizer"
#define TOK2 KIT "tiny-sdxl/tokenizer_2"
#define N_PROMPTS 40

static vkl_clip_tokenizer *load(const char *path)
{
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {{0}};
    if (vkl_clip_tokenizer_load(&t, path, &e)) fail_msg("loading %s: %s", path, e.msg);
    return t;
}

static char **read_prompts(void)
{
    char *text = vkl_test_slurp(vkl_test_shared(), PROMPTS);
    assert_non_null(text);
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *arr = cJSON_GetObjectItem(j, "prompts");
    assert_int_equal(cJSON_GetArraySize(arr), N_PROMPTS);
    char **p = calloc(N_PROMPTS, sizeof *p);
    for (int i = 0; i < N_PROMPTS; i++) p[i] = strdup(cJSON_GetArrayItem(arr, i)->valuestring);
    cJSON_Delete(j);
    return p;
}

static void free_prompts(char **p)
{
    for (int i = 0; i < N_PROMPTS; i++) free(p[i]);
    free(p);
}

/* Every padded row of t equals the reference tensor `name`; returns how many
 * rows hold a pad id that differs from EOS (so the test shows it saw some). */
static int check_rows(vkl_clip_tokenizer *t, const char *name, const char *label)
{
    int64_t n;
    int32_t *want = vkl_test_ref_i32(IDS, name, &n);
    assert_int_equal(n, N_PROMPTS * VKL_CLIP_CONTEXT);
    char **prompts = read_prompts();
    int padded = 0;
    for (int i = 0; i < N_PROMPTS; i++) {
        int32_t row[VKL_CLIP_CONTEXT];
        vkl_err e = {{0}};
        if (vkl_clip_encode_padded(t, prompts[i], 0, row, NULL, &e)) fail_msg("%s prompt %d: %s", label, i, e.msg);
        for (int k = 0; k < VKL_CLIP_CONTEXT; k++)
            if (row[k] != want[i * VKL_CLIP_CONTEXT + k])
                fail_msg("%s prompt %d (\"%.40s\") position %d: %d, want %d", label, i, prompts[i], k, row[k],
                         want[i * VKL_CLIP_CONTEXT + k]);
        padded += row[VKL_CLIP_CONTEXT - 1] != vkl_clip_eos(t);
    }
    free(want);
    free_prompts(prompts);
    return padded;
}

static void test_sdxl_tokenizers(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IDS);
    VKL_REQUIRE_SHARED(TOK2 "/vocab.json");
    vkl_clip_tokenizer *t1 = load(vkl_test_shared_path(TOK1));
    assert_int_equal(vkl_clip_pad(t1), 49407);
    assert_int_equal(check_rows(t1, "input_ids", "tokenizer"), 0);
    vkl_clip_tokenizer_free(t1);
    vkl_clip_tokenizer *t2 = load(vkl_test_shared_path(TOK2));
    assert_int_equal(vkl_clip_pad(t2), 0);
    assert_true(check_rows(t2, "input_ids_2", "tokenizer_2") > 30);
    /* "world!" -> world</w>, "!" (the special token), not "!</w>" */
    int32_t *ids;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_encode(t2, "world!!", 7, 0, &ids, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 1002);
    assert_int_equal(ids[1], 0);
    assert_int_equal(ids[2], 0);
    free(ids);
    /* EOS padding restored on request: "!" is BPE-encoded again */
    assert_int_equal(vkl_clip_set_pad(t2, NULL, &e), 0);
    assert_int_equal(vkl_clip_pad(t2), 49407);
    assert_int_equal(vkl_clip_encode(t2, "world!!", 7, 0, &ids, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(ids[1], 748); /* "!!</w>" */
    free(ids);
    vkl_clip_tokenizer_free(t2);
}

static void copy_file(const char *from, const char *to)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* An SD 2.x-style tokenizer folder: the SD 1.x vocabulary and merges with a
 * legacy tokenizer_config.json (no added_tokens_decoder) that pads with "!". */
static void make_sd2_folder(char *dir, size_t cap, const char *config, const char *special_map)
{
    if (*dir) vkl_test_rmtree(dir); /* the previous one */
    snprintf(dir, cap, "%s", vkl_test_tmpdir());
    char p[4096];
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    copy_file(vkl_test_shared_path("refkit/sd/tiny-sd/tokenizer/vocab.json"), p);
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    copy_file(vkl_test_shared_path("refkit/sd/tiny-sd/tokenizer/merges.txt"), p);
    if (config) write_text(dir, "tokenizer_config.json", config);
    if (special_map) write_text(dir, "special_tokens_map.json", special_map);
}

static void test_sd2_style_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IDS);
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd/tokenizer/vocab.json");
    char dir[4096] = "";
    make_sd2_folder(dir, sizeof dir,
                    "{\"bos_token\": {\"content\": \"<|startoftext|>\", \"__type\": \"AddedToken\"},"
                    " \"eos_token\": \"<|endoftext|>\", \"pad_token\": \"!\", \"model_max_length\": 77}",
                    NULL);
    vkl_clip_tokenizer *t = load(dir);
    assert_int_equal(vkl_clip_pad(t), 0);
    assert_true(check_rows(t, "input_ids_2", "SD 2.x-style") > 30);
    vkl_clip_tokenizer_free(t);
    /* special_tokens_map.json overrides tokenizer_config.json, as in transformers */
    make_sd2_folder(dir, sizeof dir, "{\"pad_token\": \"<|endoftext|>\"}",
                    "{\"pad_token\": {\"content\": \"!\", \"lstrip\": false}}");
    t = load(dir);
    assert_int_equal(vkl_clip_pad(t), 0);
    vkl_clip_tokenizer_free(t);
    make_sd2_folder(dir, sizeof dir, "{\"pad_token\": \"!\"}", "{\"pad_token\": \"<|endoftext|>\"}");
    t = load(dir);
    assert_int_equal(vkl_clip_pad(t), 49407);
    assert_int_equal(check_rows(t, "input_ids", "EOS-padded"), 0);
    vkl_clip_tokenizer_free(t);
    /* a pad token the vocabulary lacks, or of the wrong type, is named */
    make_sd2_folder(dir, sizeof dir, "{\"pad_token\": \"<pad>\"}", NULL);
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_tokenizer_load(&t, dir, &e), -1);
    assert_non_null(strstr(e.msg, "<pad>"));
    make_sd2_folder(dir, sizeof dir, "{\"pad_token\": 7}", NULL);
    assert_int_equal(vkl_clip_tokenizer_load(&t, dir, &e), -1);
    assert_non_null(strstr(e.msg, "pad_token"));
    vkl_test_rmtree(dir);
}

/* A vocabulary without a config (openai's bpe file, as for a single-file
 * checkpoint) with the pad set by the caller, and A1111-style prompt rows:
 * BOS, ids, EOS, then the pad id. */
static void test_set_pad_and_prompt_rows(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IDS);
    VKL_REQUIRE_SHARED("data/clip-bpe/bpe_simple_vocab_16e6.txt.gz");
    vkl_clip_tokenizer *t = load(vkl_test_shared_path("data/clip-bpe/bpe_simple_vocab_16e6.txt.gz"));
    assert_int_equal(vkl_clip_pad(t), 49407);
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_set_pad(t, "!", &e), 0);
    assert_true(check_rows(t, "input_ids_2", "bpe file + pad !") > 30);
    assert_int_equal(vkl_clip_set_pad(t, "<nope>", &e), -1);
    assert_non_null(strstr(e.msg, "<nope>"));
    assert_int_equal(vkl_clip_set_pad(t, "!", &e), 0);

    int64_t n;
    int32_t *want = vkl_test_ref_i32(IDS, "input_ids_2", &n);
    int32_t *len = vkl_test_ref_i32(IDS, "untruncated_length_2", &n);
    char **prompts = read_prompts();
    vkl_prompt_opts plain = {0, 1, 0};
    int checked = 0;
    for (int i = 0; i < N_PROMPTS; i++) {
        if (len[i] > VKL_CLIP_CHUNK) continue; /* longer prompts are cut the A1111 way, not truncated */
        vkl_prompt_tokens p;
        if (vkl_clip_encode_prompt(t, prompts[i], &plain, &p, &e)) fail_msg("prompt %d: %s", i, e.msg);
        assert_int_equal(p.n_chunks, 1);
        for (int k = 0; k < VKL_CLIP_CONTEXT; k++)
            if (p.ids[k] != want[i * VKL_CLIP_CONTEXT + k])
                fail_msg("prompt rows %d position %d: %d, want %d", i, k, p.ids[k], want[i * VKL_CLIP_CONTEXT + k]);
        vkl_prompt_tokens_free(&p);
        checked++;
    }
    assert_true(checked > 30);
    /* a 100-id prompt: two rows, the second BOS, 25 ids, EOS, 50 pads */
    char longp[1024] = "";
    for (int i = 0; i < 100; i++) strcat(longp, "cat ");
    vkl_prompt_tokens p;
    assert_int_equal(vkl_clip_encode_prompt(t, longp, &plain, &p, &e), 0);
    assert_int_equal(p.n_chunks, 2);
    assert_int_equal(p.ids[VKL_CLIP_CONTEXT - 1], 49407);
    const int32_t *r = p.ids + VKL_CLIP_CONTEXT;
    assert_int_equal(r[0], 49406);
    assert_int_equal(r[25], r[1]);
    assert_int_equal(r[26], 49407);
    for (int k = 27; k < VKL_CLIP_CONTEXT; k++) assert_int_equal(r[k], 0);
    vkl_prompt_tokens_free(&p);
    free(want);
    free(len);
    free_prompts(prompts);
    vkl_clip_tokenizer_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sdxl_tokenizers),
        cmocka_unit_test(test_sd2_style_folder),
        cmocka_unit_test(test_set_pad_and_prompt_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
