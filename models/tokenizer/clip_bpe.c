/* Byte-level BPE with CLIP's end-of-word marker: a word starts as one symbol
 * per byte, the last carrying "</w>", and the lowest-ranked adjacent pair is
 * merged everywhere until no pair has a rank. Results are cached per word,
 * since prompts repeat words. */
#include <stdlib.h>
#include <string.h>

#include "clip_internal.h"

#define CACHE_MAX_WORDS (1 << 16)
/* Each merge pass is linear in the word and a word may need as many passes as
 * it has bytes, so unbounded words could take minutes; no prompt needs more. */
#define MAX_WORD_BYTES 16384

int vkl_clip_bpe(vkl_clip_tokenizer *t, const char *word, size_t len, vkl_i32buf *out, vkl_err *e)
{
    int32_t at = vkl_strmap_get(&t->cache, word, len);
    if (at >= 0) {
        int32_t n = t->pool.v[at];
        for (int32_t i = 0; i < n; i++)
            if (vkl_i32buf_push(out, t->pool.v[at + 1 + i]))
                return vkl_fail(e, "out of memory");
        return 0;
    }
    if (len == 0 || len > MAX_WORD_BYTES)
        return vkl_fail(e, "prompt word of %zu bytes: the CLIP tokenizer accepts 1..%d bytes per word",
                        len, MAX_WORD_BYTES);
    int32_t stack[64];
    int32_t *sym = len <= 64 ? stack : malloc(len * sizeof *sym);
    if (!sym)
        return vkl_fail(e, "out of memory");
    const unsigned char *w = (const unsigned char *)word;
    size_t n = len;
    for (size_t i = 0; i < len; i++)
        sym[i] = i + 1 < len ? t->byte_id[w[i]] : t->byte_eow_id[w[i]];
    while (n > 1) {
        uint32_t best = UINT32_MAX;
        int32_t l = 0, r = 0, merged = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            int32_t res;
            uint32_t rank = vkl_clip_merge_find(t, sym[i], sym[i + 1], &res);
            if (rank < best) {
                best = rank;
                l = sym[i];
                r = sym[i + 1];
                merged = res;
            }
        }
        if (best == UINT32_MAX)
            break;
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && sym[i] == l && sym[i + 1] == r) {
                sym[k++] = merged;
                i++;
            } else {
                sym[k++] = sym[i];
            }
        }
        n = k;
    }
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++)
        rc = vkl_i32buf_push(out, sym[i]);
    if (!rc) {
        if (t->cache.count >= CACHE_MAX_WORDS) {
            vkl_strmap_clear(&t->cache);
            t->pool.n = 0;
        }
        int32_t pos = (int32_t)t->pool.n;
        if (t->pool.n + n + 1 < INT32_MAX) {
            rc = vkl_i32buf_push(&t->pool, (int32_t)n);
            for (size_t i = 0; i < n && !rc; i++)
                rc = vkl_i32buf_push(&t->pool, sym[i]);
            if (!rc)
                rc = vkl_strmap_put(&t->cache, word, len, pos);
        }
    }
    if (sym != stack)
        free(sym);
    return rc ? vkl_fail(e, "out of memory") : 0;
}
