/* Encoding with a word-level vocabulary: what tokenizers' Tokenizer.encode
 * gives without the post-processor (vkl_clip_encode's callers add BOS/EOS). */
#include <stdlib.h>
#include <string.h>

#include "word_level.h"

static int encode_piece(const vkl_clip_tokenizer *t, const char *s, size_t len, vkl_i32buf *out, vkl_err *e)
{
    char *words;
    vkl_i32buf spans = {0};
    if (vkl_wl_pretokenize(s, len, t->wl_lowercase, "prompt", &words, &spans, e))
        return -1;
    int rc = 0;
    for (size_t k = 0; k < spans.n && !rc; k += 2) {
        int32_t id = vkl_strmap_get(&t->vocab, words + spans.v[k], (size_t)(spans.v[k + 1] - spans.v[k]));
        if (vkl_i32buf_push(out, id < 0 ? t->unk : id))
            rc = vkl_fail(e, "out of memory encoding a prompt of %zu bytes", len);
    }
    free(words);
    vkl_i32buf_free(&spans);
    return rc;
}

int vkl_wl_encode(const vkl_clip_tokenizer *t, const char *text, size_t len, vkl_i32buf *out, vkl_err *e)
{
    size_t pos = 0;
    while (pos < len) {
        size_t which = 0, mlen;
        size_t at = pos + vkl_wl_find_added(text + pos, len - pos, t->added, t->n_added, &which, &mlen);
        if (at > pos && encode_piece(t, text + pos, at - pos, out, e))
            return -1;
        if (at == len)
            break;
        if (vkl_i32buf_push(out, t->added_id[which]))
            return vkl_fail(e, "out of memory encoding a prompt of %zu bytes", len);
        pos = at + mlen;
    }
    return 0;
}
