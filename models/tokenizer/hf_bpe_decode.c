/* Decoding with a byte-level BPE tokenizer.json: tokens -> bytes (the
 * ByteLevel decoder) -> text with invalid UTF-8 replaced as Rust's
 * String::from_utf8_lossy does. */
#include <stdlib.h>
#include <string.h>

#include "hf_bpe_internal.h"

static int put(char **buf, size_t *len, size_t *cap, const void *src, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 64;
        while (*len + n + 1 > c) c *= 2;
        char *g = realloc(*buf, c);
        if (!g) return -1;
        *buf = g;
        *cap = c;
    }
    memcpy(*buf + *len, src, n);
    *len += n;
    return 0;
}

/* A token's bytes: each character through the byte map; a token with a
 * character outside it (an added token such as "<|im_start|>" is in it, one
 * with non-Latin-1 text is not) is its own UTF-8. */
static int token_bytes(const vkl_hfbpe *t, const char *tok, char **buf, size_t *len, size_t *cap)
{
    vkl_ucbuf cp = {0};
    int rc = 0, mapped = !vkl_utf8_decode(tok, strlen(tok), &cp, NULL);
    for (size_t i = 0; mapped && i < cp.n; i++) mapped = cp.v[i] < 512 && t->cp_byte[cp.v[i]] >= 0;
    if (!mapped) rc = put(buf, len, cap, tok, strlen(tok));
    for (size_t i = 0; mapped && !rc && i < cp.n; i++) {
        unsigned char b = (unsigned char)t->cp_byte[cp.v[i]];
        rc = put(buf, len, cap, &b, 1);
    }
    vkl_ucbuf_free(&cp);
    return rc;
}

int vkl_hfbpe_decode_bytes(const vkl_hfbpe *t, const int32_t *ids, int n, int skip_special, char **buf, size_t *len,
                           size_t *cap)
{
    for (int i = 0; i < n; i++) {
        const char *tok = vkl_hfbpe_token(t, ids[i]);
        if (!tok || (skip_special && t->special[ids[i]])) continue; /* tokenizers skips ids it has no token for */
        if (token_bytes(t, tok, buf, len, cap)) return -1;
    }
    return 0;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0; *bad gets the
 * length of the maximal prefix of a valid sequence when it is invalid (>= 1). */
static size_t valid_seq(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) need = 1;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *bad = 1;
        return 0;
    }
    size_t k = 1;
    for (; k <= need; k++) {
        if (k >= n) break;
        unsigned char b = s[k];
        if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
    }
    if (k > need) return need + 1;
    *bad = k;
    return 0;
}

char *vkl_utf8_lossy(const char *s, size_t len)
{
    char *out = NULL;
    size_t n = 0, cap = 0;
    const unsigned char *p = (const unsigned char *)s;
    static const char fffd[] = "\xEF\xBF\xBD";
    for (size_t i = 0; i < len;) {
        size_t bad = 0, k = valid_seq(p + i, len - i, &bad);
        if (k ? put(&out, &n, &cap, p + i, k) : put(&out, &n, &cap, fffd, 3)) {
            free(out);
            return NULL;
        }
        i += k ? k : bad;
    }
    if (put(&out, &n, &cap, "", 0)) {
        free(out);
        return NULL;
    }
    out[n] = 0;
    return out;
}

void vkl_hf_clean_up_spaces(char *s)
{
    static const char *const from[] = {" .", " ?", " !", " ,", " ' ", " n't", " 'm", " 's", " 've", " 're"};
    static const char *const to[] = {".", "?", "!", ",", "'", "n't", "'m", "'s", "'ve", "'re"};
    for (size_t k = 0; k < sizeof from / sizeof *from; k++) {
        size_t fl = strlen(from[k]), tl = strlen(to[k]);
        char *w = s;
        for (const char *r = s; *r;) {
            if (!strncmp(r, from[k], fl)) {
                memcpy(w, to[k], tl); /* shorter than from: never overtakes r */
                w += tl;
                r += fl;
            } else {
                *w++ = *r++;
            }
        }
        *w = 0;
    }
}

char *vkl_hfbpe_decode(const vkl_hfbpe *t, const int32_t *ids, int n, int skip_special)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (vkl_hfbpe_decode_bytes(t, ids, n, skip_special, &buf, &len, &cap)) {
        free(buf);
        return NULL;
    }
    char *s = vkl_utf8_lossy(buf ? buf : "", len);
    free(buf);
    if (s && t->cleanup) vkl_hf_clean_up_spaces(s);
    return s;
}
