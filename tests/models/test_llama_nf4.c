/* The tiny LLaMA on an NF4 base (vkl_llama_load with VKL_NF4, QLoRA): which
 * weights are quantised and how much memory they take; the logits against
 * the f32 model whose projections were replaced by their NF4 dequantisation
 * computed on the host (and embedding / lm_head rounded to f16, as the NF4
 * base stores them), for a 33-token sequence and through greedy generation
 * with the KV cache (same tokens, close step logits); and against the plain
 * f32 model, loosely (quantisation error). The same for the nf4dq base
 * (VKL_NF4_DQ: every matrix, embedding and lm_head included, with QLoRA's
 * double-quantised scales on the device), whose reference applies the host's
 * double quantisation (checked bit for bit against the refkit in test_nf4). */
#include "llama_check.h"
#include "llama/llama_generate.h"
#include "quant.h"
#include "weights.h"

#define TINY LM_DIR "/tiny-llama"
#define LOGITS LM_DIR "/vectors/logits.safetensors"
#define GEN LM_DIR "/vectors/generation.safetensors"

/* The f32 model made to hold exactly the values the base (NF4 or NF4_DQ)
 * computes with. */
static void dequantise_in_place(vkl_ctx *c, vkl_llama *m, vkl_dtype base)
{
    vkl_err e = {{0}};
    int quantised = 0;
    for (int i = 0; i < vkl_weights_count(m->w); i++) {
        const char *name;
        vkl_tensor *t = vkl_weights_at(m->w, i, &name);
        vkl_dtype dt = vkl_llama_weight_dtype(name, t->ndim, base);
        if (dt == VKL_F32) continue;
        int64_t n = vkl_tensor_nelem(t);
        float *w = malloc(sizeof(float) * (size_t)n);
        assert_int_equal(vkl_tensor_download(c, t, w, VKL_F32, &e), 0);
        vkl_test_round_to(dt == VKL_NF4 || dt == VKL_NF4_DQ ? dt : VKL_F16, w, (size_t)n);
        quantised += dt == VKL_NF4 || dt == VKL_NF4_DQ;
        assert_int_equal(vkl_tensor_upload(c, t, w, VKL_F32, &e), 0);
        free(w);
    }
    /* nf4: the seven projections of each layer; nf4dq: the embedding and lm_head too */
    int matrices = 7 * m->cfg.layers + (base == VKL_NF4_DQ ? (m->cfg.tie_embeddings ? 1 : 2) : 0);
    assert_int_equal(quantised, matrices);
}

static float *logits_of(vkl_ctx *c, const vkl_llama *m, const int32_t *ids, int L)
{
    vkl_tensor *tid = lm_ids(c, ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1};
    vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, logits);
    lm_plan(g);
    lm_run(g);
    float *out = lm_download(c, logits);
    vkl_graph_free(g);
    vkl_tensor_free(tid);
    vkl_tensor_free(mask);
    return out;
}

