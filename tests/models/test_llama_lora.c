/* tiny-llama with PEFT adapters against transformers + peft
 * (refkit/lm/vectors/lora_logits.safetensors): LoRA, rsLoRA, the r=4 q/v
 * adapter, the rank-concatenated 'cat' adapter and DoRA, run-time (unmerged)
 * and merged into the weights, on the 7- and 33-token sequences (logits
 * within 1e-4). */
#include "llama_check.h"

static const char *REL = LM_DIR "/vectors/lora_logits.safetensors";

static void load_adapter(const char *dir, vkl_lora *l)
{
    char rel[256];
    snprintf(rel, sizeof rel, LM_DIR "/%s/adapter_model.safetensors", dir);
    vkl_err e = {{0}};
    if (vkl_lora_load(vkl_test_shared_path(rel), NULL, l, &e)) {
        print_error("adapter %s: %s\n", dir, e.msg);
        fail();
    }
}

static void check(vkl_ctx *c, vkl_llama *m, const vkl_lora_set *set, const vkl_llama_dora *d, const char *what)
{
    for (int k = 0; k < 2; k++) {
        int L = k ? 33 : 7;
        char key[64];
        snprintf(key, sizeof key, "input_ids_%d", L);
        int64_t n = 0;
        int32_t *ids = lm_ref_ids(REL, key, &n);
        vkl_tensor *tid = lm_ids(c, ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
        vkl_graph *g = vkl_graph_new(c);
        if (d) vkl_llama_dora_norms(g, m, d);
        vkl_llama_fwd o = {.lora = set, .dora = d, .mask = mask, .explicit_attn = 1};
        vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
        vkl_graph_keep(g, logits);
        lm_plan(g);
        lm_run(g);
        float *got = lm_download(c, logits);
        snprintf(key, sizeof key, "%s_logits_%d", what, L);
        float *want = vkl_test_ref_f32(REL, key, &n);
        lm_expect(key, got, want, (size_t)n, 1e-4);
        free(got);
        free(want);
        free(ids);
        vkl_graph_free(g);
        vkl_tensor_free(tid);
        vkl_tensor_free(mask);
    }
}

static void test_unmerged(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(REL);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    check(c, m, NULL, NULL, "base");
    static const struct { const char *dir, *what; } cases[] = {
        {"tiny-llama-lora", "lora"}, {"tiny-llama-lora-rslora", "rslora"},
        {"tiny-llama-lora-qv-r4", "second"}, {"tiny-llama-lora-cat", "cat"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        vkl_lora l;
        load_adapter(cases[i].dir, &l);
        vkl_lora_use use = {&l, 1.0f, 1.0f};
        vkl_lora_set *set = NULL;
        vkl_err e = {{0}};
        assert_int_equal(vkl_lora_set_build(c, &use, 1, &set, &e), 0);
        check(c, m, set, NULL, cases[i].what);
        vkl_lora_set_free(set);
        vkl_lora_free(&l);
    }
    vkl_lora l;
    load_adapter("tiny-llama-dora", &l);
    vkl_llama_dora *d = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_llama_dora_build(m, &l, 1.0f, &d, &e), 0);
    check(c, m, NULL, d, "dora");
    vkl_llama_dora_free(d);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

static void test_merged(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(REL);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    vkl_err e = {{0}};
    vkl_lora l;
    load_adapter("tiny-llama-lora", &l);
    vkl_lora_use use = {&l, 1.0f, 1.0f};
    vkl_lora_set *set = NULL;
    assert_int_equal(vkl_lora_set_build(c, &use, 1, &set, &e), 0);
    for (int i = 0; i < vkl_lora_set_count(set); i++) {
        const vkl_lora_slot *s = vkl_lora_set_at(set, i);
        char name[160];
        snprintf(name, sizeof name, "%s.weight", s->module);
        const vkl_lora_module *mo = vkl_lora_find(&l, s->module);
        assert_int_equal(vkl_lora_merge(c, vkl_weights_find(m->w, name), s->a_cat, s->b_cat, (float)mo->scale, &e), 0);
    }
    check(c, m, NULL, NULL, "lora_merged");
    vkl_lora_set_free(set);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    /* DoRA merged into a fresh copy of the model */
    m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    load_adapter("tiny-llama-dora", &l);
    vkl_llama_dora *d = NULL;
    assert_int_equal(vkl_llama_dora_build(m, &l, 1.0f, &d, &e), 0);
    if (vkl_llama_dora_merge(m, d, &e)) {
        print_error("dora merge: %s\n", e.msg);
        fail();
    }
    check(c, m, NULL, NULL, "dora_merged");
    vkl_llama_dora_free(d);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unmerged),
        cmocka_unit_test(test_merged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
