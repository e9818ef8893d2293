/* Byte-level BPE from GGUF metadata (bbpe.h). Merges are looked up by the
 * pair's text "A B" (as the file lists them) and applied by rank through the
 * heap merger of bpe_merge.h; a pre-tokenized piece's bytes map to GPT-2's
 * code points (clip_internal.h's bytes_to_unicode). */
#include "tokenizer/bbpe.h"

#include "tokenizer/bpe_merge.h"
#include "tokenizer/clip_internal.h"
#include "tokenizer/strmap.h"
#include "tokenizer/unicode.h"

#include <stdlib.h>
#include <string.h>

struct vkl_bbpe {
    int n;
    char **tok;
    int *type;
    vkl_strmap vocab;  /* token text -> id */
    vkl_strmap merges; /* "A B" -> rank */
    char byte_str[256][4];
    int byte_len[256];
    int cp_byte[512]; /* code point (< 512) of the byte alphabet -> byte, or -1 */
};

void vkl_bbpe_free(vkl_bbpe *t)
{
    if (!t) return;
    for (int i = 0; i < t->n; i++) free(t->tok[i]);
    free(t->tok);
    free(t->type);
    vkl_strmap_free(&t->vocab);
    vkl_strmap_free(&t->merges);
    free(t);
}

int vkl_bbpe_size(const vkl_bbpe *t) { return t->n; }

