/* Greedy generation with the KV cache: tiny-llama against transformers'
 * generate() (new ids exact, the logits of every step within 1e-4), and the
 * trained llama2.c stories260K model (HF layout) against run.c's greedy
 * output: the llama2.c tokenizer's prompt encoding, every id, the logits of
 * the first 64 positions, and the printed text byte for byte. */
#include "llama_check.h"
#include "llama/llama_generate.h"
#include "tokenizer/llama2c_tokenizer.h"

static void test_tiny_generate(void **state)
{
    (void)state;
    const char *rel = LM_DIR "/vectors/generation.safetensors";
    VKL_REQUIRE_SHARED(rel);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    int64_t np = 0, nn = 0, nl = 0;
    int32_t *prompt = lm_ref_ids(rel, "prompt_ids", &np), *want = lm_ref_ids(rel, "new_ids", &nn);
    float *want_logits = vkl_test_ref_f32(rel, "step_logits", &nl);
    float *got_logits = malloc(sizeof(float) * (size_t)nl);
    int32_t out[32];
    int n = 0;
    vkl_err e = {{0}};
    vkl_llama_gen_opts o = {.max_new = (int)nn, .stop_id = -1, .step_logits = got_logits};
    if (vkl_llama_generate(m, prompt, (int)np, &o, out, &n, &e)) {
        print_error("generate: %s\n", e.msg);
        fail();
    }
    assert_int_equal(n, nn);
    for (int i = 0; i < n; i++) assert_int_equal(out[i], want[i]);
    lm_expect("step_logits (KV cache)", got_logits, want_logits, (size_t)nl, 1e-4);
    free(prompt);
    free(want);
    free(want_logits);
    free(got_logits);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

static char *read_text(const char *rel)
{
    FILE *f = fopen(vkl_test_shared_path(rel), "rb");
    assert_non_null(f);
    char *s = calloc(1, 1 << 16);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

/* run: "prompt" or "noprompt". */
static void stories(const char *run, const char *text, int steps, const char *txt)
{
    const char *rel = "refkit/lm/stories260K/reference.safetensors";
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, "refkit/lm/stories260K/hf", VKL_F32);
    vkl_err e = {{0}};
    vkl_l2c_tok *tok = NULL;
    if (vkl_l2c_tok_load(vkl_test_shared_path("refkit/lm/stories260K/tok512.bin"), m->cfg.vocab, &tok, &e)) {
        print_error("tokenizer: %s\n", e.msg);
        fail();
    }
    int32_t *ids = NULL;
    int np = 0;
    assert_int_equal(vkl_l2c_tok_encode(tok, text, 1, -1, &ids, &np, &e), 0);
    char key[64];
    snprintf(key, sizeof key, "%s.prompt_ids", run);
    int64_t n = 0;
    int32_t *want_prompt = lm_ref_ids(rel, key, &n);
    assert_int_equal(np, n);
    for (int i = 0; i < np; i++) assert_int_equal(ids[i], want_prompt[i]);
    snprintf(key, sizeof key, "%s.ids", run);
    int32_t *want = lm_ref_ids(rel, key, &n);
    int V = m->cfg.vocab, max_new = steps - np + 1;
    int32_t *out = malloc(sizeof(int32_t) * (size_t)max_new);
    float *lg = malloc(sizeof(float) * (size_t)max_new * V);
    int got = 0;
    vkl_llama_gen_opts o = {.max_new = max_new, .max_len = steps, .stop_id = 1, .step_logits = lg};
    if (vkl_llama_generate(m, ids, np, &o, out, &got, &e)) {
        print_error("generate: %s\n", e.msg);
        fail();
    }
    assert_int_equal(np + got, n);
    for (int i = 0; i < got; i++) assert_int_equal(out[i], want[np + i]);
    /* step i's logits are those of position np - 1 + i */
    snprintf(key, sizeof key, "%s.logits_first64", run);
    float *wl = vkl_test_ref_f32(rel, key, &n);
    int rows = 64 - (np - 1);
    lm_expect(key, lg, wl + (size_t)(np - 1) * V, (size_t)rows * V, 1e-4);
    /* the text run.c printed */
    char *s = calloc(1, 1 << 16), piece[64];
    size_t len = 0;
    for (int i = 1; i < np + got; i++) {
        int id = i < np ? ids[i] : out[i - np], prev = i - 1 < np ? ids[i - 1] : out[i - 1 - np];
        len += (size_t)vkl_l2c_tok_decode(tok, prev, id, piece, sizeof piece);
        strcat(s, piece);
    }
    strcat(s, "\n");
    char *expect = read_text(txt);
    assert_string_equal(s, expect);
    printf("  %s: %d ids and %zu bytes of text as run.c\n", run, np + got, strlen(s));
    free(s);
    free(expect);
    free(wl);
    free(lg);
    free(out);
    free(want);
    free(want_prompt);
    free(ids);
    vkl_l2c_tok_free(tok);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

static void test_stories_prompt(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/hf/model.safetensors");
    stories("prompt", "Once upon a time", 64, "refkit/lm/stories260K/runc_greedy_prompt.txt");
}

static void test_stories_noprompt(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/hf/model.safetensors");
    stories("noprompt", "", 256, "refkit/lm/stories260K/runc_greedy_noprompt.txt");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_generate),
        cmocka_unit_test(test_stories_prompt),
        cmocka_unit_test(test_stories_noprompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
