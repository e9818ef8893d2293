/* Architectures from config.json, against a plain float64 forward written
 * here from the published definitions (transformers' Qwen2/LLaMA modelling):
 *   - a tiny Qwen2-style model written by the test (random weights, q/k/v
 *     biases, tied embeddings, rope_theta 1e6): logits, and greedy
 *     generation with the KV cache token for token;
 *   - the same weights as LLaMA 3 with rope_scaling llama3 and an eos list:
 *     the scaled frequencies from the formula, then logits;
 *   - the Qwen2 model split into two shards with model.safetensors.index.json
 *     loads to the same logits as the single file;
 *   - unsupported architectures and bad rope_scaling are refused by name. */
#include "llama_check.h"
#include "io/safetensors.h"
#include "llama/llama_generate.h"

#include <sys/stat.h>

enum { HID = 32, LAYERS = 2, HEADS = 4, KVH = 2, HD = 8, INTER = 48, VOCAB = 64, SEQ = 11, MAXSEQ = 24 };
#define QD (HEADS * HD)
#define KD (KVH * HD)

typedef struct tensor_spec {
    char name[96];
    int ndim;
    int64_t shape[2];
    double *v;
} tensor_spec;

typedef struct model {
    tensor_spec t[64];
    int n;
} model;

static double *tensor(model *m, vkl_test_rng *r, int ndim, int64_t s0, int64_t s1, double scale, double offset,
                      const char *fmt, int layer)
{
    tensor_spec *t = &m->t[m->n++];
    snprintf(t->name, sizeof t->name, fmt, layer);
    t->ndim = ndim;
    t->shape[0] = s0;
    t->shape[1] = s1;
    size_t n = (size_t)(s0 * (ndim == 2 ? s1 : 1));
    t->v = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) t->v[i] = offset + scale * vkl_test_rng_uniform(r, -1, 1);
    return t->v;
}

static const double *find(const model *m, const char *fmt, int layer)
{
    char name[96];
    snprintf(name, sizeof name, fmt, layer);
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name)) return m->t[i].v;
    fail_msg("no tensor %s", name);
    return NULL;
}

static void make_model(model *m, int biases)
{
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 19);
    m->n = 0;
    tensor(m, &r, 2, VOCAB, HID, 0.5, 0, "model.embed_tokens.weight", 0);
    tensor(m, &r, 1, HID, 1, 0.1, 1, "model.norm.weight", 0);
    for (int l = 0; l < LAYERS; l++) {
        tensor(m, &r, 1, HID, 1, 0.1, 1, "model.layers.%d.input_layernorm.weight", l);
        tensor(m, &r, 1, HID, 1, 0.1, 1, "model.layers.%d.post_attention_layernorm.weight", l);
        tensor(m, &r, 2, QD, HID, 0.3, 0, "model.layers.%d.self_attn.q_proj.weight", l);
        tensor(m, &r, 2, KD, HID, 0.3, 0, "model.layers.%d.self_attn.k_proj.weight", l);
        tensor(m, &r, 2, KD, HID, 0.3, 0, "model.layers.%d.self_attn.v_proj.weight", l);
        tensor(m, &r, 2, HID, QD, 0.3, 0, "model.layers.%d.self_attn.o_proj.weight", l);
        if (biases) {
            tensor(m, &r, 1, QD, 1, 0.5, 0, "model.layers.%d.self_attn.q_proj.bias", l);
            tensor(m, &r, 1, KD, 1, 0.5, 0, "model.layers.%d.self_attn.k_proj.bias", l);
            tensor(m, &r, 1, KD, 1, 0.5, 0, "model.layers.%d.self_attn.v_proj.bias", l);
        }
        tensor(m, &r, 2, INTER, HID, 0.3, 0, "model.layers.%d.mlp.gate_proj.weight", l);
        tensor(m, &r, 2, INTER, HID, 0.3, 0, "model.layers.%d.mlp.up_proj.weight", l);
        tensor(m, &r, 2, HID, INTER, 0.3, 0, "model.layers.%d.mlp.down_proj.weight", l);
    }
}

