/* Encoding with a byte-level BPE tokenizer.json (pipeline in hf_bpe.h). */
#include <stdlib.h>
#include <string.h>

#include "bpe_merge.h"
#include "hf_bpe_internal.h"

/* ---- added tokens: tokenizers' AddedVocabulary::find_matches ---- */

static uint32_t last_cp(const char *s, size_t len)
{
    size_t i = len;
    while (i > 0 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) i--;
    vkl_ucbuf b = {0};
    uint32_t c = 0;
    if (i > 0 && !vkl_utf8_decode(s + i - 1, len - i + 1, &b, NULL) && b.n) c = b.v[0];
    vkl_ucbuf_free(&b);
    return c;
}

static uint32_t first_cp(const char *s, size_t len, size_t *clen)
{
    size_t k = 1;
    while (k < len && ((unsigned char)s[k] & 0xC0) == 0x80) k++;
    vkl_ucbuf b = {0};
    uint32_t c = 0;
    if (len && !vkl_utf8_decode(s, k, &b, NULL) && b.n) c = b.v[0];
    vkl_ucbuf_free(&b);
    *clen = k;
    return c;
}

/* Leftmost, then longest, match at or after `from` of an added token whose
 * normalized flag is `normalized`; its start, or len when none. */
static size_t find_added(const vkl_hfbpe *t, const char *s, size_t len, size_t from, int normalized, size_t *which)
{
    for (size_t i = from; i < len; i++) {
        size_t best = 0;
        for (size_t k = 0; k < t->n_added; k++) {
            const vkl_hf_added *a = &t->added[k];
            if (a->normalized != normalized || a->len > len - i || a->len <= best) continue;
            if (a->content[0] == s[i] && !memcmp(a->content, s + i, a->len)) {
                best = a->len;
                *which = k;
            }
        }
        if (best) return i;
    }
    return len;
}

typedef struct piece {
    size_t start, end;
    int32_t id; /* added token, or -1: text */
} piece;

typedef struct pieces {
    piece *v;
    size_t n, cap;
} pieces;

static int push_piece(pieces *p, size_t start, size_t end, int32_t id)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        piece *g = realloc(p->v, cap * sizeof *g);
        if (!g) return -1;
        p->v = g;
        p->cap = cap;
    }
    p->v[p->n++] = (piece){start, end, id};
    return 0;
}

/* Cuts s[0..len) at the added tokens of one kind: token pieces and the text between. */
static int split_added(const vkl_hfbpe *t, const char *s, size_t len, int normalized, pieces *out)
{
    size_t from = 0, text_start = 0, which = 0;
    for (;;) {
        size_t at = find_added(t, s, len, from, normalized, &which);
        if (at == len) break;
        const vkl_hf_added *a = &t->added[which];
        size_t start = at, stop = at + a->len, clen;
        from = stop;
        if (a->single_word && ((start > 0 && vkl_uc_is_word(last_cp(s, start))) ||
                               (stop < len && vkl_uc_is_word(first_cp(s + stop, len - stop, &clen)))))
            continue;
        if (a->lstrip)
            while (start > text_start && vkl_uc_is_white_space(last_cp(s, start))) {
                size_t k = start - 1;
                while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
                start = k;
            }
        if (a->rstrip)
            while (stop < len && vkl_uc_is_white_space(first_cp(s + stop, len - stop, &clen))) stop += clen;
        if ((start > text_start && push_piece(out, text_start, start, -1)) || push_piece(out, start, stop, a->id))
            return -1;
        text_start = from = stop;
    }
    if (text_start < len && push_piece(out, text_start, len, -1)) return -1;
    return 0;
}

/* ---- BPE of one pre-token ---- */

typedef struct word {
    const vkl_hfbpe *t;
    int32_t *sym;
} word;

static int pair_of(void *user, int left, int right, float *score)
{
    word *w = user;
    int32_t merged;
    int rank = vkl_hfbpe_merge_find(w->t, w->sym[left], w->sym[right], &merged);
    if (rank < 0) return -1;
    *score = -(float)rank; /* lowest rank first; bpe_merge breaks ties leftmost */
    return merged;
}

