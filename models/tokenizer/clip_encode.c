/* Prompt -> token ids: special tokens (BOS, EOS, and a pad token such as "!")
 * are cut out of the raw text first (as transformers' added-token split does,
 * case-sensitively), each piece between
 * them is cleaned, pre-split and BPE-encoded. */
#include <stdlib.h>
#include <string.h>

#include "word_level.h"

static const char SOT[] = "<|startoftext|>", EOT[] = "<|endoftext|>";

static int span_is(const uint32_t *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (n != k)
        return 0;
    for (size_t i = 0; i < k; i++)
        if (s[i] != (uint32_t)(unsigned char)lit[i])
            return 0;
    return 1;
}

/* Length of the special token at s[i] (0 when none) and its id. The pad
 * token counts when it is not BOS/EOS (see clip_pad.c). */
static size_t special_at(const vkl_clip_tokenizer *t, const uint32_t *s, size_t n, size_t i, int32_t *id)
{
    size_t a = strlen(SOT), b = strlen(EOT);
    if (s[i] == '<' && i + a <= n && span_is(s + i, a, SOT)) {
        *id = t->bos;
        return a;
    }
    if (s[i] == '<' && i + b <= n && span_is(s + i, b, EOT)) {
        *id = t->eos;
        return b;
    }
    size_t k = t->pad_text.n;
    if (k && i + k <= n && memcmp(s + i, t->pad_text.v, k * sizeof *s) == 0) {
        *id = t->pad;
        return k;
    }
    return 0;
}

static int encode_piece(vkl_clip_tokenizer *t, const uint32_t *s, size_t n, unsigned flags,
                        vkl_i32buf *out, vkl_err *e)
{
    vkl_ucbuf norm = {0};
    vkl_i32buf spans = {0};
    unsigned char *word = NULL;
    int rc = -1;
    if ((flags & VKL_CLIP_FTFY_LIKE) ? vkl_clip_clean_ftfy(s, n, &norm) : vkl_clip_clean_basic(s, n, &norm))
        goto oom;
    if (vkl_clip_presplit(norm.v, norm.n, &spans))
        goto oom;
    word = malloc(norm.n * 4 + 1);
    if (!word)
        goto oom;
    for (size_t k = 0; k < spans.n; k += 2) {
        const uint32_t *w = norm.v + spans.v[k];
        size_t wn = (size_t)(spans.v[k + 1] - spans.v[k]);
        if (span_is(w, wn, SOT) || span_is(w, wn, EOT)) {
            if (vkl_i32buf_push(out, span_is(w, wn, SOT) ? t->bos : t->eos))
                goto oom;
            continue;
        }
        size_t bytes = 0;
        for (size_t i = 0; i < wn; i++)
            bytes += vkl_utf8_put(w[i], word + bytes);
        if (vkl_clip_bpe(t, (const char *)word, bytes, out, e))
            goto done;
    }
    rc = 0;
    goto done;
oom:
    rc = vkl_fail(e, "out of memory encoding a prompt of %zu characters", n);
done:
    free(word);
    vkl_ucbuf_free(&norm);
    vkl_i32buf_free(&spans);
    return rc;
}

int vkl_clip_encode(vkl_clip_tokenizer *t, const char *text, size_t len, unsigned flags,
                    int32_t **ids, size_t *n, vkl_err *e)
{
    vkl_ucbuf cps = {0};
    vkl_i32buf out = {0};
    *ids = NULL;
    *n = 0;
    if (t->word_level) {
        if (vkl_wl_encode(t, text, len, &out, e)) {
            vkl_i32buf_free(&out);
            return -1;
        }
        *ids = out.v;
        *n = out.n;
        return 0;
    }
    if (vkl_utf8_decode(text, len, &cps, e)) {
        vkl_ucbuf_free(&cps);
        return -1;
    }
    size_t piece = 0, i = 0;
    int rc = 0;
    while (i <= cps.n && !rc) {
        int32_t sp_id = -1;
        size_t sp = i < cps.n ? special_at(t, cps.v, cps.n, i, &sp_id) : 0;
        if (i < cps.n && !sp) {
            i++;
            continue;
        }
        if (i > piece)
            rc = encode_piece(t, cps.v + piece, i - piece, flags, &out, e);
        if (!rc && sp && vkl_i32buf_push(&out, sp_id))
            rc = vkl_fail(e, "out of memory");
        if (i == cps.n)
            break;
        i += sp;
        piece = i;
    }
    vkl_ucbuf_free(&cps);
    if (rc) {
        vkl_i32buf_free(&out);
        return -1;
    }
    *ids = out.v;
    *n = out.n;
    return 0;
}

int vkl_clip_encode_padded(vkl_clip_tokenizer *t, const char *text, unsigned flags,
                           int32_t out[VKL_CLIP_CONTEXT], size_t *n_content, vkl_err *e)
{
    int32_t *ids;
    size_t n;
    if (vkl_clip_encode(t, text, strlen(text), flags, &ids, &n, e))
        return -1;
    size_t keep = n < VKL_CLIP_CHUNK ? n : VKL_CLIP_CHUNK;
    out[0] = t->bos;
    if (keep)
        memcpy(out + 1, ids, keep * sizeof *ids);
    for (size_t i = keep + 1; i < VKL_CLIP_CONTEXT; i++)
        out[i] = i == keep + 1 ? t->eos : t->pad;
    free(ids);
    if (n_content)
        *n_content = n;
    return 0;
}
