/* Sampling the next token (lm_sample.h): each filter against a distribution
 * worked out by hand, the repetition penalty, the draw, the seed's
 * reproducibility and frequencies; then tiny-llama through
 * vkl_llama_generate: temperature 0 gives transformers' greedy ids, and a
 * sampled run repeats with its seed and matches the sampler applied to the
 * logits of each step. */
#include "llama_check.h"
#include "llama/llama_generate.h"
#include "llama/lm_sample.h"

/* ln of these probabilities: softmax gives them back */
static const double P5[5] = {0.4, 0.3, 0.15, 0.1, 0.05};

static void logits_of(const double *p, int n, float *x)
{
    for (int i = 0; i < n; i++) x[i] = (float)log(p[i]);
}

static void expect_probs(const char *what, const vkl_lm_sampling *s, const double *p, const double *want)
{
    float x[5];
    double got[5];
    logits_of(p, 5, x);
    assert_int_equal(vkl_lm_sample_probs(s, x, 5, got), 0);
    for (int i = 0; i < 5; i++)
        if (fabs(got[i] - want[i]) > 1e-6) fail_msg("%s: p[%d] = %.8f, expected %.8f", what, i, got[i], want[i]);
}

static void filters(void **state)
{
    (void)state;
    vkl_lm_sampling s;
    vkl_lm_sampling_default(&s);
    s.temperature = 1;
    expect_probs("T=1", &s, P5, P5);
    s.temperature = 2; /* p^(1/2), renormalised */
    double t2[5], sum = 0;
    for (int i = 0; i < 5; i++) sum += (t2[i] = sqrt(P5[i]));
    for (int i = 0; i < 5; i++) t2[i] /= sum;
    expect_probs("T=2", &s, P5, t2);
    s.temperature = 1;
    s.top_k = 2;
    expect_probs("top-k 2", &s, P5, (double[]){4 / 7.0, 3 / 7.0, 0, 0, 0});
    /* ties with the k-th stay */
    expect_probs("top-k 2, tie", &s, (double[]){0.4, 0.2, 0.2, 0.1, 0.1}, (double[]){0.5, 0.25, 0.25, 0, 0});
    s.top_k = 0;
    s.top_p = 0.6f; /* 0.4 (0 above), 0.3 (0.4 above) kept; 0.15 has 0.7 above */
    expect_probs("top-p 0.6", &s, P5, (double[]){4 / 7.0, 3 / 7.0, 0, 0, 0});
    s.top_p = 0.75f;
    expect_probs("top-p 0.75", &s, P5, (double[]){0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0});
    s.top_p = 0.1f; /* the top token always stays */
    expect_probs("top-p 0.1", &s, P5, (double[]){1, 0, 0, 0, 0});
    s.top_p = 1;
    s.min_p = 0.3f; /* below 0.3 x 0.4 = 0.12 goes */
    expect_probs("min-p 0.3", &s, P5, (double[]){0.4 / 0.85, 0.3 / 0.85, 0.15 / 0.85, 0, 0});
    s.min_p = 0.5f;
    expect_probs("min-p 0.5", &s, P5, (double[]){4 / 7.0, 3 / 7.0, 0, 0, 0});
    /* top-k first, then min-p on the renormalised three: 0.5 x 0.4/0.85 drops 0.15/0.85 */
    s.top_k = 3;
    expect_probs("top-k 3 + min-p 0.5", &s, P5, (double[]){4 / 7.0, 3 / 7.0, 0, 0, 0});
    /* temperature before top-p: at T=0.5 the probabilities are p^2 / 0.285 */
    vkl_lm_sampling_default(&s);
    s.temperature = 0.5f;
    s.top_p = 0.7f; /* 0.561 and 0.316 kept; the third has 0.877 above it (at T=1 it would stay) */
    expect_probs("T=0.5 + top-p 0.7", &s, P5, (double[]){0.16 / 0.25, 0.09 / 0.25, 0, 0, 0});
}

