/* llama2.c checkpoints (the legacy .bin of Karpathy's run.c): a 7 x int32
 * header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 * seq_len; vocab_size < 0 means a classifier of its own after the weights),
 * then f32 arrays in a fixed order. They become the HF names and layout the
 * rest of vklora uses: q/k rows permuted from llama2.c's interleaved RoPE
 * pairs (2i, 2i+1) to HF's rotate_half halves (i, i + hs/2), as the HF export
 * does; RoPE theta 10000, RMSNorm eps 1e-5, as run.c. */
#include "llama/llama.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int put(vkl_llama *m, vkl_dtype matrix_dtype, const float *data, int ndim, int64_t s0, int64_t s1,
               vkl_err *e, const char *fmt, int l)
{
    char name[128];
    snprintf(name, sizeof name, fmt, l);
    int64_t shape[2] = {s0, s1};
    vkl_tensor *d = vkl_tensor_new(m->ctx, vkl_llama_weight_dtype(name, ndim, matrix_dtype), ndim, shape, e);
    if (!d) return -1;
    if (vkl_tensor_upload(m->ctx, d, data, VKL_F32, e) || vkl_weights_put(m->w, name, d, e)) {
        if (vkl_weights_find(m->w, name) != d) vkl_tensor_free(d);
        return vkl_err_prefix(e, "%s: ", name), -1;
    }
    return 0;
}

/* rows of one head-stacked q or k matrix [heads * hs, dim], in place */
static int permute_rope(float *w, int heads, int hs, int dim)
{
    float *tmp = malloc(sizeof(float) * (size_t)hs * dim);
    if (!tmp) return -1;
    for (int h = 0; h < heads; h++) {
        float *head = w + (size_t)h * hs * dim;
        for (int i = 0; i < hs / 2; i++)
            for (int j = 0; j < 2; j++)
                memcpy(tmp + ((size_t)j * (hs / 2) + i) * dim, head + ((size_t)2 * i + j) * dim, sizeof(float) * dim);
        memcpy(head, tmp, sizeof(float) * (size_t)hs * dim);
    }
    free(tmp);
    return 0;
}