static void nf4_base_weights(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(TINY "/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *q = lm_load(c, TINY, VKL_NF4), *h = lm_load(c, TINY, VKL_F16);
    assert_int_equal(vkl_weights_find(q->w, "model.layers.0.self_attn.q_proj.weight")->dtype, VKL_NF4);
    assert_int_equal(vkl_weights_find(q->w, "model.layers.2.mlp.down_proj.weight")->dtype, VKL_NF4);
    assert_int_equal(vkl_weights_find(q->w, "model.embed_tokens.weight")->dtype, VKL_F16);
    assert_int_equal(vkl_weights_find(q->w, "lm_head.weight")->dtype, VKL_F16);
    assert_int_equal(vkl_weights_find(q->w, "model.norm.weight")->dtype, VKL_F32);
    /* a projection [172, 64]: 5504 code bytes + 172 absmax = 6192 bytes, f16 22016 */
    const vkl_tensor *g = vkl_weights_find(q->w, "model.layers.1.mlp.gate_proj.weight");
    assert_int_equal(vkl_tensor_nbytes(g), 5504 + 172 * 4);
    assert_int_equal(vkl_tensor_nbytes(vkl_weights_find(h->w, "model.layers.1.mlp.gate_proj.weight")), 172 * 64 * 2);
    uint64_t bq = vkl_weights_bytes(q->w), bh = vkl_weights_bytes(h->w);
    printf("  tiny LLaMA base: f16 %llu bytes, nf4 %llu bytes (embedding and lm_head f16 in both)\n",
           (unsigned long long)bh, (unsigned long long)bq);
    assert_true(bq < bh);
    /* nf4dq: every matrix double-quantised (the embedding read row by row) */
    vkl_llama *d = lm_load(c, TINY, VKL_NF4_DQ);
    assert_int_equal(vkl_weights_find(d->w, "model.layers.0.self_attn.q_proj.weight")->dtype, VKL_NF4_DQ);
    assert_int_equal(vkl_weights_find(d->w, "model.embed_tokens.weight")->dtype, VKL_NF4_DQ);
    if (!d->cfg.tie_embeddings) assert_int_equal(vkl_weights_find(d->w, "lm_head.weight")->dtype, VKL_NF4_DQ);
    assert_int_equal(vkl_weights_find(d->w, "model.norm.weight")->dtype, VKL_F32);
    /* [172, 64]: 5504 code bytes, map and offset 1040, one absmax2 (+12 padding), 172 u8 codes (+4 padding) */
    assert_int_equal(vkl_tensor_nbytes(vkl_weights_find(d->w, "model.layers.1.mlp.gate_proj.weight")),
                     5504 + 1040 + 16 + 176);
    uint64_t bd = vkl_weights_bytes(d->w);
    printf("  tiny LLaMA base: nf4dq %llu bytes (f16 / nf4dq = %.2f; the fixed 1 KiB map per matrix weighs on "
           "this tiny model)\n", (unsigned long long)bd, (double)bh / (double)bd);
    assert_true(bd < bh);
    vkl_llama_free(d);
    vkl_llama_free(q);
    vkl_llama_free(h);
    vkl_test_ctx_done(c);
}

static void nf4_logits(void **state)
{
    vkl_dtype base = *(const vkl_dtype *)*state;
    const char *bn = vkl_dtype_name(base);
    VKL_REQUIRE_SHARED(LOGITS);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t n;
    int32_t *ids = lm_ref_ids(LOGITS, "input_ids_33", &n);
    int64_t nref;
    float *want_f32 = vkl_test_ref_f32(LOGITS, "logits_33", &nref);
    vkl_llama *q = lm_load(c, TINY, base), *r = lm_load(c, TINY, VKL_F32);
    dequantise_in_place(c, r, base);
    float *got = logits_of(c, q, ids, (int)n), *want = logits_of(c, r, ids, (int)n);
    size_t nl = (size_t)n * (size_t)q->cfg.vocab;
    assert_int_equal(nref, (int64_t)nl);
    char what[96];
    snprintf(what, sizeof what, "%s logits vs f32 on dequantised weights", bn);
    lm_expect(what, got, want, nl, 1e-4);
    /* the quantisation itself moves the logits of this random-weight model
     * noticeably (4 bits per weight), but keeps them correlated with the f32 ones */
    double md = 0, se = 0, sw = 0;
    for (size_t i = 0; i < nl; i++) {
        double d = (double)got[i] - want_f32[i];
        md = fmax(md, fabs(d));
        se += d * d;
        sw += (double)want_f32[i] * want_f32[i];
    }
    printf("  %s logits vs the f32 model's (refkit): max |diff| %.3g, rms diff / rms logit %.3g\n", bn, md,
           sqrt(se / sw));
    assert_true(md > 1e-4 && sqrt(se / sw) < 0.4); /* measured 0.30 (nf4), 0.35 (nf4dq) */
    free(got); free(want); free(want_f32); free(ids);
    vkl_llama_free(q);
    vkl_llama_free(r);
    vkl_test_ctx_done(c);
}

static void nf4_generation(void **state)
{
    vkl_dtype base = *(const vkl_dtype *)*state;
    VKL_REQUIRE_SHARED(GEN);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t np;
    int32_t *prompt = lm_ref_ids(GEN, "prompt_ids", &np);
    vkl_llama *q = lm_load(c, TINY, base), *r = lm_load(c, TINY, VKL_F32);
    dequantise_in_place(c, r, base);
    enum { NEW = 12 };
    int V = q->cfg.vocab, nq = 0, nr = 0;
    int32_t outq[NEW], outr[NEW];
    float *lq = malloc(sizeof(float) * NEW * V), *lr = malloc(sizeof(float) * NEW * V);
    vkl_err e = {{0}};
    vkl_llama_gen_opts oq = {.max_new = NEW, .stop_id = -1, .step_logits = lq};
    vkl_llama_gen_opts orf = {.max_new = NEW, .stop_id = -1, .step_logits = lr};
    if (vkl_llama_generate(q, prompt, (int)np, &oq, outq, &nq, &e) ||
        vkl_llama_generate(r, prompt, (int)np, &orf, outr, &nr, &e)) {
        print_error("generate: %s\n", e.msg);
        fail();
    }
    assert_int_equal(nq, NEW);
    assert_int_equal(nr, NEW);
    printf("  %s greedy:", vkl_dtype_name(base));
    for (int i = 0; i < NEW; i++) printf(" %d", outq[i]);
    printf("\n");
    for (int i = 0; i < NEW; i++) assert_int_equal(outq[i], outr[i]);
    lm_expect(base == VKL_NF4 ? "nf4 step logits (KV cache) vs dequantised f32"
                              : "nf4dq step logits (KV cache) vs dequantised f32",
              lq, lr, (size_t)NEW * V, 1e-4);
    free(lq); free(lr); free(prompt);
    vkl_llama_free(q);
    vkl_llama_free(r);
    vkl_test_ctx_done(c);
}

int main(void)
{
    static vkl_dtype nf4 = VKL_NF4, nf4dq = VKL_NF4_DQ;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nf4_base_weights),
        cmocka_unit_test_prestate(nf4_logits, &nf4),
        cmocka_unit_test_prestate(nf4_generation, &nf4),
        cmocka_unit_test_prestate(nf4_logits, &nf4dq),
        cmocka_unit_test_prestate(nf4_generation, &nf4dq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
