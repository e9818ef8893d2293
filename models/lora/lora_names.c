/* Name resolution: the list of weights an adapter may change, indexed by
 * internal name and by kohya name. Kohya names are not invertible ('_' is
 * both a separator and part of names such as `to_q`), so the index is built in
 * the other direction: the kohya form of every candidate. */
#include "lora/lora_file.h"
#include "sd/sd_layout.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *after(const char *s, const char *p)
{
    size_t n = strlen(p);
    return strncmp(s, p, n) ? NULL : s + n;
}

int vkl_lora_kohya_name(const char *internal, int xl, char *out, size_t size)
{
    static const char *roots[][3] = {{"unet.", "lora_unet_", "lora_unet_"},
                                     {"text_encoder.", "lora_te_", "lora_te1_"},
                                     {"text_encoder_2.", "lora_te2_", "lora_te2_"}};
    const char *rest = NULL, *pre = NULL;
    for (size_t i = 0; i < sizeof roots / sizeof roots[0] && !rest; i++)
        if ((rest = after(internal, roots[i][0]))) pre = roots[i][xl ? 2 : 1];
    if (!rest) {
        pre = "lora_";
        rest = internal;
    }
    int k = snprintf(out, size, "%s%s", pre, rest);
    if (k < 0 || (size_t)k >= size) return -1;
    for (char *p = out + strlen(pre); *p; p++)
        if (*p == '.') *p = '_';
    return 0;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const vkl_lora_name_ix *)a)->s, ((const vkl_lora_name_ix *)b)->s);
}

static int find_in(const vkl_lora_name_ix *ix, int n, const char *s)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(ix[mid].s, s);
        if (!c) return ix[mid].i;
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int vkl_lora_targets_find(const vkl_lora_targets *t, const char *name)
{
    return find_in(t->by_name, t->n, name);
}

int vkl_lora_targets_find_kohya(const vkl_lora_targets *t, const char *kname)
{
    int i = find_in(t->by_kname, t->n, kname);
    if (i < 0 && t->n_ldm) i = find_in(t->by_ldm, t->n_ldm, kname);
    return i;
}

static int add_target(vkl_lora_targets *t, const char *weight_name, int ndim, const int64_t *shape,
                      vkl_err *e)
{
    size_t n = strlen(weight_name);
    if (n < 8 || strcmp(weight_name + n - 7, ".weight")) return 0;
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 256;
        vkl_lora_target *v = realloc(t->v, (size_t)cap * sizeof *v);
        if (!v) return vkl_fail(e, "out of memory building the target list");
        t->v = v;
        t->cap = cap;
    }
    vkl_lora_target *x = &t->v[t->n];
    memset(x, 0, sizeof *x);
    x->name = strndup(weight_name, n - 7);
    x->kname = malloc(n + 16);
    if (!x->name || !x->kname) {
        free(x->name);
        free(x->kname);
        return vkl_fail(e, "out of memory building the target list");
    }
    if (vkl_lora_kohya_name(x->name, t->has_te2, x->kname, n + 16)) {
        free(x->name);
        free(x->kname);
        return vkl_fail(e, "target name too long: %s", weight_name);
    }
    x->ndim = ndim > 4 ? 4 : ndim;
    for (int i = 0; i < x->ndim; i++) x->shape[i] = shape[i];
    t->n++;
    return 0;
}

/* Sorts the indexes; two targets with the same kohya name would make kohya
 * files ambiguous, which no supported model has, so it is an error. */
static int finish(vkl_lora_targets *t, vkl_err *e)
{
    size_t n = (size_t)(t->n ? t->n : 1);
    t->by_name = malloc(n * sizeof *t->by_name);
    t->by_kname = malloc(n * sizeof *t->by_kname);
    t->by_ldm = malloc(n * sizeof *t->by_ldm);
    if (!t->by_name || !t->by_kname || !t->by_ldm) return vkl_fail(e, "out of memory");
    t->n_ldm = 0;
    for (int i = 0; i < t->n; i++) {
        t->by_name[i] = (vkl_lora_name_ix){t->v[i].name, i};
        t->by_kname[i] = (vkl_lora_name_ix){t->v[i].kname, i};
        if (t->v[i].ldm) t->by_ldm[t->n_ldm++] = (vkl_lora_name_ix){t->v[i].ldm, i};
    }
    qsort(t->by_name, (size_t)t->n, sizeof *t->by_name, cmp_entry);
    qsort(t->by_kname, (size_t)t->n, sizeof *t->by_kname, cmp_entry);
    qsort(t->by_ldm, (size_t)t->n_ldm, sizeof *t->by_ldm, cmp_entry);
    for (int i = 1; i < t->n; i++)
        if (!strcmp(t->by_kname[i].s, t->by_kname[i - 1].s))
            return vkl_fail(e, "targets %s and %s have the same kohya name %s",
                            t->v[t->by_kname[i - 1].i].name, t->v[t->by_kname[i].i].name,
                            t->by_kname[i].s);
    return 0;
}

