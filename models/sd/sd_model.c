#include "sd/sd_model.h"
#include "quant.h"
#include "io/text.h"

#include "sd/sd_weights.h"
#include "sd/sdxl_prompt.h"

#include <cjson/cJSON.h>

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void vkl_sd_model_opts_default(vkl_sd_model_opts *o)
{
    memset(o, 0, sizeof *o);
    o->weight_dtype = VKL_F16;
}

static int load_tokenizer(const char *path, const char *explicit_path, vkl_clip_tokenizer **out, vkl_err *e)
{
    const char *where = explicit_path;
    struct stat st;
    if ((!where || !*where) && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) where = path;
    if ((!where || !*where) && !getenv("VKLORA_CLIP_VOCAB"))
        return vkl_fail(e, "%s is a single-file checkpoint, which carries no tokenizer vocabulary: pass "
                           "--tokenizer PATH or set VKLORA_CLIP_VOCAB to a folder with vocab.json + merges.txt "
                           "or a word-level tokenizer.json (e.g. a diffusers tokenizer/ folder) or to "
                           "bpe_simple_vocab_16e6.txt.gz", path);
    return vkl_clip_tokenizer_load(out, where, e);
}

/* SDXL's second tokenizer: the folder's tokenizer_2/, else the first one's
 * vocabulary padded with "!" as OpenCLIP bigG's tokenizer pads (what
 * diffusers pairs with a single-file SDXL checkpoint). */
static int load_tokenizer2(vkl_sd_model *m, const char *path, const char *explicit_path, vkl_err *e)
{
    const char *bases[2] = {explicit_path, path};
    for (int i = 0; i < 2; i++) {
        struct stat st;
        char sub[4096];
        if (!bases[i] || !*bases[i]) continue;
        snprintf(sub, sizeof sub, "%s/tokenizer_2", bases[i]);
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) return vkl_clip_tokenizer_load(&m->tok2, sub, e);
    }
    if (load_tokenizer(path, explicit_path, &m->tok2, e)) return -1;
    if (vkl_clip_set_pad(m->tok2, "!", e)) return -1;
    return 0;
}

/* force_zeros_for_empty_prompt of a diffusers folder's model_index.json;
 * the pipeline class's default (on for SDXL) when absent. */
static int read_force_zeros(const char *path, int dflt)
{
    char p[4096];
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return dflt;
    snprintf(p, sizeof p, "%s/model_index.json", path);
    char *text = NULL;
    if (vkl_read_text_file(p, 1 << 20, &text, NULL, NULL)) return dflt;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *f = j ? cJSON_GetObjectItemCaseSensitive(j, "force_zeros_for_empty_prompt") : NULL;
    int v = cJSON_IsBool(f) ? cJSON_IsTrue(f) : dflt;
    cJSON_Delete(j);
    return v;
}

int vkl_sd_model_load(vkl_ctx *c, const char *path, const vkl_sd_model_opts *o, vkl_sd_model **out, vkl_err *e)
{
    vkl_sd_model_opts def;
    if (!o) {
        vkl_sd_model_opts_default(&def);
        o = &def;
    }
    *out = NULL;
    vkl_sd_model *m = calloc(1, sizeof *m);
    if (!m) return vkl_fail(e, "out of host memory");
    m->ctx = c;
    snprintf(m->path, sizeof m->path, "%s", path);
    vkl_sd_source_opts so = {o->yaml, 0};
    if (vkl_sd_source_open(path, &so, &m->src, e)) goto fail;
    m->cfg = vkl_sd_source_config(m->src);
    if (load_tokenizer(path, o->tokenizer, &m->tok, e)) goto fail;
    if (m->cfg->n_text_encoders == 2 && load_tokenizer2(m, path, o->tokenizer, e)) goto fail;
    /* an SD 2.x single file carries no tokenizer config: pad with "!" (id 0)
     * as SD 2.x's own tokenizer (and OpenCLIP, and AUTOMATIC1111) does */
    struct stat pst;
    if (m->cfg->family == VKL_SD_FAMILY_SD2 && stat(path, &pst) == 0 && !S_ISDIR(pst.st_mode) &&
        vkl_clip_token_id(m->tok, "!") >= 0 && vkl_clip_set_pad(m->tok, "!", e))
        goto fail;
    m->force_zeros_for_empty_prompt = read_force_zeros(path, m->cfg->family == VKL_SD_FAMILY_SDXL);
    m->w = vkl_weights_new();
    if (!m->w) {
        vkl_fail(e, "out of host memory");
        goto fail;
    }
    m->weight_dtype = o->weight_dtype == VKL_F32 || vkl_dtype_is_quant(o->weight_dtype) ? o->weight_dtype : VKL_F16;
    m->lowvram = o->lowvram;
    if (!m->lowvram && vkl_sd_model_acquire(m, VKL_SD_PART_ALL, e)) goto fail;
    m->te = (vkl_clip_text){&m->cfg->te[0], m->w, "text_encoder.", NULL};
    m->te2 = (vkl_clip_text){&m->cfg->te[1], m->w, "text_encoder_2.", NULL};
    m->unet = (vkl_unet){&m->cfg->unet, m->w, NULL, 0};
    m->vae = (vkl_vae){&m->cfg->vae, m->w};
    *out = m;
    return 0;
fail:
    vkl_err_prefix(e, "loading model %s: ", path);
    vkl_sd_model_free(m);
    return -1;
}

