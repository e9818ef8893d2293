/* SDXL prompt conditioning: each tokenizer cuts the prompt into rows the
 * AUTOMATIC1111 way (they may differ in length: tokenizer_2 splits "!" out),
 * both encoders run on the same number of rows, their penultimate layers are
 * concatenated along channels, and the first row's pooled text_encoder_2
 * output is the pooled embedding. */
#include "sd/sdxl_prompt.h"

#include "sd/sdxl_text.h"

#include <stdlib.h>
#include <string.h>

/* rows [n, T] of a tokenized prompt, empty rows (BOS, EOS, pad) after its own */
static void fill_rows(const vkl_clip_tokenizer *tok, const vkl_prompt_tokens *pt, int n, int T, int32_t *ids, float *w)
{
    for (int c = 0; c < n; c++)
        for (int i = 0; i < T; i++) {
            size_t at = (size_t)c * VKL_CLIP_CONTEXT + i;
            int have = c < (int)pt->n_chunks;
            ids[(size_t)c * T + i] = have ? pt->ids[at] : i == 0 ? vkl_clip_bos(tok) : i == 1 ? vkl_clip_eos(tok)
                                                                                             : vkl_clip_pad(tok);
            w[(size_t)c * T + i] = have ? pt->weights[at] : 1.0f;
        }
}

static vkl_tensor *upload_i32(vkl_ctx *c, int nd, const int64_t *shape, const int32_t *v, vkl_err *e)
{
    vkl_tensor *t = vkl_tensor_new(c, VKL_I32, nd, shape, e);
    if (t && vkl_tensor_upload(c, t, v, VKL_I32, e)) {
        vkl_tensor_free(t);
        return NULL;
    }
    return t;
}

int vkl_sdxl_encode_prompt(vkl_sd_model *m, const char *prompt, int clip_skip, int plain, int min_chunks, float **out,
                           float **pooled, int *chunks, vkl_err *e)
{
    vkl_prompt_opts po = {0, plain, 20};
    vkl_prompt_tokens p1, p2;
    memset(&p1, 0, sizeof p1);
    memset(&p2, 0, sizeof p2);
    if (!m->tok2) return vkl_fail(e, "this model has two text encoders but no second tokenizer");
    if (vkl_clip_encode_prompt(m->tok, prompt, &po, &p1, e)) return -1;
    if (vkl_clip_encode_prompt(m->tok2, prompt, &po, &p2, e)) {
        vkl_prompt_tokens_free(&p1);
        return -1;
    }
    int n = (int)p1.n_chunks;
    if ((int)p2.n_chunks > n) n = (int)p2.n_chunks;
    if (min_chunks > n) n = min_chunks;
    int T = vkl_sd_text_tokens(m), D1 = m->cfg->te[0].hidden, D = vkl_sd_context_width(m);
    int P = vkl_sd_pooled_width(m);
    size_t rows = (size_t)n * T;
    int32_t *ids1 = malloc(sizeof(int32_t) * rows), *ids2 = malloc(sizeof(int32_t) * rows);
    int32_t *pool = malloc(sizeof(int32_t) * (size_t)n);
    float *w1 = malloc(sizeof(float) * rows), *w2 = malloc(sizeof(float) * rows);
    float *z = malloc(sizeof(float) * rows * (size_t)D), *pz = malloc(sizeof(float) * (size_t)n * (P ? P : 1));
    vkl_tensor *t1 = NULL, *t2 = NULL, *tp = NULL;
    vkl_graph *g = NULL;
    int rc = -1;
    if (!ids1 || !ids2 || !pool || !w1 || !w2 || !z || !pz) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    fill_rows(m->tok, &p1, n, T, ids1, w1);
    fill_rows(m->tok2, &p2, n, T, ids2, w2);
    vkl_clip_pool_rows(&m->cfg->te[1], ids2, n, T, pool);
    if (vkl_sd_model_acquire(m, VKL_SD_PART_TE, e)) goto done;
    int64_t shape[2] = {n, T};
    t1 = upload_i32(m->ctx, 2, shape, ids1, e);
    t2 = t1 ? upload_i32(m->ctx, 2, shape, ids2, e) : NULL;
    tp = t2 ? upload_i32(m->ctx, 1, (int64_t[]){n}, pool, e) : NULL;
    if (!tp) goto done;
    g = vkl_graph_new(m->ctx);
    vkl_tensor *pt = NULL;
    vkl_tensor *y = vkl_sdxl_text_forward(g, &m->te, &m->te2, t1, t2, tp, clip_skip > 1 ? clip_skip - 1 : 0, &pt);
    vkl_graph_keep(g, y);
    vkl_graph_keep(g, pt);
    if (vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(m->ctx, y, z, VKL_F32, e) ||
        vkl_tensor_download(m->ctx, pt, pz, VKL_F32, e)) {
        vkl_err_prefix(e, "text encoders: ");
        goto done;
    }
    /* A1111 weights each encoder's output on its own */
    vkl_sd_emphasis(z, w1, rows, D, 0, D1);
    vkl_sd_emphasis(z, w2, rows, D, D1, D);
    if (pooled) {
        if (!(*pooled = malloc(sizeof(float) * (size_t)P))) {
            vkl_fail(e, "out of host memory");
            goto done;
        }
        memcpy(*pooled, pz, sizeof(float) * (size_t)P);
    }
    *out = z;
    z = NULL;
    *chunks = n;
    rc = 0;
done:
    vkl_graph_free(g);
    vkl_tensor_free(t1);
    vkl_tensor_free(t2);
    vkl_tensor_free(tp);
    free(ids1); free(ids2); free(pool); free(w1); free(w2); free(z); free(pz);
    vkl_prompt_tokens_free(&p1);
    vkl_prompt_tokens_free(&p2);
    return rc;
}
