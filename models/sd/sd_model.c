#include "sd/sd_model.h"

#include "sd/sd_weights.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void vkl_sd_model_opts_default(vkl_sd_model_opts *o)
{
    memset(o, 0, sizeof *o);
    o->weight_dtype = VKL_F16;
}

static int load_tokenizer(vkl_sd_model *m, const char *path, const char *explicit_path, vkl_err *e)
{
    const char *where = explicit_path;
    struct stat st;
    if ((!where || !*where) && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) where = path;
    if ((!where || !*where) && !getenv("VKLORA_CLIP_VOCAB"))
        return vkl_fail(e, "%s is a single-file checkpoint, which carries no tokenizer vocabulary: pass "
                           "--tokenizer PATH or set VKLORA_CLIP_VOCAB to a folder with vocab.json + merges.txt "
                           "or a word-level tokenizer.json (e.g. a diffusers tokenizer/ folder) or to "
                           "bpe_simple_vocab_16e6.txt.gz", path);
    return vkl_clip_tokenizer_load(&m->tok, where, e);
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
    if (m->cfg->family == VKL_SD_FAMILY_SDXL) {
        vkl_fail(e, "%s is an SDXL model; this version of vklora generates with SD 1.x and 2.x models", path);
        goto fail;
    }
    if (load_tokenizer(m, path, o->tokenizer, e)) goto fail;
    m->w = vkl_weights_new();
    if (!m->w) {
        vkl_fail(e, "out of host memory");
        goto fail;
    }
    m->weight_dtype = o->weight_dtype == VKL_F32 ? VKL_F32 : VKL_F16;
    m->lowvram = o->lowvram;
    if (!m->lowvram && vkl_sd_model_acquire(m, VKL_SD_PART_ALL, e)) goto fail;
    m->te = (vkl_clip_text){&m->cfg->te[0], m->w, "text_encoder.", NULL};
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
    vkl_sd_source_close(m->src);
    free(m);
}

static const char *part_prefix(int part)
{
    return part == VKL_SD_PART_TE ? "text_encoder." : part == VKL_SD_PART_UNET ? "unet." : "vae.";
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

int vkl_sd_encode_prompt(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks, float **out,
                         int *chunks, vkl_err *e)
{
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
    int weighted = 0;
    for (int i = 0; i < T * n; i++) weighted |= w[i] != 1.0f;
    if (weighted) {
        size_t total = (size_t)T * (size_t)n * (size_t)D;
        double before = 0, after = 0;
        for (size_t i = 0; i < total; i++) before += z[i];
        for (int t = 0; t < T * n; t++)
            for (int d = 0; d < D; d++) z[(size_t)t * D + d] *= w[t];
        for (size_t i = 0; i < total; i++) after += z[i];
        if (after != 0) {
            float f = (float)(before / after);
            for (size_t i = 0; i < total; i++) z[i] *= f;
        }
    }
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