void vkl_sd_model_free(vkl_sd_model *m)
{
    if (!m) return;
    vkl_weights_free(m->w);
    vkl_clip_tokenizer_free(m->tok);
    vkl_clip_tokenizer_free(m->tok2);
    vkl_sd_source_close(m->src);
    free(m);
}

static const char *part_prefix(int part)
{
    /* "text_encoder" also covers SDXL's text_encoder_2 */
    return part == VKL_SD_PART_TE ? "text_encoder" : part == VKL_SD_PART_UNET ? "unet." : "vae.";
}

int vkl_sd_model_acquire(vkl_sd_model *m, int parts, vkl_err *e)
{
    for (int part = VKL_SD_PART_TE; part <= VKL_SD_PART_VAE; part <<= 1) {
        if (!(parts & part) || (m->resident & part)) continue;
        /* the VAE decoder runs in fp32: fp16 decoding of SD 1.x overflows */
        vkl_dtype dt = part == VKL_SD_PART_VAE ? VKL_F32 : m->weight_dtype;
        if (vkl_sd_load_weights(m->ctx, m->src, part_prefix(part), dt, m->w, e)) {
            vkl_weights_drop_prefix(m->w, part_prefix(part)); /* no half-loaded network */
            return -1;
        }
        m->resident |= part;
    }
    return 0;
}

void vkl_sd_model_release(vkl_sd_model *m, int parts)
{
    if (!m->lowvram) return;
    for (int part = VKL_SD_PART_TE; part <= VKL_SD_PART_VAE; part <<= 1) {
        if (!(parts & part) || !(m->resident & part) || (m->pinned & part)) continue;
        vkl_weights_drop_prefix(m->w, part_prefix(part));
        m->resident &= ~part;
    }
}

int vkl_sd_model_pin(vkl_sd_model *m, int parts, vkl_err *e)
{
    if (vkl_sd_model_acquire(m, parts, e)) return -1;
    m->pinned |= parts;
    return 0;
}

int vkl_sd_text_tokens(const vkl_sd_model *m)
{
    int p = m->cfg->te[0].max_positions;
    return p > 0 && p < VKL_CLIP_CONTEXT ? p : VKL_CLIP_CONTEXT;
}

static int run_encoder(vkl_sd_model *m, const int32_t *ids, int rows, int skip, float *out, vkl_err *e)
{
    int64_t shape[2] = {rows, vkl_sd_text_tokens(m)};
    vkl_tensor *t = vkl_tensor_new(m->ctx, VKL_I32, 2, shape, e);
    if (!t) return -1;
    int rc = -1;
    vkl_graph *g = vkl_graph_new(m->ctx);
    if (vkl_tensor_upload(m->ctx, t, ids, VKL_I32, e)) goto done;
    vkl_tensor *y = vkl_clip_text_forward(g, &m->te, t, skip, 1, NULL);
    vkl_graph_keep(g, y);
    if (vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(m->ctx, y, out, VKL_F32, e)) goto done;
    rc = 0;
done:
    if (rc) vkl_err_prefix(e, "text encoder: ");
    vkl_graph_free(g);
    vkl_tensor_free(t);
    return rc;
}

int vkl_sd_context_width(const vkl_sd_model *m)
{
    return m->cfg->te[0].hidden + (m->cfg->n_text_encoders == 2 ? m->cfg->te[1].hidden : 0);
}

