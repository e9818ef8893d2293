/* LoRA adapters of a LLaMA model as GGUF files in llama.cpp's adapter layout
 * (what its --lora loads): general.type "adapter", adapter.type "lora",
 * adapter.lora.alpha (one for the file; llama.cpp scales each module by
 * alpha / its rank), tensors `<base weight>.lora_a` (ne [in, r]) and
 * `.lora_b` (ne [r, out]) under the model's GGUF names, f32. The rows of B
 * of attn_q/attn_k follow the base file's interleaved RoPE order, as
 * llama.cpp's adapter converter permutes them. */
#include "llama/llama_lora_gguf.h"

#include "io/gguf.h"
#include "llama/llama_gguf.h"
#include "ref/ref_gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* heads whose rows are permuted for the module (q: heads, k: kv heads), else 0 */
static int permuted_heads(const vkl_llama_config *c, const char *module)
{
    if (strstr(module, "self_attn.q_proj")) return c->heads;
    if (strstr(module, "self_attn.k_proj")) return c->kv_heads;
    return 0;
}

int vkl_llama_lora_save_gguf(const vkl_llama_config *c, const vkl_lora *l, const char *path, vkl_err *e)
{
    if (!l->n) return vkl_fail(e, "the adapter has no modules");
    /* one alpha for the file: the first module's scale * rank; other modules
     * with another scale get the ratio folded into their B */
    double alpha = 0;
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *m = &l->m[i];
        if (m->kind != VKL_LORA_KIND_LORA || !m->t[VKL_LORA_DOWN].data || !m->t[VKL_LORA_UP].data ||
            m->t[VKL_LORA_MID].data || m->t[VKL_LORA_DOWN].ndim != 2)
            return vkl_fail(e, "module %s: only plain LoRA modules of linear layers go into GGUF adapters (not %s)",
                            vkl_lora_module_label(m), vkl_lora_kind_name(m->kind));
        if (!i) alpha = m->scale * m->rank;
    }
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    if (!w) return vkl_fail(e, "out of host memory");
    int rc = vkl_gguf_w_str(w, "general.architecture", "llama", e) || vkl_gguf_w_str(w, "general.type", "adapter", e) ||
             vkl_gguf_w_str(w, "adapter.type", "lora", e) || vkl_gguf_w_f32(w, "adapter.lora.alpha", (float)alpha, e);
    for (int i = 0; i < l->n && !rc; i++) {
        const vkl_lora_module *m = &l->m[i];
        const vkl_lora_tensor *a = &m->t[VKL_LORA_DOWN], *b = &m->t[VKL_LORA_UP];
        char hf[256], gg[64], name[96];
        snprintf(hf, sizeof hf, "%s.weight", m->name ? m->name : "");
        if (!m->name || vkl_llama_gguf_name(hf, gg, sizeof gg)) {
            rc = vkl_fail(e, "module %s is no weight of a LLaMA model", vkl_lora_module_label(m));
            break;
        }
        int64_t r = a->shape[0], in = a->shape[1], out = b->shape[0];
        float *bb = malloc(sizeof(float) * (size_t)(out * r));
        if (!bb) {
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        double fold = m->scale * m->rank / alpha;
        for (int64_t k = 0; k < out * r; k++) bb[k] = fold == 1.0 ? b->data[k] : (float)(b->data[k] * fold);
        int heads = permuted_heads(c, m->name);
        if (heads && vkl_llama_gguf_permute_rows((uint8_t *)bb, heads, c->head_dim, sizeof(float) * (size_t)r, 1))
            rc = vkl_fail(e, "out of host memory");
        snprintf(name, sizeof name, "%s.lora_a", gg);
        rc = rc || vkl_gguf_w_tensor(w, name, VKL_GQ_F32, 2, (uint64_t[]){(uint64_t)in, (uint64_t)r}, a->data,
                                     sizeof(float) * (uint64_t)(r * in), e);
        snprintf(name, sizeof name, "%s.lora_b", gg);
        rc = rc || vkl_gguf_w_tensor(w, name, VKL_GQ_F32, 2, (uint64_t[]){(uint64_t)r, (uint64_t)out}, bb,
                                     sizeof(float) * (uint64_t)(out * r), e);
        free(bb);
    }
    rc = rc || vkl_gguf_writer_finish(w, path, e);
    vkl_gguf_writer_free(w);
    return rc;
}

