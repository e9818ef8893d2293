/* Fresh PEFT-style adapters for tiny-llama (llama_lora_init.h): one module
 * per target projection with lora_A [r, in] in U(-1/sqrt(in), 1/sqrt(in))
 * (PEFT's kaiming_uniform(a=sqrt(5))), lora_B exactly zero, reproducible from
 * the seed; rsLoRA's scale alpha/sqrt(r); DoRA's magnitude the row norms of
 * the model's weight (computed here in double); no matching target fails. */
#include "llama_check.h"
#include "llama/llama_lora_init.h"

#include <stdlib.h>

static vkl_ctx *c_;
static vkl_llama *m_;

static int setup(void **state)
{
    (void)state;
    if (!vkl_test_shared_exists(LM_DIR "/tiny-llama/model.safetensors")) return 0;
    c_ = vkl_test_ctx(NULL);
    m_ = lm_load(c_, LM_DIR "/tiny-llama", VKL_F32);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_llama_free(m_);
    if (c_) vkl_test_ctx_done(c_);
    return 0;
}

static void init(const vkl_llama_lora_opts *o, vkl_lora *l)
{
    vkl_err e = {{0}};
    if (vkl_llama_lora_init(m_, o, l, &e)) fail_msg("%s", e.msg);
}

static void test_lora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama/model.safetensors");
    vkl_llama_lora_opts o = {.rank = 8, .alpha = 16, .seed = 5};
    vkl_lora l, same, other;
    init(&o, &l);
    init(&o, &same);
    o.seed = 6;
    init(&o, &other);
    assert_int_equal(l.n, 6);
    double bound = 1 / sqrt(64.0);
    for (int i = 0; i < l.n; i++) {
        const vkl_lora_module *mo = &l.m[i];
        char want[96];
        snprintf(want, sizeof want, "model.layers.%d.self_attn.%s", i / 2, i % 2 ? "v_proj" : "q_proj");
        assert_string_equal(mo->name, want);
        assert_int_equal(mo->kind, VKL_LORA_KIND_LORA);
        assert_float_equal(mo->scale, 2.0, 0);
        const vkl_lora_tensor *a = &mo->t[VKL_LORA_DOWN], *b = &mo->t[VKL_LORA_UP];
        assert_int_equal(a->shape[0], 8);
        assert_int_equal(a->shape[1], 64);
        assert_int_equal(b->shape[0], i % 2 ? 32 : 64);
        assert_int_equal(b->shape[1], 8);
        double mx = 0, sum = 0;
        uint64_t n = vkl_lora_tensor_nelem(a);
        for (uint64_t k = 0; k < n; k++) {
            mx = fmax(mx, fabs(a->data[k]));
            sum += a->data[k];
        }
        assert_true(mx < bound && mx > 0.9 * bound); /* 512 uniform draws reach near the bound */
        assert_true(fabs(sum / n) < 0.1 * bound);
        for (uint64_t k = 0; k < vkl_lora_tensor_nelem(b); k++) assert_true(b->data[k] == 0.0f);
        assert_memory_equal(a->data, same.m[i].t[VKL_LORA_DOWN].data, sizeof(float) * n);
        assert_memory_not_equal(a->data, other.m[i].t[VKL_LORA_DOWN].data, sizeof(float) * n);
    }
    vkl_lora_free(&l);
    vkl_lora_free(&same);
    vkl_lora_free(&other);
}

static void test_rslora_targets(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama/model.safetensors");
    static const char *const t[] = {"mlp.down_proj", "o_proj"};
    vkl_llama_lora_opts o = {.targets = t, .nt = 2, .rank = 4, .alpha = 8, .rslora = 1, .seed = 1};
    vkl_lora l;
    init(&o, &l);
    assert_int_equal(l.n, 6);
    assert_true(l.rslora);
    for (int i = 0; i < l.n; i++) {
        assert_float_equal(l.m[i].scale, 4.0, 1e-12); /* 8 / sqrt(4) */
        int down = strstr(l.m[i].name, "mlp.down_proj") != NULL;
        assert_true(down || strstr(l.m[i].name, "self_attn.o_proj"));
        assert_int_equal(l.m[i].t[VKL_LORA_DOWN].shape[1], down ? 172 : 64);
    }
    vkl_lora_free(&l);
    static const char *const none[] = {"proj"};
    o.targets = none;
    o.nt = 1;
    vkl_err e = {{0}};
    assert_int_equal(vkl_llama_lora_init(m_, &o, &l, &e), -1);
    assert_non_null(strstr(e.msg, "no projection"));
}

static void test_dora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama/model.safetensors");
    vkl_llama_lora_opts o = {.rank = 2, .alpha = 2, .dora = 1, .seed = 3};
    vkl_lora l;
    init(&o, &l);
    assert_int_equal(l.n, 6);
    for (int i = 0; i < l.n; i++) {
        const vkl_lora_module *mo = &l.m[i];
        assert_int_equal(mo->kind, VKL_LORA_KIND_DORA);
        char wn[128];
        snprintf(wn, sizeof wn, "%s.weight", mo->name);
        const vkl_tensor *w = vkl_weights_find(m_->w, wn);
        assert_non_null(w);
        float *h = lm_download(c_, w);
        int64_t O = w->shape[0], I = w->shape[1];
        const vkl_lora_tensor *g = &mo->t[VKL_LORA_MAG];
        assert_int_equal(g->ndim, 1);
        assert_int_equal(g->shape[0], O);
        for (int64_t r = 0; r < O; r++) {
            double s = 0;
            for (int64_t k = 0; k < I; k++) s += (double)h[r * I + k] * h[r * I + k];
            assert_float_equal(g->data[r], sqrt(s), 1e-6 * sqrt(s));
        }
        free(h);
    }
    vkl_lora_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lora),
        cmocka_unit_test(test_rslora_targets),
        cmocka_unit_test(test_dora),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