int vkl_llama_load_llama2c(vkl_ctx *c, const char *path, vkl_dtype matrix_dtype, vkl_llama **out, vkl_err *e)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    int32_t h[7];
    struct stat st;
    if (fread(h, 4, 7, f) != 7 || fstat(fileno(f), &st)) {
        fclose(f);
        return vkl_fail(e, "%s: too short for a llama2.c checkpoint header", path);
    }
    int dim = h[0], hidden = h[1], L = h[2], heads = h[3], kvh = h[4], vocab = h[5] < 0 ? -h[5] : h[5], seq = h[6];
    int shared = h[5] > 0;
    if (dim < 2 || dim > 65536 || hidden < 1 || hidden > 1 << 20 || L < 1 || L > 1024 || heads < 1 || kvh < 1 ||
        kvh > heads || heads % kvh || dim % heads || (dim / heads) % 2 || vocab < 1 || vocab > 1 << 22 || seq < 1 ||
        seq > 1 << 22) {
        fclose(f);
        return vkl_fail(e, "%s: not a llama2.c checkpoint (header dim %d, hidden %d, layers %d, heads %d/%d, vocab "
                           "%d, seq_len %d)", path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    }
    int hs = dim / heads, kvd = kvh * hs;
    uint64_t per_layer = (uint64_t)dim * 2 + (uint64_t)dim * dim * 2 + (uint64_t)kvd * dim * 2 + (uint64_t)hidden * dim * 3;
    uint64_t floats = (uint64_t)vocab * dim + per_layer * L + dim + (uint64_t)seq * hs + (shared ? 0 : (uint64_t)vocab * dim);
    if ((uint64_t)st.st_size != 28 + 4 * floats) {
        fclose(f);
        return vkl_fail(e, "%s: %lld bytes, but a llama2.c checkpoint with this header (dim %d, hidden %d, %d layers, "
                           "%d/%d heads, vocab %d%s, seq_len %d) has %llu", path, (long long)st.st_size, dim, hidden,
                        L, heads, kvh, vocab, shared ? "" : " unshared", seq, (unsigned long long)(28 + 4 * floats));
    }
    float *all = malloc(sizeof(float) * floats);
    if (!all) {
        fclose(f);
        return vkl_fail(e, "out of host memory");
    }
    size_t got = fread(all, sizeof(float), floats, f);
    fclose(f);
    if (got != floats) {
        free(all);
        return vkl_fail(e, "%s: read error", path);
    }
    vkl_llama *m = calloc(1, sizeof *m);
    if (!m || !(m->w = vkl_weights_new())) {
        free(all);
        free(m);
        return vkl_fail(e, "out of host memory");
    }
    m->ctx = c;
    m->cfg = (vkl_llama_config){.hidden = dim, .layers = L, .heads = heads, .kv_heads = kvh, .head_dim = hs,
                                .intermediate = hidden, .vocab = vocab, .max_pos = seq, .rope_theta = 10000.0f,
                                .rms_eps = 1e-5f, .tie_embeddings = shared, .bos = 1, .eos = 2};
    /* the arrays in file order */
    float *p = all, *emb = p;
    p += (size_t)vocab * dim;
    float *rms_att = p, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3;
    p += (size_t)L * dim;
    wq = p, p += (size_t)L * dim * dim;
    wk = p, p += (size_t)L * kvd * dim;
    wv = p, p += (size_t)L * kvd * dim;
    wo = p, p += (size_t)L * dim * dim;
    rms_ffn = p, p += (size_t)L * dim;
    w1 = p, p += (size_t)L * hidden * dim;
    w2 = p, p += (size_t)L * dim * hidden;
    w3 = p, p += (size_t)L * hidden * dim;
    float *rms_final = p;
    p += dim + (size_t)seq * hs; /* the old RoPE tables are not used */
    int rc = vkl_llama_config_check(&m->cfg, e) || put(m, matrix_dtype, emb, 2, vocab, dim, e, "model.embed_tokens.weight", 0) ||
             put(m, matrix_dtype, rms_final, 1, dim, 1, e, "model.norm.weight", 0) ||
             (!shared && put(m, matrix_dtype, p, 2, vocab, dim, e, "lm_head.weight", 0));
    for (int l = 0; l < L && !rc; l++) {
        float *q = wq + (size_t)l * dim * dim, *k = wk + (size_t)l * kvd * dim;
        if (permute_rope(q, heads, hs, dim) || permute_rope(k, kvh, hs, dim)) rc = vkl_fail(e, "out of host memory");
        rc = rc || put(m, matrix_dtype, rms_att + (size_t)l * dim, 1, dim, 1, e, "model.layers.%d.input_layernorm.weight", l) ||
             put(m, matrix_dtype, rms_ffn + (size_t)l * dim, 1, dim, 1, e, "model.layers.%d.post_attention_layernorm.weight", l) ||
             put(m, matrix_dtype, q, 2, dim, dim, e, "model.layers.%d.self_attn.q_proj.weight", l) ||
             put(m, matrix_dtype, k, 2, kvd, dim, e, "model.layers.%d.self_attn.k_proj.weight", l) ||
             put(m, matrix_dtype, wv + (size_t)l * kvd * dim, 2, kvd, dim, e, "model.layers.%d.self_attn.v_proj.weight", l) ||
             put(m, matrix_dtype, wo + (size_t)l * dim * dim, 2, dim, dim, e, "model.layers.%d.self_attn.o_proj.weight", l) ||
             put(m, matrix_dtype, w1 + (size_t)l * hidden * dim, 2, hidden, dim, e, "model.layers.%d.mlp.gate_proj.weight", l) ||
             put(m, matrix_dtype, w2 + (size_t)l * dim * hidden, 2, dim, hidden, e, "model.layers.%d.mlp.down_proj.weight", l) ||
             put(m, matrix_dtype, w3 + (size_t)l * hidden * dim, 2, hidden, dim, e, "model.layers.%d.mlp.up_proj.weight", l);
    }
    free(all);
    if (rc) {
        vkl_err_prefix(e, "%s: ", path);
        vkl_llama_free(m);
        return -1;
    }
    *out = m;
    return 0;
}