static void free_model(model *m)
{
    for (int i = 0; i < m->n; i++) free(m->t[i].v);
    m->n = 0;
}

/* Tensors [first, last) of m into path as f32. */
static void write_st(const model *m, int first, int last, const char *path)
{
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e = {{0}};
    for (int i = first; i < last; i++) {
        const tensor_spec *t = &m->t[i];
        size_t n = (size_t)(t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1));
        float *f = malloc(sizeof(float) * n);
        for (size_t k = 0; k < n; k++) f[k] = (float)t->v[k];
        if (vkl_st_writer_add(w, t->name, VKL_F32, t->ndim, t->shape, f, &e)) fail_msg("%s", e.msg);
        free(f);
    }
    if (vkl_st_writer_finish(w, path, &e)) fail_msg("%s", e.msg);
    vkl_st_writer_free(w);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* transformers' inv_freq with the llama3 correction when factor > 0 */
static void inv_freq(double theta, const double *sc, double *out)
{
    for (int k = 0; k < HD / 2; k++) {
        double f = 1.0 / pow(theta, 2.0 * k / HD);
        if (sc && sc[0] > 0) {
            double factor = sc[0], lo = sc[1], hi = sc[2], old = sc[3], wl = 2 * M_PI / f;
            if (wl > old / lo) f /= factor;
            else if (wl >= old / hi) {
                double s = (old / wl - lo) / (hi - lo);
                f = (1 - s) * f / factor + s * f;
            }
        }
        out[k] = f;
    }
}

static void rms(const double *x, const double *w, double *y)
{
    double ss = 0;
    for (int i = 0; i < HID; i++) ss += x[i] * x[i];
    double r = 1 / sqrt(ss / HID + 1e-6);
    for (int i = 0; i < HID; i++) y[i] = w[i] * x[i] * r;
}