int vkl_sd_pooled_width(const vkl_sd_model *m)
{
    if (m->cfg->n_text_encoders != 2) return 0;
    return m->cfg->te[1].projection_dim > 0 ? m->cfg->te[1].projection_dim : m->cfg->te[1].hidden;
}

void vkl_sd_emphasis(float *z, const float *w, size_t tokens, int width, int c0, int c1)
{
    int weighted = 0;
    for (size_t i = 0; i < tokens; i++) weighted |= w[i] != 1.0f;
    if (!weighted) return;
    double before = 0, after = 0;
    for (size_t t = 0; t < tokens; t++)
        for (int d = c0; d < c1; d++) before += z[t * width + d];
    for (size_t t = 0; t < tokens; t++)
        for (int d = c0; d < c1; d++) z[t * width + d] *= w[t];
    for (size_t t = 0; t < tokens; t++)
        for (int d = c0; d < c1; d++) after += z[t * width + d];
    if (after != 0) {
        float f = (float)(before / after);
        for (size_t t = 0; t < tokens; t++)
            for (int d = c0; d < c1; d++) z[t * width + d] *= f;
    }
}

int vkl_sd_encode_prompt(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks, float **out,
                         int *chunks, vkl_err *e)
{
    return vkl_sd_encode_prompt_pooled(m, prompt, clip_skip, plain, min_chunks, out, NULL, chunks, e);
}

int vkl_sd_encode_prompt_pooled(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks,
                                float **out, float **pooled, int *chunks, vkl_err *e)
{
    if (pooled) *pooled = NULL;
    if (m->cfg->n_text_encoders == 2)
        return vkl_sdxl_encode_prompt(m, prompt, clip_skip, plain, min_chunks, out, pooled, chunks, e);
    vkl_prompt_opts po = {0, plain, 20};
    vkl_prompt_tokens pt;
    memset(&pt, 0, sizeof pt);
    if (vkl_clip_encode_prompt(m->tok, prompt, &po, &pt, e)) return -1;
    int n = (int)pt.n_chunks < min_chunks ? min_chunks : (int)pt.n_chunks;
    int D = m->cfg->te[0].hidden;
    int32_t *ids = malloc(sizeof(int32_t) * VKL_CLIP_CONTEXT * (size_t)n);
    float *w = malloc(sizeof(float) * VKL_CLIP_CONTEXT * (size_t)n);
    float *z = malloc(sizeof(float) * VKL_CLIP_CONTEXT * (size_t)n * (size_t)D);
    int rc = -1;
    if (!ids || !w || !z) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    memcpy(ids, pt.ids, sizeof(int32_t) * VKL_CLIP_CONTEXT * pt.n_chunks);
    memcpy(w, pt.weights, sizeof(float) * VKL_CLIP_CONTEXT * pt.n_chunks);
    for (int c = (int)pt.n_chunks; c < n; c++) { /* empty chunks: BOS, EOS, then padding */
        for (int i = 0; i < VKL_CLIP_CONTEXT; i++) {
            ids[c * VKL_CLIP_CONTEXT + i] = i == 0 ? vkl_clip_bos(m->tok) : i == 1 ? vkl_clip_eos(m->tok) : vkl_clip_pad(m->tok);
            w[c * VKL_CLIP_CONTEXT + i] = 1.0f;
        }
    }
    /* rows cut to the encoder's T positions (in place: row c moves down) */
    int T = vkl_sd_text_tokens(m);
    for (int c = 0; T < VKL_CLIP_CONTEXT && c < n; c++) {
        memmove(ids + (size_t)c * T, ids + (size_t)c * VKL_CLIP_CONTEXT, sizeof *ids * (size_t)T);
        memmove(w + (size_t)c * T, w + (size_t)c * VKL_CLIP_CONTEXT, sizeof *w * (size_t)T);
    }
    int skip = clip_skip > 1 ? clip_skip - 1 : 0;
    if (vkl_sd_model_acquire(m, VKL_SD_PART_TE, e)) goto done;
    if (run_encoder(m, ids, n, skip, z, e)) goto done;
    /* emphasis: scale each token's vector by its weight, then restore the mean
     * (AUTOMATIC1111 does this per chunk group; with all weights 1 it is exact) */
    vkl_sd_emphasis(z, w, (size_t)T * n, D, 0, D);
    *out = z;
    z = NULL;
    *chunks = n;
    rc = 0;
done:
    free(ids);
    free(w);
    free(z);
    vkl_prompt_tokens_free(&pt);
    return rc;
}
