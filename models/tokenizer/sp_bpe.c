#include "io/text.h"
#include "tokenizer/sp_bpe.h"

#include "tokenizer/bpe_merge.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SP_SPACE "\xe2\x96\x81" /* U+2581 */

typedef struct sp_piece {
    char *s;
    float score;
    int type;
} sp_piece;

struct vkl_sp {
    sp_piece *p;
    int n, cap;
    int *sorted;
    int unk;
    int byte_fallback, add_dummy_prefix, remove_extra_ws, escape_ws;
    int byte_id[256];
};

/* ---- protobuf */

typedef struct pb {
    const uint8_t *p, *end;
} pb;

static int pb_varint(pb *r, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

/* Next field: number, wire type, and for length-delimited fields the payload. */
static int pb_field(pb *r, uint32_t *num, int *wt, uint64_t *val, pb *sub)
{
    uint64_t key;
    if (pb_varint(r, &key)) return -1;
    *num = (uint32_t)(key >> 3);
    *wt = (int)(key & 7);
    switch (*wt) {
    case 0: return pb_varint(r, val);
    case 1:
        if (r->end - r->p < 8) return -1;
        memcpy(val, r->p, 8);
        r->p += 8;
        return 0;
    case 5: {
        if (r->end - r->p < 4) return -1;
        uint32_t w;
        memcpy(&w, r->p, 4);
        *val = w;
        r->p += 4;
        return 0;
    }
    case 2:
        if (pb_varint(r, val) || *val > (uint64_t)(r->end - r->p)) return -1;
        sub->p = r->p;
        sub->end = r->p + *val;
        r->p += *val;
        return 0;
    default: return -1;
    }
}

static int parse_piece(vkl_sp *s, pb *r, const char *label, vkl_err *e)
{
    sp_piece pc = {NULL, 0, VKL_SP_NORMAL};
    while (r->p < r->end) {
        uint32_t num;
        int wt;
        uint64_t v;
        pb sub;
        if (pb_field(r, &num, &wt, &v, &sub)) {
            free(pc.s);
            return vkl_fail(e, "%s: damaged piece %d", label, s->n);
        }
        if (num == 1 && wt == 2) {
            free(pc.s);
            pc.s = malloc((size_t)v + 1);
            if (!pc.s) return vkl_fail(e, "out of host memory");
            memcpy(pc.s, sub.p, (size_t)v);
            pc.s[v] = 0;
            if (strlen(pc.s) != v) {
                free(pc.s);
                return vkl_fail(e, "%s: piece %d contains a NUL byte", label, s->n);
            }
        } else if (num == 2 && wt == 5) {
            uint32_t w = (uint32_t)v;
            memcpy(&pc.score, &w, 4);
        } else if (num == 3 && wt == 0) {
            pc.type = (int)v;
        }
    }
    if (!pc.s) return vkl_fail(e, "%s: piece %d has no text", label, s->n);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 1024;
        sp_piece *np = realloc(s->p, sizeof *np * (size_t)cap);
        if (!np) {
            free(pc.s);
            return vkl_fail(e, "out of host memory");
        }
        s->p = np;
        s->cap = cap;
    }
    s->p[s->n++] = pc;
    return 0;
}

static int parse_flags(vkl_sp *s, pb *r, int trainer, const char *label, vkl_err *e)
{
    while (r->p < r->end) {
        uint32_t num;
        int wt;
        uint64_t v;
        pb sub;
        if (pb_field(r, &num, &wt, &v, &sub)) return vkl_fail(e, "%s: damaged %s spec", label, trainer ? "trainer" : "normalizer");
        if (wt != 0) continue;
        if (trainer && num == 3 && v != 2) return vkl_fail(e, "%s: model_type %llu is not BPE", label, (unsigned long long)v);
        if (trainer && num == 35) s->byte_fallback = v != 0;
        if (!trainer && num == 3) s->add_dummy_prefix = v != 0;
        if (!trainer && num == 4) s->remove_extra_ws = v != 0;
        if (!trainer && num == 5) s->escape_ws = v != 0;
    }
    return 0;
}

static const vkl_sp *sort_sp;
static int cmp_id(const void *a, const void *b)
{
    return strcmp(sort_sp->p[*(const int *)a].s, sort_sp->p[*(const int *)b].s);
}

void vkl_sp_free(vkl_sp *s)
{
    if (!s) return;
    for (int i = 0; i < s->n; i++) free(s->p[i].s);
    free(s->p);
    free(s->sorted);
    free(s);
}