int vkl_lora_targets_from_sd(const vkl_sd_config *c, vkl_lora_targets *t, vkl_err *e)
{
    memset(t, 0, sizeof *t);
    t->has_te2 = c->n_text_encoders > 1;
    t->context_dim = c->unet.cross_attention_dim;
    snprintf(t->model_kind, sizeof t->model_kind, "%s", vkl_sd_family_name(c->family));
    vkl_sd_params p = {0};
    if (vkl_sd_params_build(c, &p, e)) return -1;
    int rc = 0;
    for (int i = 0; i < p.n && !rc; i++) {
        int before = t->n;
        rc = add_target(t, p.v[i].name, p.v[i].ndim, p.v[i].shape, e);
        if (rc || t->n == before || strncmp(p.v[i].name, "unet.", 5)) continue;
        /* Older kohya files name UNet modules by the LDM numbering
         * (lora_unet_input_blocks_1_1_proj_in); the layout gives that name. */
        vkl_sd_src_name src[2];
        if (vkl_sd_ldm_source_name(c, p.v[i].name, src, 2) < 1) continue;
        const char *r = after(src[0].name, "model.diffusion_model.");
        size_t n = r ? strlen(r) : 0;
        if (n < 8 || strcmp(r + n - 7, ".weight")) continue;
        char *k = malloc(n + 16);
        if (!k) { rc = vkl_fail(e, "out of memory"); break; }
        snprintf(k, n + 16, "lora_unet_%.*s", (int)(n - 7), r);
        for (char *q = k + 10; *q; q++)
            if (*q == '.') *q = '_';
        t->v[t->n - 1].ldm = k;
    }
    vkl_sd_params_free(&p);
    if (!rc) rc = finish(t, e);
    if (rc) vkl_lora_targets_free(t);
    return rc;
}

int vkl_lora_targets_from_st(const vkl_st_file *f, vkl_lora_targets *t, vkl_err *e)
{
    memset(t, 0, sizeof *t);
    snprintf(t->model_kind, sizeof t->model_kind, "%s",
             vkl_st_find(f, "model.embed_tokens.weight") ? "LLM" : "model");
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *x = vkl_st_at(f, i);
        if (add_target(t, x->name, x->ndim, x->shape, e)) {
            vkl_lora_targets_free(t);
            return -1;
        }
    }
    if (finish(t, e)) {
        vkl_lora_targets_free(t);
        return -1;
    }
    return 0;
}

void vkl_lora_targets_free(vkl_lora_targets *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) {
        free(t->v[i].name);
        free(t->v[i].kname);
        free(t->v[i].ldm);
    }
    free(t->v);
    free(t->by_name);
    free(t->by_kname);
    free(t->by_ldm);
    memset(t, 0, sizeof *t);
}

static int has(const char *s, const char *frag) { return strstr(s, frag) != NULL; }

