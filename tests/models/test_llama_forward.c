/* LLaMA forward on the refkit's tiny-llama: logits of the 7- and 33-token
 * sequences, and every per-layer intermediate of the 33-token run, against
 * transformers' values (README tolerances: logits 1e-4, hidden states 1e-5,
 * attention probabilities 1e-6). Also the model loader's errors. */
#include "llama_check.h"

#define MAX_TAPS 128

typedef struct taps {
    int n;
    int layer[MAX_TAPS];
    char name[MAX_TAPS][32];
    vkl_tensor *t[MAX_TAPS];
    vkl_graph *g;
} taps;

static void keep_tap(void *user, int layer, const char *name, vkl_tensor *t)
{
    taps *k = user;
    if (k->n >= MAX_TAPS) return;
    vkl_graph_keep(k->g, t);
    k->layer[k->n] = layer;
    snprintf(k->name[k->n], sizeof k->name[k->n], "%s", name);
    k->t[k->n++] = t;
}

static void check_logits(vkl_ctx *c, vkl_llama *m, int L)
{
    const char *rel = LM_DIR "/vectors/logits.safetensors";
    char key[32];
    snprintf(key, sizeof key, "input_ids_%d", L);
    int64_t n = 0;
    int32_t *ids = lm_ref_ids(rel, key, &n);
    assert_int_equal(n, L);
    vkl_tensor *tid = lm_ids(c, ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1};
    vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, logits);
    lm_plan(g);
    lm_run(g);
    float *got = lm_download(c, logits);
    snprintf(key, sizeof key, "logits_%d", L);
    float *want = vkl_test_ref_f32(rel, key, &n);
    assert_int_equal(n, (int64_t)L * m->cfg.vocab);
    lm_expect(key, got, want, (size_t)n, 1e-4);
    free(got);
    free(want);
    free(ids);
    vkl_graph_free(g);
    vkl_tensor_free(tid);
    vkl_tensor_free(mask);
}

static void test_logits(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    assert_int_equal(m->cfg.heads, 4);
    assert_int_equal(m->cfg.kv_heads, 2);
    assert_int_equal(m->cfg.head_dim, 16);
    check_logits(c, m, 7);
    check_logits(c, m, 33);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

static void test_hidden_states(void **state)
{
    (void)state;
    const char *rel = LM_DIR "/vectors/hidden_states.safetensors";
    VKL_REQUIRE_SHARED(rel);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    int64_t n = 0;
    int32_t *ids = lm_ref_ids(rel, "input_ids", &n);
    int L = (int)n;
    vkl_tensor *tid = lm_ids(c, ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    taps k = {.g = g};
    vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1, .tap = keep_tap, .tap_user = &k};
    vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, logits);
    lm_plan(g);
    lm_run(g);
    int checked = 0;
    for (int i = 0; i < k.n; i++) {
        char key[64];
        if (k.layer[i] < 0) snprintf(key, sizeof key, "%s", k.name[i]);
        else snprintf(key, sizeof key, "layers.%d.%s", k.layer[i], k.name[i]);
        float *want = vkl_test_ref_f32(rel, key, &n);
        assert_int_equal(n, vkl_tensor_nelem(k.t[i]));
        float *got = lm_download(c, k.t[i]);
        lm_expect(key, got, want, (size_t)n, strstr(key, "attn_probs") ? 1e-6 : 1e-5);
        free(got);
        free(want);
        checked++;
    }
    /* 16 per layer (all of the reference's) + embedding + final norm */
    assert_int_equal(checked, 16 * m->cfg.layers + 2);
    float *got = lm_download(c, logits), *want = vkl_test_ref_f32(rel, "logits", &n);
    lm_expect("logits", got, want, (size_t)n, 1e-4);
    free(got);
    free(want);
    free(ids);
    vkl_graph_free(g);
    vkl_tensor_free(tid);
    vkl_tensor_free(mask);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

/* Loader errors name the file and the problem: missing config, missing weight
 * (a config that promises more layers than the file has). */
static void test_load_errors(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_llama *m = NULL;
    const char *tmp = vkl_test_tmpdir();
    assert_int_equal(vkl_llama_load(c, tmp, VKL_F32, &m, &e), -1);
    assert_non_null(strstr(e.msg, "config.json"));
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"hidden_size\": 64, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, \"num_key_value_heads\": 2,"
          " \"intermediate_size\": 172, \"vocab_size\": 1000, \"rms_norm_eps\": 1e-5}", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    assert_int_equal(symlink(vkl_test_shared_path(LM_DIR "/tiny-llama/model.safetensors"), path), 0);
    assert_int_equal(vkl_llama_load(c, tmp, VKL_F32, &m, &e), -1);
    printf("  error: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "model.layers.3.input_layernorm.weight"));
    snprintf(path, sizeof path, "%s/config.json", tmp);
    f = fopen(path, "w");
    fputs("{\"hidden_size\": 64, \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 3,"
          " \"intermediate_size\": 172, \"vocab_size\": 1000}", f);
    fclose(f);
    assert_int_equal(vkl_llama_load(c, tmp, VKL_F32, &m, &e), -1);
    printf("  error: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "num_key_value_heads"));
    assert_null(m);
    vkl_test_rmtree(tmp);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_logits),
        cmocka_unit_test(test_hidden_states),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
