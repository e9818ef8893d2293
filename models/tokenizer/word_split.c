/* Text -> words for word-level tokenizers, the same for building a vocabulary
 * from captions and for encoding prompts, so that every caption word is found
 * again at encoding time: added tokens are cut out of the raw text, the rest
 * lower-cased (Hugging Face's Lowercase normalizer maps each char with Rust's
 * char::to_lowercase: the full mapping, but no Final_Sigma) and split by the
 * Whitespace pre-tokenizer's regex \w+|[^\w\s]+. */
#include <stdlib.h>
#include <string.h>

#include "word_level.h"

size_t vkl_wl_find_added(const char *s, size_t len, char *const *toks, size_t n, size_t *which,
                         size_t *mlen)
{
    for (size_t i = 0; i < len; i++) {
        size_t best = 0;
        for (size_t k = 0; k < n; k++) {
            size_t tl = strlen(toks[k]);
            if (tl > best && tl <= len - i && memcmp(s + i, toks[k], tl) == 0) {
                best = tl;
                *which = k;
            }
        }
        if (best) {
            *mlen = best;
            return i;
        }
    }
    *mlen = 0;
    return len;
}

/* Oniguruma matches a bare \w below U+0100 with its Latin-1 ctype table,
 * where the superscript digits and the vulgar fractions are word characters,
 * but the \w inside [^\w\s] with the Unicode property, where they are not:
 * "x²" is one word, "!²" one run of punctuation. */
static int latin1_word(uint32_t c)
{
    return c == 0xB2 || c == 0xB3 || c == 0xB9 || (c >= 0xBC && c <= 0xBE);
}

static int in_word(uint32_t c)
{
    return vkl_uc_is_word(c) || latin1_word(c);
}

static int in_punct(uint32_t c)
{
    return !vkl_uc_is_word(c) && !vkl_uc_is_white_space(c);
}

int vkl_wl_pretokenize(const char *s, size_t len, int lower, const char *what, char **norm,
                       vkl_i32buf *spans, vkl_err *e)
{
    vkl_ucbuf cps = {0}, low = {0};
    *norm = NULL;
    if (vkl_utf8_decode(s, len, &cps, e)) {
        vkl_ucbuf_free(&cps);
        vkl_err_prefix(e, "%s: ", what);
        return -1;
    }
    const vkl_ucbuf *src = &cps;
    int rc = 0;
    if (lower) {
        rc = vkl_uc_lower_chars(cps.v, cps.n, &low);
        src = &low;
    }
    /* 4 bytes per code point at most; offsets must fit the int32 spans */
    char *out = rc || src->n >= (size_t)INT32_MAX / 4 ? NULL : malloc(src->n * 4 + 1);
    size_t at = 0;
    for (size_t i = 0; out && !rc && i < src->n;) {
        /* the regex's alternatives in order: \w+ first, then [^\w\s]+ */
        int (*run)(uint32_t) = in_word(src->v[i]) ? in_word : in_punct(src->v[i]) ? in_punct : NULL;
        if (!run) {
            i++; /* white space */
            continue;
        }
        size_t start = at;
        for (; i < src->n && run(src->v[i]); i++)
            at += vkl_utf8_put(src->v[i], (unsigned char *)out + at);
        rc = vkl_i32buf_push(spans, (int32_t)start) || vkl_i32buf_push(spans, (int32_t)at);
    }
    vkl_ucbuf_free(&cps);
    vkl_ucbuf_free(&low);
    if (!out || rc) {
        free(out);
        return vkl_fail(e, "%s: out of memory splitting %zu bytes of text into words", what, len);
    }
    out[at] = 0;
    *norm = out;
    return 0;
}