static void penalty_and_pick(void **state)
{
    (void)state;
    float x[4] = {2, -1, 0.5f, 3};
    int32_t hist[] = {0, 1, 1, 7 /* outside: ignored */};
    vkl_lm_repeat_penalty(x, 4, hist, 4, 2);
    assert_true(x[0] == 1 && x[1] == -2 && x[2] == 0.5f && x[3] == 3);
    double p[4] = {0.25, 0, 0.5, 0.25};
    assert_int_equal(vkl_lm_sample_pick(p, 4, 0), 0);
    assert_int_equal(vkl_lm_sample_pick(p, 4, 0.2499), 0);
    assert_int_equal(vkl_lm_sample_pick(p, 4, 0.25), 2);
    assert_int_equal(vkl_lm_sample_pick(p, 4, 0.8), 3);
    assert_int_equal(vkl_lm_sample_pick(p, 4, 0.99999999), 3);
    /* greedy: the first maximum, after the penalty */
    vkl_lm_sampling s;
    vkl_lm_sampling_default(&s);
    float y[4] = {3, 1, 3, 2.9f};
    assert_int_equal(vkl_lm_sample(&s, y, 4, NULL, 0, 0), 0);
    s.repeat_penalty = 1.5f;
    int32_t h0[] = {0, 2};
    assert_int_equal(vkl_lm_sample(&s, y, 4, h0, 2, 0), 3);
}

static void seeded_draws(void **state)
{
    (void)state;
    double mean = 0;
    for (uint64_t k = 0; k < 20000; k++) {
        double u = vkl_lm_sample_uniform(42, k);
        assert_true(u >= 0 && u < 1);
        assert_true(u == vkl_lm_sample_uniform(42, k));
        mean += u / 20000;
    }
    assert_true(fabs(mean - 0.5) < 0.01);
    assert_true(vkl_lm_sample_uniform(42, 0) != vkl_lm_sample_uniform(43, 0));
    /* frequencies of 20000 draws at T=1 follow P5 */
    vkl_lm_sampling s;
    vkl_lm_sampling_default(&s);
    s.temperature = 1;
    s.seed = 9;
    int count[5] = {0};
    for (uint64_t k = 0; k < 20000; k++) {
        float x[5];
        logits_of(P5, 5, x);
        int32_t id = vkl_lm_sample(&s, x, 5, NULL, 0, k);
        assert_true(id >= 0 && id < 5);
        count[id]++;
    }
    for (int i = 0; i < 5; i++)
        if (fabs(count[i] / 20000.0 - P5[i]) > 0.012) fail_msg("id %d drawn %d times of 20000 (p %.2f)", i, count[i], P5[i]);
}

static void tiny_llama_generate(void **state)
{
    (void)state;
    const char *rel = LM_DIR "/vectors/generation.safetensors";
    VKL_REQUIRE_SHARED(rel);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    int64_t np = 0, nn = 0;
    int32_t *prompt = lm_ref_ids(rel, "prompt_ids", &np), *want = lm_ref_ids(rel, "new_ids", &nn);
    int V = m->cfg.vocab, n = 0;
    int32_t out[3][32];
    float *lg = malloc(sizeof(float) * (size_t)nn * V);
    vkl_err e = {{0}};
    vkl_lm_sampling s;
    vkl_lm_sampling_default(&s); /* temperature 0: greedy, as transformers */
    vkl_llama_gen_opts o = {.max_new = (int)nn, .stop_id = -1, .sampling = &s};
    if (vkl_llama_generate(m, prompt, (int)np, &o, out[0], &n, &e)) fail_msg("generate: %s", e.msg);
    assert_int_equal(n, nn);
    for (int i = 0; i < n; i++) assert_int_equal(out[0][i], want[i]);
    /* sampled: the same ids again with the seed; each the sampler's choice from its step's logits */
    s.temperature = 0.9f;
    s.top_k = 50;
    s.top_p = 0.95f;
    s.repeat_penalty = 1.3f;
    s.seed = 1234;
    o.step_logits = lg;
    for (int r = 1; r < 3; r++) {
        if (vkl_llama_generate(m, prompt, (int)np, &o, out[r], &n, &e)) fail_msg("generate: %s", e.msg);
        assert_int_equal(n, nn);
    }
    int differ = 0;
    int32_t hist[300];
    memcpy(hist, prompt, sizeof(int32_t) * (size_t)np);
    for (int i = 0; i < n; i++) {
        assert_int_equal(out[1][i], out[2][i]);
        differ += out[1][i] != want[i];
        assert_int_equal(vkl_lm_sample(&s, lg + (size_t)i * V, V, hist, (int)np + i, (uint64_t)i), out[1][i]);
        hist[np + i] = out[1][i];
    }
    assert_true(differ > 0); /* sampling really left the greedy path */
    free(lg);
    free(prompt);
    free(want);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(filters),
        cmocka_unit_test(penalty_and_pick),
        cmocka_unit_test(seeded_draws),
        cmocka_unit_test(tiny_llama_generate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