void vkl_lora_guess_unmatched(const vkl_lora_targets *t, const char *const *keys, int n,
                              const int64_t *in_dims, char *out, size_t size)
{
    int te2 = 0, xl_emb = 0, llm = 0, ldm = 0, vae = 0, ctx2048 = 0, ctx1024 = 0, ctx768 = 0;
    for (int i = 0; i < n; i++) {
        const char *k = keys[i];
        if (has(k, "lora_te2_") || has(k, "text_encoder_2.")) te2++;
        if (has(k, "add_embedding") || has(k, "label_emb")) xl_emb++;
        if (has(k, "layers.") && (has(k, "q_proj") || has(k, "gate_proj") || has(k, "o_proj")) &&
            !has(k, "text_model"))
            llm++;
        if (has(k, "input_blocks") || has(k, "output_blocks") || has(k, "middle_block")) ldm++;
        if (has(k, "vae.") || has(k, "decoder") || has(k, "encoder_down")) vae++;
        /* attn2 to_k / to_v read the text context: their input width tells the family */
        if (in_dims && (has(k, "attn2.to_k") || has(k, "attn2_to_k") || has(k, "attn2.to_v") ||
                        has(k, "attn2_to_v"))) {
            if (in_dims[i] == 2048) ctx2048++;
            else if (in_dims[i] == 1024) ctx1024++;
            else if (in_dims[i] == 768) ctx768++;
        }
    }
    const char *model = t && t->model_kind[0] ? t->model_kind : "this";
    if ((te2 || xl_emb || ctx2048) && !(t && t->has_te2))
        snprintf(out, size,
                 "looks like an SDXL adapter (%s%s%s) on a%s %s model",
                 te2 ? "second text encoder keys" : "", xl_emb ? (te2 ? ", add_embedding" : "add_embedding") : "",
                 ctx2048 ? ((te2 || xl_emb) ? ", 2048-wide context" : "2048-wide context") : "",
                 strcmp(model, "SD1") && strcmp(model, "SD2") ? "" : "n", model);
    else if (llm && t && strcmp(t->model_kind, "LLM"))
        snprintf(out, size, "looks like a language-model adapter (decoder layers with q/o/gate "
                            "projections), not for a diffusion model");
    else if (ctx1024 && t && t->context_dim && t->context_dim != 1024)
        snprintf(out, size, "looks like an SD 2.x adapter (1024-wide context) on a model with "
                            "%d-wide context", t->context_dim);
    else if (ctx768 && t && t->context_dim && t->context_dim != 768)
        snprintf(out, size, "looks like an SD 1.x adapter (768-wide context) on a model with "
                            "%d-wide context", t->context_dim);
    else if (ldm)
        snprintf(out, size, "original (LDM) UNet block names that this model's layout does not "
                            "have: the adapter was made for a model with other block counts");
    else if (vae)
        snprintf(out, size, "VAE module names: this model's VAE does not have them");
    else
        snprintf(out, size, "names of a different model or architecture");
}

/* The parts of diffusers' SD UNet and transformers' CLIP text encoder module
 * paths that hold '_' themselves; a kohya name splits into these, numbers and
 * the one-word parts below, or it is not guessed. */
static const char *const multi_parts[] = {
    "down_blocks",   "up_blocks",    "mid_block",       "transformer_blocks", "to_q",        "to_k",
    "to_v",          "to_out",       "proj_in",         "proj_out",           "time_emb_proj", "conv_shortcut",
    "conv_in",       "conv_out",     "conv_norm_out",   "time_embedding",     "linear_1",    "linear_2",
    "add_embedding", "text_model",   "self_attn",       "q_proj",             "k_proj",      "v_proj",
    "out_proj",      "final_layer_norm", "layer_norm1", "layer_norm2",        "token_embedding",
    "position_embedding", "text_projection"};
static const char *const single_parts[] = {"attentions", "resnets", "downsamplers", "upsamplers", "conv", "conv1",
                                           "conv2", "norm", "norm1", "norm2", "norm3", "attn1", "attn2", "ff", "net",
                                           "proj", "encoder", "layers", "mlp", "fc1", "fc2", "embeddings"};

int vkl_lora_kohya_guess_internal(const char *kname, char *out, size_t size)
{
    static const char *roots[][2] = {{"lora_unet_", "unet."}, {"lora_te1_", "text_encoder."},
                                     {"lora_te2_", "text_encoder_2."}, {"lora_te_", "text_encoder."}};
    const char *rest = NULL, *root = NULL;
    for (size_t i = 0; i < sizeof roots / sizeof roots[0] && !rest; i++)
        if ((rest = after(kname, roots[i][0]))) root = roots[i][1];
    if (!rest || !*rest) return -1;
    size_t k = (size_t)snprintf(out, size, "%s", root);
    while (*rest) {
        size_t best = 0;
        for (size_t i = 0; i < sizeof multi_parts / sizeof *multi_parts; i++) {
            size_t n = strlen(multi_parts[i]);
            if (n > best && !strncmp(rest, multi_parts[i], n) && (rest[n] == '_' || !rest[n])) best = n;
        }
        if (!best) {
            size_t n = strcspn(rest, "_");
            int known = n > 0 && strspn(rest, "0123456789") >= n;
            for (size_t i = 0; i < sizeof single_parts / sizeof *single_parts && !known; i++)
                known = strlen(single_parts[i]) == n && !strncmp(rest, single_parts[i], n);
            if (!known) return -1; /* e.g. the LDM numbering (input_blocks_...): needs the model */
            best = n;
        }
        if (k + best + 2 > size) return -1;
        memcpy(out + k, rest, best);
        k += best;
        rest += best;
        if (*rest == '_') {
            out[k++] = '.';
            rest++;
        }
        out[k] = 0;
    }
    return 0;
}