int vkl_bbpe_from_gguf(const vkl_gguf_file *f, vkl_bbpe **out, vkl_err *e)
{
    *out = NULL;
    const char *L = vkl_gguf_label(f), *pre = NULL;
    if (vkl_gguf_get_str(f, "tokenizer.ggml.pre", &pre, e) < 0) return -1;
    if (pre && strcmp(pre, "default") && strcmp(pre, "gpt2"))
        return vkl_fail(e, "%s: tokenizer.ggml.pre '%.40s' is not supported (only GPT-2's pattern: default, gpt2)", L,
                        pre);
    const vkl_gguf_kv *tok = vkl_gguf_kv_find(f, "tokenizer.ggml.tokens");
    const vkl_gguf_kv *mer = vkl_gguf_kv_find(f, "tokenizer.ggml.merges");
    const vkl_gguf_kv *ty = vkl_gguf_kv_find(f, "tokenizer.ggml.token_type");
    if (!tok || tok->type != VKL_GGUF_ARRAY || tok->atype != VKL_GGUF_STRING || !tok->n || tok->n > (1u << 24))
        return vkl_fail(e, "%s: tokenizer.ggml.tokens is missing or not an array of strings", L);
    if (!mer || mer->type != VKL_GGUF_ARRAY || mer->atype != VKL_GGUF_STRING || mer->n > (1u << 24))
        return vkl_fail(e, "%s: tokenizer.ggml.merges is missing or not an array of strings", L);
    if (ty && (ty->type != VKL_GGUF_ARRAY || (ty->atype != VKL_GGUF_I32 && ty->atype != VKL_GGUF_U32) || ty->n != tok->n))
        return vkl_fail(e, "%s: tokenizer.ggml.token_type is not an i32 array of %llu", L, (unsigned long long)tok->n);
    vkl_bbpe *t = calloc(1, sizeof *t);
    if (!t) return vkl_fail(e, "out of host memory");
    t->tok = calloc(tok->n, sizeof *t->tok);
    t->type = calloc(tok->n, sizeof *t->type);
    int rc = t->tok && t->type ? 0 : vkl_fail(e, "out of host memory");
    for (uint64_t i = 0; i < tok->n && !rc; i++) {
        t->n = (int)i + 1;
        if (!(t->tok[i] = strdup(tok->strs[i])) || vkl_strmap_put(&t->vocab, tok->strs[i], tok->lens[i], (int32_t)i))
            rc = vkl_fail(e, "out of host memory");
        double type = ty ? vkl_gguf_arr_num(ty, i) : 1;
        if (!rc && !(type >= 1 && type <= 6)) /* checked as a double: a u32 past INT_MAX must not reach int */
            rc = vkl_fail(e, "%s: token %llu has type %g (1 to 6 expected)", L, (unsigned long long)i, type);
        t->type[i] = rc ? 0 : (int)type;
    }
    for (uint64_t i = 0; i < mer->n && !rc; i++) {
        const char *sp = memchr(mer->strs[i], ' ', mer->lens[i]);
        if (!sp || sp == mer->strs[i] || sp == mer->strs[i] + mer->lens[i] - 1)
            rc = vkl_fail(e, "%s: merge %llu '%.40s' is not two tokens separated by a space", L, (unsigned long long)i,
                          mer->strs[i]);
        else if (vkl_strmap_get(&t->merges, mer->strs[i], mer->lens[i]) < 0 &&
                 vkl_strmap_put(&t->merges, mer->strs[i], mer->lens[i], (int32_t)i))
            rc = vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < 512; i++) t->cp_byte[i] = -1;
    for (int b = 0; b < 256 && !rc; b++) {
        uint32_t cp = vkl_clip_byte_cp(b);
        t->byte_len[b] = (int)vkl_utf8_put(cp, (unsigned char *)t->byte_str[b]);
        if (cp < 512) t->cp_byte[cp] = b;
        if (vkl_strmap_get(&t->vocab, t->byte_str[b], (size_t)t->byte_len[b]) < 0)
            rc = vkl_fail(e, "%s: byte 0x%02x has no token (not a byte-level vocabulary)", L, b);
    }
    if (rc) {
        vkl_bbpe_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

/* ---- pre-tokenizer: GPT-2's pattern */

typedef struct { uint32_t cp; size_t at, len; } ch;

static size_t utf8_char(const unsigned char *p, size_t left, uint32_t *cp)
{
    int n = p[0] < 0x80 ? 1 : (p[0] >> 5) == 6 ? 2 : (p[0] >> 4) == 14 ? 3 : (p[0] >> 3) == 30 ? 4 : 0;
    if (!n || (size_t)n > left) return *cp = 0xFFFD, 1; /* a stray byte: one symbol of its own */
    uint32_t v = n == 1 ? p[0] : p[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return *cp = 0xFFFD, 1;
        v = v << 6 | (p[i] & 0x3f);
    }
    *cp = v;
    return (size_t)n;
}

static int is_l(uint32_t c) { return vkl_uc_class(c) == VKL_UC_LETTER; }
static int is_n(uint32_t c) { return vkl_uc_class(c) == VKL_UC_NUMBER; }
static int is_s(uint32_t c) { return vkl_uc_is_white_space(c); }

/* Length in characters of the piece starting at c[i] (n characters left). */
static size_t piece_len(const ch *c, size_t i, size_t n)
{
    static const char *const contr[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    if (c[i].cp == '\'')
        for (size_t k = 0; k < 7; k++) {
            size_t m = strlen(contr[k]);
            if (i + m < n) {
                size_t j = 0;
                while (j < m && c[i + 1 + j].cp == (uint32_t)contr[k][j]) j++;
                if (j == m) return m + 1;
            }
        }
    size_t j = i + (c[i].cp == ' ' && i + 1 < n && !is_s(c[i + 1].cp) ? 1 : 0);
    if (j < n && is_l(c[j].cp)) {
        while (j < n && is_l(c[j].cp)) j++;
        return j - i;
    }
    if (j < n && is_n(c[j].cp)) {
        while (j < n && is_n(c[j].cp)) j++;
        return j - i;
    }
    if (j < n && !is_s(c[j].cp)) {
        while (j < n && !is_s(c[j].cp) && !is_l(c[j].cp) && !is_n(c[j].cp)) j++;
        return j - i;
    }
    /* whitespace: \s+(?!\S) keeps the last space for the word that follows */
    j = i;
    while (j < n && is_s(c[j].cp)) j++;
    if (j < n && j - i > 1) return j - i - 1;
    return j - i;
}

/* ---- BPE over one piece */

typedef struct sym {
    char *s;
    size_t len;
} sym;

typedef struct merge_ctx {
    const vkl_bbpe *t;
    sym *v;
    char *key;
    size_t key_cap;
} merge_ctx;

static int pair_fn(void *user, int left, int right, float *score)
{
    merge_ctx *m = user;
    size_t need = m->v[left].len + 1 + m->v[right].len;
    if (need > m->key_cap) return -1; /* longer than the piece: cannot be a merge */
    memcpy(m->key, m->v[left].s, m->v[left].len);
    m->key[m->v[left].len] = ' ';
    memcpy(m->key + m->v[left].len + 1, m->v[right].s, m->v[right].len);
    int32_t rank = vkl_strmap_get(&m->t->merges, m->key, need);
    if (rank < 0) return -1;
    *score = -(float)rank;
    return rank;
}

static void apply_fn(void *user, int left, int right, int value)
{
    merge_ctx *m = user;
    (void)value;
    /* symbols of one piece are adjacent slices of one buffer: joining is widening */
    m->v[left].len += m->v[right].len;
}

static int push(int32_t **v, int *n, int *cap, int32_t id)
{
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 64;
        int32_t *g = realloc(*v, sizeof **v * (size_t)nc);
        if (!g) return -1;
        *v = g;
        *cap = nc;
    }
    (*v)[(*n)++] = id;
    return 0;
}

static int encode_piece(const vkl_bbpe *t, const unsigned char *p, size_t len, int32_t **ids, int *n, int *cap,
                        vkl_err *e)
{
    /* the piece's bytes in the byte alphabet, back to back */
    char *buf = malloc(4 * len + 1);
    sym *v = malloc(sizeof *v * (len + 1));
    int *order = malloc(sizeof *order * (len + 1));
    merge_ctx m = {t, v, malloc(8 * len + 2), 8 * len + 2};
    int rc = buf && v && order && m.key ? 0 : vkl_fail(e, "out of host memory");
    size_t at = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        v[i].s = buf + at;
        v[i].len = (size_t)t->byte_len[p[i]];
        memcpy(buf + at, t->byte_str[p[i]], v[i].len);
        at += v[i].len;
    }
    int k = rc ? 0 : vkl_bpe_merge((int)len, pair_fn, apply_fn, &m, order);
    if (!rc && k < 0) rc = vkl_fail(e, "out of host memory");
    for (int i = 0; i < k && !rc; i++) {
        int32_t id = vkl_strmap_get(&t->vocab, v[order[i]].s, v[order[i]].len);
        if (id < 0) rc = vkl_fail(e, "tokenizer: merged symbol '%.*s' is not in the vocabulary", (int)v[order[i]].len,
                                  v[order[i]].s);
        else if (push(ids, n, cap, id)) rc = vkl_fail(e, "out of host memory");
    }
    free(buf);
    free(v);
    free(order);
    free(m.key);
    return rc;
}

int vkl_bbpe_encode(const vkl_bbpe *t, const char *text, int32_t **ids, int *n, vkl_err *e)
{
    *ids = NULL;
    *n = 0;
    size_t len = strlen(text), nc = 0;
    ch *c = malloc(sizeof *c * (len + 1));
    if (!c) return vkl_fail(e, "out of host memory");
    for (size_t at = 0; at < len;) {
        size_t k = utf8_char((const unsigned char *)text + at, len - at, &c[nc].cp);
        c[nc].at = at;
        c[nc++].len = k;
        at += k;
    }
    int cap = 0, rc = 0;
    for (size_t i = 0; i < nc && !rc;) {
        size_t k = piece_len(c, i, nc);
        size_t b0 = c[i].at, b1 = c[i + k - 1].at + c[i + k - 1].len;
        rc = encode_piece(t, (const unsigned char *)text + b0, b1 - b0, ids, n, &cap, e);
        i += k;
    }
    free(c);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

char *vkl_bbpe_decode(const vkl_bbpe *t, const int32_t *ids, int n)
{
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    for (int i = 0; out && i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n || t->type[ids[i]] == 3) continue; /* control tokens */
        const unsigned char *s = (const unsigned char *)t->tok[ids[i]];
        size_t sl = strlen((const char *)s);
        for (size_t at = 0; at < sl;) {
            uint32_t cp;
            at += utf8_char(s + at, sl - at, &cp);
            int b = cp < 512 ? t->cp_byte[cp] : -1;
            if (len + 5 > cap) {
                char *g = realloc(out, cap *= 2);
                if (!g) {
                    free(out);
                    return NULL;
                }
                out = g;
            }
            if (b >= 0) out[len++] = (char)b;
            else len += vkl_utf8_put(cp, (unsigned char *)out + len); /* a token outside the byte alphabet */
        }
    }
    if (out) out[len] = 0;
    return out;
}