int vkl_sp_load_memory(const void *buf, size_t size, const char *label, vkl_sp **out, vkl_err *e)
{
    *out = NULL;
    vkl_sp *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->add_dummy_prefix = s->remove_extra_ws = s->escape_ws = 1; /* the proto defaults */
    s->unk = -1;
    pb r = {buf, (const uint8_t *)buf + size};
    int rc = 0;
    while (!rc && r.p < r.end) {
        uint32_t num;
        int wt;
        uint64_t v;
        pb sub;
        if (pb_field(&r, &num, &wt, &v, &sub)) rc = vkl_fail(e, "%s: not a SentencePiece model (damaged protobuf)", label);
        else if (num == 1 && wt == 2) rc = parse_piece(s, &sub, label, e);
        else if (num == 2 && wt == 2) rc = parse_flags(s, &sub, 1, label, e);
        else if (num == 3 && wt == 2) rc = parse_flags(s, &sub, 0, label, e);
    }
    if (!rc && !s->n) rc = vkl_fail(e, "%s: no pieces", label);
    if (!rc && !(s->sorted = malloc(sizeof(int) * (size_t)s->n))) rc = vkl_fail(e, "out of host memory");
    if (rc) {
        vkl_sp_free(s);
        return -1;
    }
    for (int i = 0; i < 256; i++) s->byte_id[i] = -1;
    for (int i = 0; i < s->n; i++) {
        s->sorted[i] = i;
        if (s->p[i].type == VKL_SP_UNKNOWN && s->unk < 0) s->unk = i;
        unsigned int b;
        if (s->p[i].type == VKL_SP_BYTE && strlen(s->p[i].s) == 6 && sscanf(s->p[i].s, "<0x%02X>", &b) == 1 && b < 256)
            s->byte_id[b] = i;
    }
    sort_sp = s;
    qsort(s->sorted, (size_t)s->n, sizeof(int), cmp_id);
    *out = s;
    return 0;
}

int vkl_sp_load(const char *path, vkl_sp **out, vkl_err *e)
{
    *out = NULL;
    char *buf;
    size_t size;
    if (vkl_read_text_file(path, (size_t)64 << 20, &buf, &size, e)) return -1;
    int rc = vkl_sp_load_memory(buf, size, path, out, e);
    free(buf);
    return rc;
}

int vkl_sp_size(const vkl_sp *s) { return s->n; }
const char *vkl_sp_piece(const vkl_sp *s, int id) { return id >= 0 && id < s->n ? s->p[id].s : NULL; }
float vkl_sp_score(const vkl_sp *s, int id) { return id >= 0 && id < s->n ? s->p[id].score : 0; }
int vkl_sp_type_of(const vkl_sp *s, int id) { return id >= 0 && id < s->n ? s->p[id].type : 0; }
int vkl_sp_unk(const vkl_sp *s) { return s->unk; }
int vkl_sp_add_dummy_prefix(const vkl_sp *s) { return s->add_dummy_prefix; }

