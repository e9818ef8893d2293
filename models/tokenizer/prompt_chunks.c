/* A1111's FrozenCLIPEmbedderWithCustomWords.tokenize_line: each parsed span is
 * tokenized on its own, ids are packed into rows of 75, a BREAK closes the row,
 * and a row that fills up within comma_backtrack ids of its last comma moves
 * the ids after that comma into the next row. */
#include <stdlib.h>
#include <string.h>

#include "clip_internal.h"

typedef struct {
    vkl_clip_tokenizer *t;
    vkl_prompt_tokens *out;
    size_t cap;
    int32_t ids[VKL_CLIP_CHUNK];
    float w[VKL_CLIP_CHUNK];
    size_t n;
    long last_comma;
} packer;

static int next_chunk(packer *p, int is_last)
{
    vkl_prompt_tokens *o = p->out;
    if (o->n_chunks == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4;
        int32_t *ids = realloc(o->ids, cap * VKL_CLIP_CONTEXT * sizeof *ids);
        if (!ids)
            return -1;
        o->ids = ids;
        float *w = realloc(o->weights, cap * VKL_CLIP_CONTEXT * sizeof *w);
        if (!w)
            return -1;
        o->weights = w;
        p->cap = cap;
    }
    o->n_tokens += is_last ? p->n : VKL_CLIP_CHUNK;
    int32_t *row = o->ids + o->n_chunks * VKL_CLIP_CONTEXT;
    float *wr = o->weights + o->n_chunks * VKL_CLIP_CONTEXT;
    row[0] = p->t->bos;
    wr[0] = 1.0f;
    /* BOS, ids, EOS, then padding: A1111 also pads after the first EOS with
     * the model's pad id (0 for OpenCLIP encoders) */
    for (size_t i = 0; i < VKL_CLIP_CHUNK + 1; i++) {
        row[1 + i] = i < p->n ? p->ids[i] : i == p->n ? p->t->eos : p->t->pad;
        wr[1 + i] = i < p->n ? p->w[i] : 1.0f;
    }
    wr[VKL_CLIP_CONTEXT - 1] = 1.0f;
    o->n_chunks++;
    p->n = 0;
    p->last_comma = -1;
    return 0;
}

void vkl_prompt_tokens_free(vkl_prompt_tokens *p)
{
    free(p->ids);
    free(p->weights);
    memset(p, 0, sizeof *p);
}

int vkl_clip_encode_prompt(vkl_clip_tokenizer *t, const char *prompt, const vkl_prompt_opts *opts,
                           vkl_prompt_tokens *out, vkl_err *e)
{
    vkl_prompt_opts def = {0, 0, 20};
    if (!opts)
        opts = &def;
    memset(out, 0, sizeof *out);
    vkl_prompt_span *spans = NULL, single;
    size_t n_spans = 0;
    if (opts->plain) {
        single.text = (char *)prompt;
        single.weight = 1.0;
        spans = &single;
        n_spans = 1;
    } else if (vkl_prompt_parse(prompt, &spans, &n_spans, e)) {
        return -1;
    }
    int32_t comma = t->word_level ? t->comma : vkl_clip_token_id(t, ",</w>");
    packer p = {.t = t, .out = out, .last_comma = -1};
    int rc = 0;
    for (size_t s = 0; s < n_spans && !rc; s++) {
        const char *text = spans[s].text;
        float w = (float)spans[s].weight;
        if (!opts->plain && spans[s].weight == -1.0 && strcmp(text, "BREAK") == 0) {
            if (next_chunk(&p, 0))
                rc = vkl_fail(e, "out of memory");
            continue;
        }
        int32_t *ids;
        size_t n;
        if (vkl_clip_encode(t, text, strlen(text), opts->flags, &ids, &n, e)) {
            rc = -1;
            break;
        }
        for (size_t k = 0; k < n && !rc; k++) {
            if (ids[k] == comma) {
                p.last_comma = (long)p.n;
            } else if (opts->comma_backtrack > 0 && p.n == VKL_CLIP_CHUNK && p.last_comma != -1 &&
                       (long)p.n - p.last_comma <= opts->comma_backtrack) {
                size_t at = (size_t)p.last_comma + 1, nr = p.n - at;
                int32_t rid[VKL_CLIP_CHUNK];
                float rw[VKL_CLIP_CHUNK];
                memcpy(rid, p.ids + at, nr * sizeof *rid);
                memcpy(rw, p.w + at, nr * sizeof *rw);
                p.n = at;
                if (next_chunk(&p, 0)) {
                    rc = vkl_fail(e, "out of memory");
                    break;
                }
                memcpy(p.ids, rid, nr * sizeof *rid);
                memcpy(p.w, rw, nr * sizeof *rw);
                p.n = nr;
            }
            if (p.n == VKL_CLIP_CHUNK && next_chunk(&p, 0)) {
                rc = vkl_fail(e, "out of memory");
                break;
            }
            p.ids[p.n] = ids[k];
            p.w[p.n++] = w;
        }
        free(ids);
    }
    if (!rc && (p.n || out->n_chunks == 0) && next_chunk(&p, 1))
        rc = vkl_fail(e, "out of memory");
    if (!opts->plain)
        vkl_prompt_spans_free(spans, n_spans);
    if (rc)
        vkl_prompt_tokens_free(out);
    return rc;
}
