#include "tokenizer/llama2c_tokenizer.h"

#include "tokenizer/bpe_merge.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vkl_l2c_tok {
    int n, max_len;
    char **piece;
    float *score;
    int *sorted; /* ids ordered by piece bytes */
};

void vkl_l2c_tok_free(vkl_l2c_tok *t)
{
    if (!t) return;
    for (int i = 0; t->piece && i < t->n; i++) free(t->piece[i]);
    free(t->piece);
    free(t->score);
    free(t->sorted);
    free(t);
}

int vkl_l2c_tok_vocab(const vkl_l2c_tok *t) { return t->n; }

static const vkl_l2c_tok *sort_tok;
static int cmp_ids(const void *a, const void *b)
{
    return strcmp(sort_tok->piece[*(const int *)a], sort_tok->piece[*(const int *)b]);
}

int vkl_l2c_tok_load(const char *path, int vocab, vkl_l2c_tok **out, vkl_err *e)
{
    *out = NULL;
    if (vocab < 1 || vocab > (1 << 24)) return vkl_fail(e, "%s: vocabulary size %d", path, vocab);
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    vkl_l2c_tok *t = calloc(1, sizeof *t);
    int rc = t ? 0 : vkl_fail(e, "out of host memory");
    if (!rc) {
        t->piece = calloc((size_t)vocab, sizeof *t->piece);
        t->score = calloc((size_t)vocab, sizeof *t->score);
        t->sorted = calloc((size_t)vocab, sizeof *t->sorted);
        if (!t->piece || !t->score || !t->sorted) rc = vkl_fail(e, "out of host memory");
    }
    int32_t maxl = 0;
    if (!rc && (fread(&maxl, 4, 1, f) != 1 || maxl < 1 || maxl > 4096))
        rc = vkl_fail(e, "%s: bad header (max token length)", path);
    for (int i = 0; !rc && i < vocab; i++) {
        int32_t len = 0;
        if (fread(&t->score[i], 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1) {
            rc = vkl_fail(e, "%s: truncated at token %d of %d", path, i, vocab);
            break;
        }
        if (len < 0 || len > maxl) {
            rc = vkl_fail(e, "%s: token %d has length %d (max %d)", path, i, len, maxl);
            break;
        }
        t->piece[i] = malloc((size_t)len + 1);
        if (!t->piece[i]) rc = vkl_fail(e, "out of host memory");
        else if (fread(t->piece[i], 1, (size_t)len, f) != (size_t)len)
            rc = vkl_fail(e, "%s: truncated in token %d", path, i);
        else if (memchr(t->piece[i], 0, (size_t)len))
            rc = vkl_fail(e, "%s: token %d contains a NUL byte", path, i);
        else t->piece[i][len] = 0;
        t->n = i + 1;
    }
    if (!rc && fgetc(f) != EOF) rc = vkl_fail(e, "%s: more data than %d tokens", path, vocab);
    fclose(f);
    if (rc) {
        vkl_l2c_tok_free(t);
        return -1;
    }
    t->max_len = maxl;
    for (int i = 0; i < t->n; i++) t->sorted[i] = i;
    sort_tok = t;
    qsort(t->sorted, (size_t)t->n, sizeof *t->sorted, cmp_ids);
    *out = t;
    return 0;
}

static int lookup(const vkl_l2c_tok *t, const char *s)
{
    int lo = 0, hi = t->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(t->piece[t->sorted[mid]], s);
        if (!c) return t->sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* Symbols are piece ids; a pair merges into the piece spelling both. */
typedef struct l2c_merge {
    const vkl_l2c_tok *t;
    int32_t *v;
    char *buf;
} l2c_merge;

static int l2c_pair(void *user, int left, int right, float *score)
{
    l2c_merge *mc = user;
    const vkl_l2c_tok *t = mc->t;
    int32_t a = mc->v[left], b = mc->v[right];
    if (a < 0 || a >= t->n || b < 0 || b >= t->n) return -1;
    if (strlen(t->piece[a]) + strlen(t->piece[b]) > (size_t)t->max_len * 2) return -1;
    snprintf(mc->buf, (size_t)t->max_len * 2 + 8, "%s%s", t->piece[a], t->piece[b]);
    int id = lookup(t, mc->buf);
    if (id >= 0) *score = t->score[id];
    return id;
}

static void l2c_apply(void *user, int left, int right, int value)
{
    l2c_merge *mc = user;
    (void)right;
    mc->v[left] = value;
}

int vkl_l2c_tok_encode(const vkl_l2c_tok *t, const char *text, int bos, int eos, int32_t **ids, int *n, vkl_err *e)
{
    size_t tl = strlen(text);
    int32_t *v = malloc(sizeof(int32_t) * (tl + 3));
    char *buf = malloc((size_t)t->max_len * 2 + 8);
    *ids = NULL;
    *n = 0;
    if (!v || !buf) {
        free(v);
        free(buf);
        return vkl_fail(e, "out of host memory");
    }
    int k = 0;
    if (bos >= 0) v[k++] = bos;
    if (tl) {
        int sp = lookup(t, " ");
        if (sp >= 0) v[k++] = sp;
    }
    for (size_t i = 0; i < tl;) {
        size_t len = 1;
        while (i + len < tl && len < 4 && ((unsigned char)text[i + len] & 0xC0) == 0x80) len++;
        memcpy(buf, text + i, len);
        buf[len] = 0;
        int id = lookup(t, buf);
        if (id >= 0) {
            v[k++] = id;
        } else {
            /* byte fallback: ids 3..258 are <0x00>..<0xFF> */
            for (size_t b = 0; b < len; b++) {
                int byte_id = (unsigned char)text[i + b] + 3;
                if (byte_id >= t->n) {
                    free(v);
                    free(buf);
                    return vkl_fail(e, "byte 0x%02x of the text has no token: the vocabulary of %d tokens "
                                    "has no byte pieces", (unsigned char)text[i + b], t->n);
                }
                v[k++] = byte_id;
            }
        }
        i += len;
    }
    l2c_merge mc = {t, v, buf};
    int *order = malloc(sizeof(int) * (size_t)(k ? k : 1));
    int survivors = order ? vkl_bpe_merge(k, l2c_pair, l2c_apply, &mc, order) : -1;
    if (survivors < 0) {
        free(v); free(buf); free(order);
        return vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < survivors; i++) v[i] = v[order[i]]; /* order[i] >= i: in place is safe */
    k = survivors;
    free(order);
    if (eos >= 0) v[k++] = eos;
    free(buf);
    *ids = v;
    *n = k;
    return 0;
}

int vkl_l2c_tok_decode(const vkl_l2c_tok *t, int prev, int id, char *buf, size_t size)
{
    if (!size) return 0;
    buf[0] = 0;
    if (id < 0 || id >= t->n) return 0;
    const char *p = t->piece[id];
    if (prev == 1 && p[0] == ' ') p++;
    unsigned int byte;
    char tail;
    if (sscanf(p, "<0x%02X>%c", &byte, &tail) == 1 && strlen(p) == 6) {
        buf[0] = (char)byte;
        buf[1] = 0;
        p = buf;
    }
    if (p[0] && !p[1] && !(isprint((unsigned char)p[0]) || isspace((unsigned char)p[0]))) {
        buf[0] = 0;
        return 0;
    }
    if (p != buf) snprintf(buf, size, "%s", p);
    return (int)strlen(buf);
}
