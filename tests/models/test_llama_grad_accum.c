/* Gradient accumulation in LoRA training (tiny-llama with the refkit's
 * PEFT LoRA, whose A and B are both non-zero): two micro-batches of one row
 * give the Adam first moment (a multiple of the gradient) and the
 * parameters of one step on the batch of both rows, which have the same
 * number of labelled tokens, so the batch mean is the mean of the two
 * row means. */
#include "llama_check.h"
#include "llama/llama_train.h"

#include <stdlib.h>

enum { L = 16 };

typedef struct run {
    vkl_lora l;
    vkl_lora_set *set;
    vkl_llama_train *s;
} run;

static void start(vkl_ctx *c, const vkl_llama *m, int B, int accum, run *r)
{
    vkl_err e = {{0}};
    if (vkl_lora_load(vkl_test_shared_path(LM_DIR "/tiny-llama-lora/adapter_model.safetensors"), NULL, &r->l, &e))
        fail_msg("%s", e.msg);
    vkl_lora_use use = {&r->l, 1.0f, 1.0f};
    if (vkl_lora_set_build(c, &use, 1, &r->set, &e)) fail_msg("%s", e.msg);
    vkl_llama_train_opts o = {.loraplus_ratio = 1, .grad_accum = accum};
    vkl_adamw_opts_default(&o.adam);
    o.adam.lr = 1e-3f;
    o.adam.weight_decay = 0;
    if (vkl_llama_train_new(m, r->set, NULL, B, L, &o, &r->s, &e)) fail_msg("%s", e.msg);
}

static void stop(run *r)
{
    vkl_llama_train_free(r->s);
    vkl_lora_set_free(r->set);
    vkl_lora_free(&r->l);
}

static void accumulate_equals_batch(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama-lora/adapter_model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    int32_t ids[2 * L];
    for (int i = 0; i < 2 * L; i++) ids[i] = i % L == 0 ? 1 : 3 + (i * 37) % 990;
    vkl_err e = {{0}};
    run a = {0}, b = {0};
    start(c, m, 2, 1, &a);
    float la = 0, l0 = 0, l1 = 0;
    if (vkl_llama_train_step(a.s, ids, ids, NULL, 1, 1e-3f, &la, &e)) fail_msg("%s", e.msg);
    start(c, m, 1, 2, &b);
    /* each row holds half the batch's predicted tokens: weight 1/2 each */
    if (vkl_llama_train_accumulate(b.s, ids, ids, NULL, 0.5f, &l0, &e) ||
        vkl_llama_train_accumulate(b.s, ids + L, ids + L, NULL, 0.5f, &l1, &e) || vkl_llama_train_update(b.s, 1, 1e-3f, &e))
        fail_msg("%s", e.msg);
    printf("  batch loss %.6f, micro-batch losses %.6f %.6f (mean %.6f)\n", la, l0, l1, (l0 + l1) / 2);
    assert_float_equal(la, (l0 + l1) / 2, 1e-5);
    int n = vkl_llama_train_count(a.s);
    assert_int_equal(n, vkl_llama_train_count(b.s));
    for (int i = 0; i < n; i++) {
        vkl_tensor *ma = vkl_adamw_m(vkl_llama_train_optimizer(a.s), i), *mb = vkl_adamw_m(vkl_llama_train_optimizer(b.s), i);
        float *fa = lm_download(c, ma), *fb = lm_download(c, mb);
        size_t k = (size_t)vkl_tensor_nelem(ma);
        double mx = 0;
        for (size_t j = 0; j < k; j++) mx = fmax(mx, fabs(fa[j]));
        assert_true(mx > 0);
        lm_expect(vkl_llama_train_key(a.s, i), fb, fa, k, 1e-4 * mx);
        free(fa);
        free(fb);
        fa = lm_download(c, vkl_llama_train_param(a.s, i));
        fb = lm_download(c, vkl_llama_train_param(b.s, i));
        /* one Adam step moves each parameter by about lr: where the gradient
         * is not tiny both runs moved it the same way */
        int same = 0;
        for (size_t j = 0; j < k; j++) same += fabs(fa[j] - fb[j]) < 1e-5;
        assert_true(same >= (int)(0.99 * k));
        free(fa);
        free(fb);
    }
    stop(&a);
    stop(&b);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(accumulate_equals_batch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
