/* The vocabulary tables: token strings <-> ids, byte symbols and merge ranks,
 * whichever file form they came from. */
#include <stdlib.h>
#include <string.h>

#include "clip_internal.h"

int vkl_i32buf_push(vkl_i32buf *b, int32_t x)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        int32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = x;
    return 0;
}

void vkl_i32buf_free(vkl_i32buf *b)
{
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

/* GPT-2 maps the printable Latin-1 bytes to themselves and the other 68 bytes
 * to U+0100.. in byte order, so every token is printable text. */
static int printable(int b)
{
    return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t vkl_clip_byte_cp(int b)
{
    if (printable(b))
        return (uint32_t)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        n += !printable(x);
    return 256u + (uint32_t)n;
}

int vkl_clip_byte_order(int i)
{
    for (int b = 0, k = 0; b < 256; b++)
        if (printable(b) && k++ == i)
            return b;
    for (int b = 0, k = 188; b < 256; b++)
        if (!printable(b) && k++ == i)
            return b;
    return -1;
}

int vkl_clip_vocab_add(vkl_clip_tokenizer *t, const char *tok, size_t len, int32_t id)
{
    if (id < 0)
        return -1;
    if ((size_t)id >= t->n_vocab) {
        size_t n = (size_t)id + 1;
        if (n > t->str_off_cap) {
            /* ids mostly arrive in order: growing by one each time would copy
             * the table once per token */
            size_t cap = t->str_off_cap ? t->str_off_cap * 2 : 1024;
            if (cap < n)
                cap = n;
            size_t *off = realloc(t->str_off, cap * sizeof *off);
            if (!off)
                return -1;
            t->str_off = off;
            t->str_off_cap = cap;
        }
        for (size_t i = t->n_vocab; i < n; i++)
            t->str_off[i] = (size_t)-1;
        t->n_vocab = n;
    }
    if (t->strs_len + len + 1 > t->strs_cap) {
        size_t cap = t->strs_cap ? t->strs_cap : 1 << 16;
        while (cap < t->strs_len + len + 1)
            cap *= 2;
        char *s = realloc(t->strs, cap);
        if (!s)
            return -1;
        t->strs = s;
        t->strs_cap = cap;
    }
    memcpy(t->strs + t->strs_len, tok, len);
    t->strs[t->strs_len + len] = 0;
    t->str_off[id] = t->strs_len;
    t->strs_len += len + 1;
    return vkl_strmap_put(&t->vocab, tok, len, id);
}

static int32_t lookup(const vkl_clip_tokenizer *t, const char *s, size_t len)
{
    return vkl_strmap_get(&t->vocab, s, len);
}

int vkl_clip_vocab_finish(vkl_clip_tokenizer *t, const char *what, vkl_err *e)
{
    for (size_t i = 0; i < t->n_vocab; i++)
        if (t->str_off[i] == (size_t)-1)
            return vkl_fail(e, "%s: no token has id %zu (ids must be 0..%zu without gaps)", what, i,
                            t->n_vocab - 1);
    t->bos = lookup(t, "<|startoftext|>", 15);
    t->eos = lookup(t, "<|endoftext|>", 13);
    if (t->bos < 0 || t->eos < 0)
        return vkl_fail(e, "%s: missing special token %s", what,
                        t->bos < 0 ? "<|startoftext|>" : "<|endoftext|>");
    for (int b = 0; b < 256; b++) {
        unsigned char s[8];
        size_t n = vkl_utf8_put(vkl_clip_byte_cp(b), s);
        memcpy(s + n, "</w>", 4);
        t->byte_id[b] = lookup(t, (const char *)s, n);
        t->byte_eow_id[b] = lookup(t, (const char *)s, n + 4);
        if (t->byte_id[b] < 0 || t->byte_eow_id[b] < 0)
            return vkl_fail(e, "%s: byte 0x%02x has no token%s", what, b,
                            t->byte_id[b] < 0 ? "" : " with </w>");
    }
    return 0;
}

static size_t mslot(const vkl_clip_tokenizer *t, uint64_t key)
{
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & (t->mcap - 1);
    while (t->mkey[i] && t->mkey[i] != key)
        i = (i + 1) & (t->mcap - 1);
    return i;
}

int vkl_clip_merge_add(vkl_clip_tokenizer *t, const char *a, size_t alen, const char *b,
                       size_t blen, uint32_t rank, vkl_err *e)
{
    char buf[512];
    if (alen + blen > sizeof buf)
        return vkl_fail(e, "merge rank %u: token longer than %zu bytes", rank, sizeof buf);
    int32_t ia = lookup(t, a, alen), ib = lookup(t, b, blen);
    memcpy(buf, a, alen);
    memcpy(buf + alen, b, blen);
    int32_t ir = lookup(t, buf, alen + blen);
    if (ia < 0 || ib < 0 || ir < 0)
        return vkl_fail(e, "merge rank %u (\"%.*s %.*s\"): token \"%.*s\" is not in the vocabulary",
                        rank, (int)alen, a, (int)blen, b, ia < 0 ? (int)alen : ib < 0 ? (int)blen : (int)(alen + blen),
                        ia < 0 ? a : ib < 0 ? b : buf);
    if ((t->n_merges + 1) * 2 > t->mcap) {
        size_t cap = t->mcap ? t->mcap * 2 : 1 << 16;
        uint64_t *ok = t->mkey;
        uint32_t *orank = t->mrank;
        int32_t *ores = t->mres;
        size_t ocap = t->mcap;
        t->mkey = calloc(cap, sizeof *t->mkey);
        t->mrank = malloc(cap * sizeof *t->mrank);
        t->mres = malloc(cap * sizeof *t->mres);
        t->mcap = cap;
        if (!t->mkey || !t->mrank || !t->mres) {
            free(ok); free(orank); free(ores);
            return vkl_fail(e, "out of memory for %zu merges", t->n_merges);
        }
        for (size_t i = 0; i < ocap; i++) {
            if (!ok[i])
                continue;
            size_t j = mslot(t, ok[i]);
            t->mkey[j] = ok[i];
            t->mrank[j] = orank[i];
            t->mres[j] = ores[i];
        }
        free(ok); free(orank); free(ores);
    }
    uint64_t key = ((uint64_t)(uint32_t)ia << 32 | (uint32_t)ib) + 1;
    size_t i = mslot(t, key);
    if (!t->mkey[i])
        t->n_merges++;
    t->mkey[i] = key;
    t->mrank[i] = rank;
    t->mres[i] = ir;
    return 0;
}

uint32_t vkl_clip_merge_find(const vkl_clip_tokenizer *t, int32_t a, int32_t b, int32_t *res)
{
    if (!t->mcap)
        return UINT32_MAX;
    size_t i = mslot(t, ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1);
    if (!t->mkey[i])
        return UINT32_MAX;
    *res = t->mres[i];
    return t->mrank[i];
}

size_t vkl_clip_vocab_size(const vkl_clip_tokenizer *t) { return t->n_vocab; }
int32_t vkl_clip_bos(const vkl_clip_tokenizer *t) { return t->bos; }
int32_t vkl_clip_eos(const vkl_clip_tokenizer *t) { return t->eos; }

const char *vkl_clip_token_str(const vkl_clip_tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    return t->strs + t->str_off[id];
}

int32_t vkl_clip_token_id(const vkl_clip_tokenizer *t, const char *tok)
{
    return lookup(t, tok, strlen(tok));
}