static void apply_merge(void *user, int left, int right, int value)
{
    (void)right;
    ((word *)user)->sym[left] = value;
}

/* mapped: the pre-token's bytes as GPT-2 characters (UTF-8), nb of them. */
static int bpe_word(const vkl_hfbpe *t, const char *mapped, size_t len, int nb, vkl_i32buf *out, vkl_err *e)
{
    int32_t whole = t->ignore_merges ? vkl_strmap_get(&t->vocab, mapped, len) : -1;
    if (whole >= 0) return vkl_i32buf_push(out, whole) ? vkl_fail(e, "out of memory") : 0;
    int32_t *sym = malloc(sizeof(int32_t) * (size_t)nb * 2);
    if (!sym) return vkl_fail(e, "out of memory");
    int *order = (int *)(sym + nb), n = 0, rc = 0;
    for (size_t i = 0; i < len && !rc;) {
        size_t k = 1;
        while (i + k < len && ((unsigned char)mapped[i + k] & 0xC0) == 0x80) k++;
        int32_t id = vkl_strmap_get(&t->vocab, mapped + i, k);
        if (id < 0 && t->unk < 0)
            rc = vkl_fail(e, "the tokenizer has no token for the byte character \"%.*s\" and no unk_token", (int)k,
                          mapped + i);
        else if (id < 0 && t->fuse_unk && n && sym[n - 1] == t->unk)
            ; /* fused into the previous unknown */
        else
            sym[n++] = id < 0 ? t->unk : id;
        i += k;
    }
    word w = {t, sym};
    int m = rc ? 0 : vkl_bpe_merge(n, pair_of, apply_merge, &w, order);
    if (!rc && m < 0) rc = vkl_fail(e, "out of memory");
    for (int i = 0; !rc && i < m; i++)
        if (vkl_i32buf_push(out, sym[order[i]])) rc = vkl_fail(e, "out of memory");
    free(sym);
    return rc;
}

/* ---- pre-tokenization and byte mapping of a text piece ---- */

static int split_step(const vkl_hf_pre_step *st, const uint32_t *s, size_t n, vkl_i32buf *spans)
{
    if (st->kind == VKL_PRE_DIGITS) return vkl_hf_digits_split(st->arg, s, n, spans);
    if (st->kind == VKL_PRE_BYTELEVEL && !st->arg) {
        return vkl_i32buf_push(spans, 0) || vkl_i32buf_push(spans, (int32_t)n);
    }
    return vkl_hf_regex_split(st->regex, s, n, spans);
}

static int encode_text(const vkl_hfbpe *t, const uint32_t *cp, size_t n, vkl_i32buf *out, vkl_err *e)
{
    vkl_i32buf cur = {0}, next = {0}, sub = {0};
    char *mapped = malloc(n * 8 + 1);
    int rc = mapped ? 0 : vkl_fail(e, "out of memory");
    if (!rc && (vkl_i32buf_push(&cur, 0) || vkl_i32buf_push(&cur, (int32_t)n))) rc = vkl_fail(e, "out of memory");
    for (int k = 0; !rc && k < t->n_steps; k++) {
        next.n = 0;
        for (size_t p = 0; !rc && p < cur.n; p += 2) {
            size_t a = (size_t)cur.v[p], b = (size_t)cur.v[p + 1];
            sub.n = 0;
            if (split_step(&t->steps[k], cp + a, b - a, &sub)) rc = vkl_fail(e, "out of memory");
            for (size_t q = 0; !rc && q < sub.n; q++)
                if (vkl_i32buf_push(&next, sub.v[q] + (int32_t)a)) rc = vkl_fail(e, "out of memory");
        }
        vkl_i32buf tmp = cur;
        cur = next;
        next = tmp;
    }
    for (size_t p = 0; !rc && p < cur.n; p += 2) {
        size_t len = 0;
        int nb = 0;
        for (int32_t i = cur.v[p]; i < cur.v[p + 1]; i++) {
            unsigned char bytes[4], ch[4];
            size_t k = vkl_utf8_put(cp[i], bytes);
            for (size_t j = 0; j < k; j++, nb++) {
                size_t m = vkl_utf8_put(t->byte_cp[bytes[j]], ch);
                memcpy(mapped + len, ch, m);
                len += m;
            }
        }
        if (nb) rc = bpe_word(t, mapped, len, nb, out, e);
    }
    free(mapped);
    vkl_i32buf_free(&cur);
    vkl_i32buf_free(&next);
    vkl_i32buf_free(&sub);
    return rc;
}