/* The HF module name of a GGUF weight name (blk.N.attn_q.weight -> model.layers.N.self_attn.q_proj). */
static int hf_module(const char *gg, const vkl_llama_config *c, char *out, size_t n)
{
    static const char *const suffixes[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                           "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                           "mlp.down_proj"};
    char hf[160], back[64];
    int l;
    if (sscanf(gg, "blk.%d.", &l) != 1 || l < 0 || l >= c->layers) return -1;
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        snprintf(hf, sizeof hf, "model.layers.%d.%s.weight", l, suffixes[i]);
        if (!vkl_llama_gguf_name(hf, back, sizeof back) && !strcmp(back, gg)) {
            snprintf(out, n, "model.layers.%d.%s", l, suffixes[i]);
            return 0;
        }
    }
    return -1;
}

static float *dequant(const vkl_gguf_tensor *t, vkl_err *e)
{
    float *x = malloc(sizeof(float) * (size_t)t->nelem + 1);
    if (!x) return vkl_fail(e, "out of host memory"), NULL;
    vkl_ref_gguf_dequant(t->type, t->data, t->nelem, x);
    return x;
}

static int load_module(vkl_gguf_file *f, const vkl_gguf_tensor *ta, const vkl_llama_config *c, float alpha,
                       vkl_lora *out, vkl_err *e)
{
    const char *L = vkl_gguf_label(f);
    char base[64], bname[80], module[160];
    size_t k = strlen(ta->name) - strlen(".lora_a");
    snprintf(base, sizeof base, "%.*s", (int)k, ta->name);
    snprintf(bname, sizeof bname, "%s.lora_b", base);
    const vkl_gguf_tensor *tb = vkl_gguf_find(f, bname);
    if (!tb) return vkl_fail(e, "%s: %s has no %s", L, ta->name, bname);
    if (hf_module(base, c, module, sizeof module))
        return vkl_fail(e, "%s: %s names no projection of this model (%d layers)", L, base, c->layers);
    if (ta->ndim != 2 || tb->ndim != 2 || ta->ne[1] != tb->ne[0] || !ta->ne[1])
        return vkl_fail(e, "%s: %s ne [%llu, %llu] and %s ne [%llu, %llu] are no LoRA pair (ne [in, r], [r, out])", L,
                        ta->name, (unsigned long long)ta->ne[0], (unsigned long long)ta->ne[1], bname,
                        (unsigned long long)tb->ne[0], (unsigned long long)tb->ne[1]);
    int64_t r = (int64_t)ta->ne[1], in = (int64_t)ta->ne[0], o = (int64_t)tb->ne[1];
    int heads = permuted_heads(c, module);
    int64_t want_in = strstr(module, "o_proj") ? (int64_t)c->heads * c->head_dim
                      : strstr(module, "down_proj") ? c->intermediate : c->hidden;
    int64_t want_out = strstr(module, "q_proj") ? (int64_t)c->heads * c->head_dim
                       : strstr(module, "k_proj") || strstr(module, "v_proj") ? (int64_t)c->kv_heads * c->head_dim
                       : strstr(module, "gate_proj") || strstr(module, "up_proj") ? c->intermediate : c->hidden;
    if (in != want_in || o != want_out)
        return vkl_fail(e, "%s: %s changes a [%lld, %lld] weight, the model's is [%lld, %lld]", L, base, (long long)o,
                        (long long)in, (long long)want_out, (long long)want_in);
    vkl_lora_module *m = vkl_lora_add_module(out, e);
    if (!m) return -1;
    m->name = strdup(module);
    m->kname = strdup(base);
    m->source = strdup(base);
    if (!m->name || !m->kname || !m->source) return vkl_fail(e, "out of host memory");
    float *a = dequant(ta, e), *b = a ? dequant(tb, e) : NULL;
    int rc = a && b ? 0 : -1;
    if (!rc && heads && vkl_llama_gguf_permute_rows((uint8_t *)b, heads, c->head_dim, sizeof(float) * (size_t)r, 0))
        rc = vkl_fail(e, "out of host memory");
    float *da = rc ? NULL : vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], 2, (int64_t[]){r, in}, e);
    float *db = da ? vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], 2, (int64_t[]){o, r}, e) : NULL;
    if (!db) rc = -1;
    if (!rc) {
        memcpy(da, a, sizeof(float) * (size_t)(r * in));
        memcpy(db, b, sizeof(float) * (size_t)(o * r));
        m->t[VKL_LORA_DOWN].dtype = m->t[VKL_LORA_UP].dtype = VKL_F32;
        m->alpha = alpha;
        m->has_alpha = 1;
        m->alpha_dtype = VKL_F32;
        rc = vkl_lora_module_finish(m, NULL, e);
        m->scale = alpha / (double)r; /* llama.cpp's rule */
    }
    free(a);
    free(b);
    return rc;
}