int vkl_sp_find(const vkl_sp *s, const char *piece)
{
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(s->p[s->sorted[mid]].s, piece);
        if (!c) return s->sorted[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

/* a piece that merges may produce */
static int mergeable(const vkl_sp *s, const char *str)
{
    int id = vkl_sp_find(s, str);
    if (id < 0) return -1;
    int t = s->p[id].type;
    return t == VKL_SP_NORMAL || t == VKL_SP_USER_DEFINED ? id : -1;
}

/* Symbols are adjacent spans [st, st + ln) of the normalized text, so a
 * pair's merged piece is the span from the left one's start. */
typedef struct sp_merge {
    const vkl_sp *s;
    const char *norm;
    size_t *st, *ln;
    char *buf;
} sp_merge;

static int sp_pair(void *user, int left, int right, float *score)
{
    sp_merge *mc = user;
    size_t l = mc->ln[left] + mc->ln[right];
    memcpy(mc->buf, mc->norm + mc->st[left], l);
    mc->buf[l] = 0;
    int id = mergeable(mc->s, mc->buf);
    if (id >= 0) *score = mc->s->p[id].score;
    return id;
}

static void sp_apply(void *user, int left, int right, int value)
{
    sp_merge *mc = user;
    (void)value;
    mc->ln[left] += mc->ln[right];
}

static size_t utf8_len(const unsigned char *p, size_t left)
{
    size_t n = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 1;
    if (n > left) return 1;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80) return 1;
    return n;
}

int vkl_sp_encode(const vkl_sp *s, const char *text, int32_t **ids, int *n, vkl_err *e)
{
    *ids = NULL;
    *n = 0;
    size_t tl = strlen(text);
    /* normalized text: whitespace handling, then spaces as U+2581 */
    char *norm = malloc(tl * 3 + 8);
    if (!norm) return vkl_fail(e, "out of host memory");
    size_t k = 0;
    const char *t = text, *tend = text + tl;
    if (s->remove_extra_ws) {
        while (t < tend && *t == ' ') t++;
        while (tend > t && tend[-1] == ' ') tend--;
    }
    if (t < tend && s->add_dummy_prefix) {
        memcpy(norm + k, s->escape_ws ? SP_SPACE : " ", s->escape_ws ? 3 : 1);
        k += s->escape_ws ? 3 : 1;
    }
    for (const char *c = t; c < tend; c++) {
        if (*c == ' ' && s->remove_extra_ws && c > t && c[-1] == ' ') continue;
        if (*c == ' ' && s->escape_ws) {
            memcpy(norm + k, SP_SPACE, 3);
            k += 3;
        } else {
            norm[k++] = *c;
        }
    }
    /* symbols: [start, len) into norm */
    size_t *st = malloc(sizeof(size_t) * (k + 1)), *ln = malloc(sizeof(size_t) * (k + 1));
    char *buf = malloc(k + 1);
    int32_t *out = malloc(sizeof(int32_t) * (k * 4 + 1));
    if (!st || !ln || !buf || !out) {
        free(norm); free(st); free(ln); free(buf); free(out);
        return vkl_fail(e, "out of host memory");
    }
    int ns = 0;
    for (size_t i = 0; i < k;) {
        size_t l = utf8_len((const unsigned char *)norm + i, k - i);
        st[ns] = i;
        ln[ns++] = l;
        i += l;
    }
    sp_merge mc = {s, norm, st, ln, buf};
    int *order = malloc(sizeof(int) * (size_t)(ns ? ns : 1));
    int survivors = order ? vkl_bpe_merge(ns, sp_pair, sp_apply, &mc, order) : -1;
    if (survivors < 0) {
        free(norm); free(st); free(ln); free(buf); free(out); free(order);
        return vkl_fail(e, "out of host memory");
    }
    int m = 0;
    for (int o = 0; o < survivors; o++) {
        int i = order[o];
        memcpy(buf, norm + st[i], ln[i]);
        buf[ln[i]] = 0;
        int id = mergeable(s, buf);
        if (id >= 0) {
            out[m++] = id;
        } else if (s->byte_fallback) {
            for (size_t b = 0; b < ln[i]; b++) {
                int bid = s->byte_id[(unsigned char)buf[b]];
                out[m++] = bid >= 0 ? bid : s->unk;
            }
        } else {
            out[m++] = s->unk;
        }
    }
    free(norm); free(st); free(ln); free(buf); free(order);
    for (int i = 0; i < m; i++)
        if (out[i] < 0) {
            free(out);
            return vkl_fail(e, "the tokenizer has no <unk> piece for text it cannot encode");
        }
    *ids = out;
    *n = m;
    return 0;
}

/* Appends bytes[0..nb) as UTF-8, each byte of an invalid sequence as U+FFFD. */
static size_t flush_bytes(const unsigned char *b, size_t nb, char *o)
{
    size_t k = 0;
    for (size_t i = 0; i < nb;) {
        size_t l = utf8_len(b + i, nb - i);
        if (l == 1 && b[i] >= 0x80) {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
        } else {
            memcpy(o + k, b + i, l);
            k += l;
        }
        i += l;
    }
    return k;
}

char *vkl_sp_decode(const vkl_sp *s, const int32_t *ids, int n)
{
    size_t cap = 16;
    for (int i = 0; i < n; i++) cap += (ids[i] >= 0 && ids[i] < s->n ? strlen(s->p[ids[i]].s) : 0) * 3 + 8;
    char *o = malloc(cap);
    unsigned char *bytes = malloc((size_t)n + 1);
    if (!o || !bytes) {
        free(o);
        free(bytes);
        return NULL;
    }
    size_t k = 0, nb = 0;
    int first = 1;
    for (int i = 0; i < n; i++) {
        int id = ids[i];
        if (id < 0 || id >= s->n) continue;
        const sp_piece *p = &s->p[id];
        if (p->type == VKL_SP_BYTE) {
            unsigned int b;
            if (sscanf(p->s, "<0x%02X>", &b) == 1) bytes[nb++] = (unsigned char)b;
            first = 0;
            continue;
        }
        k += flush_bytes(bytes, nb, o + k);
        nb = 0;
        if (p->type == VKL_SP_CONTROL) continue;
        if (p->type == VKL_SP_UNKNOWN) {
            memcpy(o + k, " \xe2\x81\x87 ", 5);
            k += 5;
            first = 0;
            continue;
        }
        const char *c = p->s;
        if (first && s->add_dummy_prefix && !strncmp(c, SP_SPACE, 3)) c += 3;
        first = 0;
        for (; *c; c++) {
            if (!strncmp(c, SP_SPACE, 3)) {
                o[k++] = ' ';
                c += 2;
            } else {
                o[k++] = *c;
            }
        }
    }
    k += flush_bytes(bytes, nb, o + k);
    o[k] = 0;
    free(bytes);
    return o;
}