/* A text piece between added tokens: normalised, cut at the normalized added
 * tokens, the rest pre-tokenized and merged. */
static int encode_piece(const vkl_hfbpe *t, const char *s, size_t len, vkl_i32buf *out, vkl_err *e)
{
    vkl_ucbuf raw = {0}, norm = {0}, cp = {0};
    pieces ps = {0};
    int rc = vkl_utf8_decode(s, len, &raw, e);
    char *text = NULL;
    size_t tlen = 0;
    if (!rc && t->nfc && vkl_uc_nfc(raw.v, raw.n, &norm)) rc = vkl_fail(e, "out of memory");
    const vkl_ucbuf *u = t->nfc ? &norm : &raw;
    if (!rc) text = malloc(u->n * 4 + 1);
    if (!rc && !text) rc = vkl_fail(e, "out of memory");
    for (size_t i = 0; !rc && i < u->n; i++) tlen += vkl_utf8_put(u->v[i], (unsigned char *)text + tlen);
    if (!rc && split_added(t, text, tlen, 1, &ps)) rc = vkl_fail(e, "out of memory");
    for (size_t i = 0; !rc && i < ps.n; i++) {
        if (ps.v[i].id >= 0) {
            if (vkl_i32buf_push(out, ps.v[i].id)) rc = vkl_fail(e, "out of memory");
            continue;
        }
        cp.n = 0;
        if (t->prefix_space && text[ps.v[i].start] != ' ' && vkl_ucbuf_push(&cp, ' ')) rc = vkl_fail(e, "out of memory");
        if (!rc) rc = vkl_utf8_decode(text + ps.v[i].start, ps.v[i].end - ps.v[i].start, &cp, e);
        if (!rc) rc = encode_text(t, cp.v, cp.n, out, e);
    }
    free(text);
    free(ps.v);
    vkl_ucbuf_free(&raw);
    vkl_ucbuf_free(&norm);
    vkl_ucbuf_free(&cp);
    return rc;
}

int vkl_hfbpe_encode(const vkl_hfbpe *t, const char *text, int add_special, int32_t **ids, int *n, vkl_err *e)
{
    *ids = NULL;
    *n = 0;
    size_t len = strlen(text);
    vkl_ucbuf check = {0};
    int rc = vkl_utf8_decode(text, len, &check, e); /* a clear error before any cutting */
    vkl_ucbuf_free(&check);
    if (rc) return -1;
    vkl_i32buf out = {0};
    pieces ps = {0};
    for (int i = 0; add_special && i < t->n_before && !rc; i++)
        if (vkl_i32buf_push(&out, t->before[i])) rc = vkl_fail(e, "out of memory");
    if (!rc && split_added(t, text, len, 0, &ps)) rc = vkl_fail(e, "out of memory");
    for (size_t i = 0; !rc && i < ps.n; i++) {
        if (ps.v[i].id >= 0) rc = vkl_i32buf_push(&out, ps.v[i].id) ? vkl_fail(e, "out of memory") : 0;
        else rc = encode_piece(t, text + ps.v[i].start, ps.v[i].end - ps.v[i].start, &out, e);
    }
    for (int i = 0; add_special && i < t->n_after && !rc; i++)
        if (vkl_i32buf_push(&out, t->after[i])) rc = vkl_fail(e, "out of memory");
    free(ps.v);
    if (rc || out.n > (size_t)1 << 30) {
        vkl_i32buf_free(&out);
        return rc ? -1 : vkl_fail(e, "text too long");
    }
    *ids = out.v;
    *n = (int)out.n;
    return 0;
}