/* y[out] = W x (+ b) */
static void lin(const double *W, const double *b, const double *x, int out, int in, double *y)
{
    for (int o = 0; o < out; o++) {
        double s = b ? b[o] : 0;
        for (int i = 0; i < in; i++) s += W[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

static void rope(double *v, int pos, const double *f)
{
    for (int k = 0; k < HD / 2; k++) {
        double a = pos * f[k], c = cos(a), s = sin(a), x0 = v[k], x1 = v[k + HD / 2];
        v[k] = x0 * c - x1 * s;
        v[k + HD / 2] = x1 * c + x0 * s;
    }
}

/* logits [L, VOCAB] of ids[0..L), tied embeddings */
static void reference_len(const model *m, int biases, const double *freq, const int32_t *ids, int L, double *logits)
{
    static double x[MAXSEQ][HID], q[MAXSEQ][QD], k[MAXSEQ][KD], v[MAXSEQ][KD], ctx[MAXSEQ][QD];
    const int SEQ = L; /* the loops below read the length as SEQ */
    double n[HID], t[INTER], u[INTER], o[HID];
    const double *emb = find(m, "model.embed_tokens.weight", 0);
    for (int p = 0; p < SEQ; p++) memcpy(x[p], emb + (size_t)ids[p] * HID, sizeof x[p]);
    for (int l = 0; l < LAYERS; l++) {
        for (int p = 0; p < SEQ; p++) {
            rms(x[p], find(m, "model.layers.%d.input_layernorm.weight", l), n);
            lin(find(m, "model.layers.%d.self_attn.q_proj.weight", l),
                biases ? find(m, "model.layers.%d.self_attn.q_proj.bias", l) : NULL, n, QD, HID, q[p]);
            lin(find(m, "model.layers.%d.self_attn.k_proj.weight", l),
                biases ? find(m, "model.layers.%d.self_attn.k_proj.bias", l) : NULL, n, KD, HID, k[p]);
            lin(find(m, "model.layers.%d.self_attn.v_proj.weight", l),
                biases ? find(m, "model.layers.%d.self_attn.v_proj.bias", l) : NULL, n, KD, HID, v[p]);
            for (int h = 0; h < HEADS; h++) rope(q[p] + h * HD, p, freq);
            for (int h = 0; h < KVH; h++) rope(k[p] + h * HD, p, freq);
        }
        for (int p = 0; p < SEQ; p++)
            for (int h = 0; h < HEADS; h++) {
                int kh = h / (HEADS / KVH);
                double s[MAXSEQ], mx = -1e300, sum = 0;
                for (int j = 0; j <= p; j++) {
                    s[j] = 0;
                    for (int d = 0; d < HD; d++) s[j] += q[p][h * HD + d] * k[j][kh * HD + d];
                    s[j] /= sqrt((double)HD);
                    mx = s[j] > mx ? s[j] : mx;
                }
                for (int j = 0; j <= p; j++) sum += (s[j] = exp(s[j] - mx));
                for (int d = 0; d < HD; d++) {
                    double a = 0;
                    for (int j = 0; j <= p; j++) a += s[j] / sum * v[j][kh * HD + d];
                    ctx[p][h * HD + d] = a;
                }
            }
        for (int p = 0; p < SEQ; p++) {
            lin(find(m, "model.layers.%d.self_attn.o_proj.weight", l), NULL, ctx[p], HID, QD, o);
            for (int i = 0; i < HID; i++) x[p][i] += o[i];
            rms(x[p], find(m, "model.layers.%d.post_attention_layernorm.weight", l), n);
            lin(find(m, "model.layers.%d.mlp.gate_proj.weight", l), NULL, n, INTER, HID, t);
            lin(find(m, "model.layers.%d.mlp.up_proj.weight", l), NULL, n, INTER, HID, u);
            for (int i = 0; i < INTER; i++) t[i] = t[i] / (1 + exp(-t[i])) * u[i];
            lin(find(m, "model.layers.%d.mlp.down_proj.weight", l), NULL, t, HID, INTER, o);
            for (int i = 0; i < HID; i++) x[p][i] += o[i];
        }
    }
    for (int p = 0; p < SEQ; p++) {
        rms(x[p], find(m, "model.norm.weight", 0), n);
        lin(emb, NULL, n, VOCAB, HID, logits + (size_t)p * VOCAB);
    }
}

static void reference(const model *m, int biases, const double *freq, const int32_t *ids, double *logits)
{
    reference_len(m, biases, freq, ids, SEQ, logits);
}

static const int32_t IDS[SEQ] = {1, 17, 5, 63, 0, 42, 42, 8, 31, 2, 50};

static float *device_logits(vkl_ctx *c, const char *dir, vkl_llama_config *cfg)
{
    vkl_err e = {{0}};
    vkl_llama *m = NULL;
    if (vkl_llama_load(c, dir, VKL_F32, &m, &e)) fail_msg("load %s: %s", dir, e.msg);
    if (cfg) *cfg = m->cfg;
    vkl_tensor *tid = lm_ids(c, IDS, 1, SEQ), *mask = lm_mask(c, 1, SEQ, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1};
    vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, logits);
    lm_plan(g);
    lm_run(g);
    float *got = lm_download(c, logits);
    vkl_graph_free(g);
    vkl_tensor_free(mask);
    vkl_tensor_free(tid);
    vkl_llama_free(m);
    return got;
}

static void compare(const char *what, const float *got, const double *want)
{
    float w[SEQ * VOCAB];
    double scale = 0;
    for (int i = 0; i < SEQ * VOCAB; i++) {
        w[i] = (float)want[i];
        scale = fabs(want[i]) > scale ? fabs(want[i]) : scale;
    }
    assert_true(scale > 0.5); /* the logits are not all near zero */
    lm_expect(what, got, w, SEQ * VOCAB, 2e-5 * scale);
}

static char root[256];

static void make_dir(const char *dir, const char *config, const model *m, int shards)
{
    char p[600];
    assert_int_equal(mkdir(dir, 0755), 0);
    write_text(dir, "config.json", config);
    if (!shards) {
        snprintf(p, sizeof p, "%s/model.safetensors", dir);
        write_st(m, 0, m->n, p);
        return;
    }
    /* two shards, the index naming each tensor's */
    int half = m->n / 2;
    snprintf(p, sizeof p, "%s/model-00001-of-00002.safetensors", dir);
    write_st(m, 0, half, p);
    snprintf(p, sizeof p, "%s/model-00002-of-00002.safetensors", dir);
    write_st(m, half, m->n, p);
    size_t cap = 65536, len = 0;
    char *idx = malloc(cap);
    len += (size_t)snprintf(idx + len, cap - len, "{\"metadata\":{\"total_size\":0},\"weight_map\":{");
    for (int i = 0; i < m->n; i++)
        len += (size_t)snprintf(idx + len, cap - len, "%s\"%s\":\"model-0000%d-of-00002.safetensors\"", i ? "," : "",
                                m->t[i].name, i < half ? 1 : 2);
    snprintf(idx + len, cap - len, "}}");
    write_text(dir, "model.safetensors.index.json", idx);
    free(idx);
}

#define QWEN2_CONFIG                                                                                                   \
    "{\"architectures\":[\"Qwen2ForCausalLM\"],\"model_type\":\"qwen2\",\"hidden_size\":32,\"num_hidden_layers\":2,"  \
    "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":48,\"vocab_size\":64,"                \
    "\"max_position_embeddings\":128,\"rope_theta\":1000000.0,\"rms_norm_eps\":1e-06,\"tie_word_embeddings\":true,"  \
    "\"use_sliding_window\":false,\"sliding_window\":16,\"hidden_act\":\"silu\",\"bos_token_id\":1,"                 \
    "\"eos_token_id\":2}"

static void qwen2_logits(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    model m;
    make_model(&m, 1);
    char dir[400];
    snprintf(dir, sizeof dir, "%s/qwen2", root);
    make_dir(dir, QWEN2_CONFIG, &m, 0);
    double freq[HD / 2], *want = malloc(sizeof(double) * SEQ * VOCAB);
    inv_freq(1e6, NULL, freq);
    reference(&m, 1, freq, IDS, want);
    vkl_llama_config cfg;
    float *got = device_logits(c, dir, &cfg);
    assert_true(cfg.qkv_bias && !cfg.o_bias && cfg.tie_embeddings && cfg.max_pos == 128);
    compare("qwen2 logits", got, want);
    /* without its biases the model is measurably different: the biases are used */
    double *nob = malloc(sizeof(double) * SEQ * VOCAB), d = 0;
    model m0;
    make_model(&m0, 1);
    for (int i = 0; i < m0.n; i++)
        if (strstr(m0.t[i].name, ".bias"))
            for (int k = 0; k < m0.t[i].shape[0]; k++) m0.t[i].v[k] = 0;
    reference(&m0, 1, freq, IDS, nob);
    for (int i = 0; i < SEQ * VOCAB; i++) d = fmax(d, fabs(nob[i] - want[i]));
    assert_true(d > 0.05);
    /* greedy generation with the KV cache (positions past the prompt, biases
     * on the cached keys/values) against the float64 forward re-run on the
     * whole sequence for each new token */
    {
        vkl_err e = {{0}};
        vkl_llama *lm = NULL;
        if (vkl_llama_load(c, dir, VKL_F32, &lm, &e)) fail_msg("%s", e.msg);
        enum { NEW = MAXSEQ - SEQ };
        int32_t seq[MAXSEQ], out[NEW];
        int n = 0;
        memcpy(seq, IDS, sizeof IDS);
        vkl_llama_gen_opts o = {.max_new = NEW, .stop_id = -1};
        if (vkl_llama_generate(lm, IDS, SEQ, &o, out, &n, &e)) fail_msg("generate: %s", e.msg);
        assert_int_equal(n, NEW);
        double *lg = malloc(sizeof(double) * MAXSEQ * VOCAB);
        for (int t = 0; t < NEW; t++) {
            reference_len(&m, 1, freq, seq, SEQ + t, lg);
            const double *row = lg + (size_t)(SEQ + t - 1) * VOCAB;
            int best = 0;
            for (int i = 1; i < VOCAB; i++)
                if (row[i] > row[best]) best = i;
            double second = -1e300;
            for (int i = 0; i < VOCAB; i++)
                if (i != best && row[i] > second) second = row[i];
            if (out[t] != best) fail_msg("new token %d: %d, the reference's argmax is %d (margin %.2g)", t, out[t], best,
                                         row[best] - second);
            seq[SEQ + t] = best;
        }
        printf("  qwen2 greedy: %d new tokens as the float64 reference\n", NEW);
        free(lg);
        vkl_llama_free(lm);
    }
    /* sharded: the same logits, bit for bit */
    snprintf(dir, sizeof dir, "%s/qwen2-sharded", root);
    make_dir(dir, QWEN2_CONFIG, &m, 1);
    float *sharded = device_logits(c, dir, NULL);
    assert_memory_equal(sharded, got, sizeof(float) * SEQ * VOCAB);
    free(sharded);
    free(got);
    free(want);
    free(nob);
    free_model(&m);
    free_model(&m0);
    vkl_test_ctx_done(c);
}

#define LLAMA3_CONFIG                                                                                                  \
    "{\"model_type\":\"llama\",\"hidden_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,"                \
    "\"num_key_value_heads\":2,\"intermediate_size\":48,\"vocab_size\":64,\"max_position_embeddings\":128,"         \
    "\"rope_theta\":500000.0,\"rms_norm_eps\":1e-06,\"tie_word_embeddings\":true,\"bos_token_id\":1,"               \
    "\"eos_token_id\":[2,60,61],\"rope_scaling\":{\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0," \
    "\"original_max_position_embeddings\":8192,\"rope_type\":\"llama3\"}}"

/* the four frequencies of head_dim 8 at theta 5e5 fall in each branch of the
 * correction: 2 kept (wavelengths 6.3, 167), 1 blended (4443), 1 divided (118k) */
static void llama3_rope(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    const double sc[4] = {8, 1, 4, 8192};
    double f[HD / 2], plain[HD / 2];
    inv_freq(5e5, sc, f);
    inv_freq(5e5, NULL, plain);
    assert_true(f[0] == plain[0] && f[1] == plain[1]);
    assert_true(f[2] < plain[2] && f[2] > plain[2] / 8);
    assert_true(fabs(f[3] - plain[3] / 8) < 1e-18);
    /* the op: rows x [1, 1, L, D] at positions 1000.. rotated by the scaled angles */
    enum { L = 5, P0 = 1000 };
    float x[L * HD], want[L * HD];
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 3);
    vkl_test_fill(&r, x, L * HD, -1, 1);
    for (int l = 0; l < L; l++) {
        double v[HD];
        for (int d = 0; d < HD; d++) v[d] = x[l * HD + d];
        rope(v, P0 + l, f);
        for (int d = 0; d < HD; d++) want[l * HD + d] = (float)v[d];
    }
    vkl_tensor *tx = vkl_test_upload(c, VKL_F32, 4, (int64_t[]){1, 1, L, HD}, x);
    vkl_graph *g = vkl_graph_new(c);
    vkl_rope_scaling s = {8, 1, 4, 8192};
    vkl_tensor *y = vkl_rope_scaled(g, tx, P0, 5e5f, &s);
    vkl_graph_keep(g, y);
    lm_plan(g);
    lm_run(g);
    float *got = lm_download(c, y);
    lm_expect("llama3 rope at positions 1000..1004", got, want, L * HD, 2e-4);
    free(got);
    vkl_graph_free(g);
    vkl_tensor_free(tx);
    /* the whole model with that config */
    model m;
    make_model(&m, 0);
    char dir[400];
    snprintf(dir, sizeof dir, "%s/llama3", root);
    make_dir(dir, LLAMA3_CONFIG, &m, 0);
    double *want_l = malloc(sizeof(double) * SEQ * VOCAB);
    reference(&m, 0, f, IDS, want_l);
    vkl_llama_config cfg;
    float *logits = device_logits(c, dir, &cfg);
    assert_int_equal(cfg.eos, 2);
    assert_int_equal(cfg.n_eos_extra, 2);
    assert_true(cfg.eos_extra[0] == 60 && cfg.eos_extra[1] == 61);
    compare("llama3 (rope_scaling) logits", logits, want_l);
    free(logits);
    free(want_l);
    free_model(&m);
    vkl_test_ctx_done(c);
}

static void refused(void **state)
{
    (void)state;
    struct {
        const char *config, *error;
    } cases[] = {
        {"{\"model_type\":\"gpt2\",\"hidden_size\":32}", "model_type gpt2"},
        {"{\"hidden_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"intermediate_size\":48,"
         "\"vocab_size\":64,\"rope_scaling\":{\"type\":\"yarn\",\"factor\":4}}",
         "rope_scaling type yarn"},
        {"{\"hidden_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"intermediate_size\":48,"
         "\"vocab_size\":64,\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":4,"
         "\"high_freq_factor\":1,\"original_max_position_embeddings\":8192}}",
         "low_freq_factor < high_freq_factor"},
        {"{\"hidden_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"intermediate_size\":48,"
         "\"vocab_size\":64,\"mlp_bias\":true}",
         "mlp_bias"},
        {"{\"hidden_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,\"intermediate_size\":48,"
         "\"vocab_size\":64,\"eos_token_id\":[2,\"x\"]}",
         "eos_token_id"},
    };
    char path[400];
    snprintf(path, sizeof path, "%s/config.json", root);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_text(root, "config.json", cases[i].config);
        vkl_llama_config cfg;
        vkl_err e = {{0}};
        assert_int_equal(vkl_llama_config_read(path, &cfg, &e), -1);
        if (!strstr(e.msg, cases[i].error)) fail_msg("case %zu: \"%s\" does not name %s", i, e.msg, cases[i].error);
    }
    /* an index naming a file outside the folder */
    char sub[400];
    snprintf(sub, sizeof sub, "%s/badindex", root);
    assert_int_equal(mkdir(sub, 0755), 0);
    write_text(sub, "config.json", QWEN2_CONFIG);
    write_text(sub, "model.safetensors.index.json", "{\"weight_map\":{\"model.norm.weight\":\"../x.safetensors\"}}");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = NULL;
    vkl_err e2 = {{0}};
    assert_int_equal(vkl_llama_load(c, sub, VKL_F32, &m, &e2), -1);
    if (!strstr(e2.msg, "does not name a file in the folder")) fail_msg("%s", e2.msg);
    vkl_test_ctx_done(c);
    /* a Mistral-style sliding window caps the positions */
    write_text(root, "config.json",
               "{\"model_type\":\"mistral\",\"hidden_size\":32,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
               "\"num_key_value_heads\":2,\"intermediate_size\":48,\"vocab_size\":64,\"max_position_embeddings\":"
               "32768,\"sliding_window\":4096}");
    vkl_llama_config cfg;
    vkl_err e = {{0}};
    assert_int_equal(vkl_llama_config_read(path, &cfg, &e), 0);
    assert_int_equal(cfg.max_pos, 4096);
    assert_false(cfg.qkv_bias);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "%s", vkl_test_tmpdir());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(root);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(qwen2_logits),
        cmocka_unit_test(llama3_rope),
        cmocka_unit_test(refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