int vkl_llama_lora_load_gguf(const char *path, const vkl_llama_config *c, vkl_lora *out, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    out->format = VKL_LORA_FMT_PEFT;
    vkl_gguf_file *f = NULL;
    if (vkl_gguf_open(path, &f, e)) return -1;
    const char *type = NULL, *atype = NULL, *arch = NULL;
    double alpha = 0;
    int rc = 0;
    if (vkl_gguf_get_str(f, "general.type", &type, e) < 0 || vkl_gguf_get_str(f, "adapter.type", &atype, e) < 0 ||
        vkl_gguf_get_str(f, "general.architecture", &arch, e) < 0 ||
        vkl_gguf_get_float(f, "adapter.lora.alpha", &alpha, e) < 0)
        rc = -1;
    else if (!type || strcmp(type, "adapter") || !atype || strcmp(atype, "lora"))
        rc = vkl_fail(e, "%s: not a LoRA adapter (general.type '%s', adapter.type '%s')", path, type ? type : "",
                      atype ? atype : "");
    else if (!arch || strcmp(arch, "llama"))
        rc = vkl_fail(e, "%s: an adapter for '%s', not llama", path, arch ? arch : "");
    else if (!(alpha > 0) || !isfinite(alpha))
        rc = vkl_fail(e, "%s: adapter.lora.alpha %g is not a positive number", path, alpha);
    for (int i = 0; i < vkl_gguf_count(f) && !rc; i++) {
        const vkl_gguf_tensor *t = vkl_gguf_at(f, i);
        size_t n = strlen(t->name);
        if (n > 7 && !strcmp(t->name + n - 7, ".lora_a")) rc = load_module(f, t, c, (float)alpha, out, e);
        else if (!(n > 7 && !strcmp(t->name + n - 7, ".lora_b")))
            rc = vkl_fail(e, "%s: tensor %s is neither a .lora_a nor a .lora_b", path, t->name);
        else {
            char a[80];
            snprintf(a, sizeof a, "%.*s.lora_a", (int)(n - 7), t->name);
            if (!vkl_gguf_find(f, a)) rc = vkl_fail(e, "%s: %s has no %s", path, t->name, a);
        }
    }
    if (!rc && !out->n) rc = vkl_fail(e, "%s: the adapter holds no tensors", path);
    vkl_gguf_close(f);
    if (rc) vkl_lora_free(out);
    return rc;
}
