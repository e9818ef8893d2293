/* Captions as kohya's sd-scripts reads and varies them (library/train_util.py:
 * DreamBoothDataset.read_caption, BaseDataset.process_caption and
 * set_tag_frequency), with Python's str.strip()/str.lower() semantics. */
#include "train/dataset.h"
#include "io/text.h"

#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "tokenizer/strmap.h"
#include "tokenizer/unicode.h"

#define CAPTION_MAX_BYTES (1u << 20)

/* Code point at s[i] (s holds n bytes), its length in *len. A byte that
 * does not start a whole, well-formed sequence inside s reads as U+FFFD of
 * length 1, so text that is not UTF-8 is never read past its end. */
static uint32_t cp_at(const unsigned char *s, size_t i, size_t n, size_t *len)
{
    unsigned c = s[i];
    size_t k = c < 0x80 ? 1 : c < 0xC2 ? 0 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF5 ? 4 : 0;
    *len = 1;
    if (k == 1) return c;
    if (k == 0 || k > n - i) return 0xFFFD;
    for (size_t j = 1; j < k; j++)
        if ((s[i + j] & 0xC0) != 0x80) return 0xFFFD;
    *len = k;
    if (k == 2) return (c & 0x1F) << 6 | (s[i + 1] & 0x3F);
    if (k == 3) return (c & 0x0F) << 12 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
    return (c & 0x07) << 18 | (s[i + 1] & 0x3F) << 12 | (s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
}

/* Python str.strip() on valid UTF-8 s[0..n): the kept range [*b, *b + *len). */
static void py_strip(const char *s, size_t n, size_t *b, size_t *len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, l;
    while (i < n && vkl_uc_is_py_space(cp_at(u, i, n, &l))) i += l;
    size_t end = n;
    while (end > i) {
        size_t k = end - 1;
        while (k > i && (u[k] & 0xC0) == 0x80) k--;
        if (!vkl_uc_is_py_space(cp_at(u, k, n, &l))) break;
        end = k;
    }
    *b = i;
    *len = end - i;
}

static char *dup_range(const char *s, size_t n)
{
    char *r = (char *)malloc(n + 1);
    if (!r) return NULL;
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

int vkl_caption_read_file(const char *path, char **out, int *empty, vkl_err *e)
{
    *out = NULL;
    *empty = 0;
    uint8_t *buf;
    size_t size;
    if (vkl_read_file_bytes(path, CAPTION_MAX_BYTES, &buf, &size, e)) return -1;
    vkl_ucbuf cps = {0};
    if (vkl_utf8_decode((const char *)buf, size, &cps, e)) {
        vkl_ucbuf_free(&cps);
        free(buf);
        vkl_err_prefix(e, "caption %s is not UTF-8: ", path);
        return -1;
    }
    vkl_ucbuf_free(&cps);
    const char *s = (const char *)buf;
    size_t n = size;
    /* Python's "utf-8" codec would keep a BOM as U+FEFF in the caption; editors
     * on Windows add one, and it is never meant as text */
    if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        n -= 3;
    }
    if (n == 0) *empty = 1;
    /* readlines() with universal newlines: \n, \r\n and \r end a line */
    size_t line = 0;
    while (line < n && s[line] != '\n' && s[line] != '\r') line++;
    size_t b, len;
    py_strip(s, line, &b, &len);
    *out = dup_range(s + b, len);
    free(buf);
    if (!*out) return vkl_fail(e, "caption %s: out of memory", path);
    return 0;
}

/* ---- process_caption ---- */

typedef struct {
    const char *s;
    size_t n;
} span;

static int is_word_byte(unsigned char c)
{
    return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
           (c >= 'A' && c <= 'Z');
}

/* The trigger counts as present when it occurs as a whole word anywhere
 * (so "a painting in mystyle style" keeps its wording). */
static int has_word(const char *cap, const char *word)
{
    size_t wn = strlen(word);
    if (!wn) return 1;
    for (const char *p = strstr(cap, word); p; p = strstr(p + 1, word)) {
        int left = p == cap || !is_word_byte((unsigned char)p[-1]);
        int right = !is_word_byte((unsigned char)p[wn]);
        if (left && right) return 1;
    }
    return 0;
}

int vkl_caption_process(const vkl_caption_opts *o, const char *caption, uint64_t seed,
                        uint32_t epoch, uint32_t slot, char **out, vkl_err *e)
{
    *out = NULL;
    if (o->keep_tokens < 0 || !(o->dropout_rate >= 0 && o->dropout_rate <= 1) ||
        !(o->tag_dropout_rate >= 0 && o->tag_dropout_rate <= 1))
        return vkl_fail(e, "caption options out of range: keep tokens %d (>= 0), dropout %g and "
                           "tag dropout %g (0..1)",
                        o->keep_tokens, o->dropout_rate, o->tag_dropout_rate);
    const char *trig = o->trigger && o->trigger[0] ? o->trigger : NULL;
    int prepended = trig && !has_word(caption, trig);
    size_t n = strlen(caption) + (trig ? strlen(trig) + 2 : 0);
    char *cap = (char *)malloc(n + 1);
    if (!cap) return vkl_fail(e, "out of memory processing a caption");
    if (prepended)
        snprintf(cap, n + 1, "%s%s%s", trig, caption[0] ? ", " : "", caption);
    else
        snprintf(cap, n + 1, "%s", caption);

    if (o->dropout_rate > 0 &&
        vkl_ds_rand_unit(seed, VKL_DS_RNG_CAPTION, epoch, slot, 0) < o->dropout_rate) {
        cap[0] = 0;
        *out = cap;
        return 0;
    }
    if (!o->shuffle && !(o->tag_dropout_rate > 0)) {
        *out = cap;
        return 0;
    }
    /* tokens = [t.strip() for t in caption.strip().split(",")] */
    size_t b, len;
    py_strip(cap, strlen(cap), &b, &len);
    size_t ntok = 1;
    for (size_t i = b; i < b + len; i++) ntok += cap[i] == ',';
    span *tok = (span *)malloc(sizeof *tok * ntok);
    if (!tok) {
        free(cap);
        return vkl_fail(e, "out of memory processing a caption");
    }
    size_t k = 0, start = b;
    for (size_t i = b; i <= b + len; i++) {
        if (i == b + len || cap[i] == ',') {
            size_t tb, tl;
            py_strip(cap + start, i - start, &tb, &tl);
            tok[k].s = cap + start + tb;
            tok[k].n = tl;
            k++;
            start = i + 1;
        }
    }
    size_t keep = (size_t)o->keep_tokens + (size_t)prepended;
    if (keep > ntok) keep = ntok;
    span *flex = tok + keep;
    size_t nflex = ntok - keep;
    if (o->shuffle) /* random.shuffle: Fisher-Yates from the end */
        for (size_t i = nflex; i-- > 1;) {
            uint32_t r = vkl_ds_rand_u32(seed, VKL_DS_RNG_CAPTION, epoch, slot, (uint32_t)(1 + i));
            size_t j = (size_t)(((uint64_t)r * (i + 1)) >> 32);
            span t = flex[i];
            flex[i] = flex[j];
            flex[j] = t;
        }
    size_t kept = nflex;
    if (o->tag_dropout_rate > 0) {
        kept = 0;
        for (size_t i = 0; i < nflex; i++)
            if (vkl_ds_rand_unit(seed, VKL_DS_RNG_CAPTION, epoch, slot, 0x80000000u + (uint32_t)i) >=
                o->tag_dropout_rate)
                flex[kept++] = flex[i];
    }
    size_t total = keep + kept;
    char *res = (char *)malloc(n + 2 * total + 1);
    if (!res) {
        free(tok);
        free(cap);
        return vkl_fail(e, "out of memory processing a caption");
    }
    size_t w = 0;
    for (size_t i = 0; i < total; i++) {
        if (i) {
            res[w++] = ',';
            res[w++] = ' ';
        }
        memcpy(res + w, tok[i].s, tok[i].n);
        w += tok[i].n;
    }
    res[w] = 0;
    free(tok);
    free(cap);
    *out = res;
    return 0;
}

/* ---- metadata JSON, formatted as Python's json.dumps (ensure_ascii) ---- */

static void put_json_string(vkl_strbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    char tmp[16];
    vkl_strbuf_putn(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t l;
        uint32_t c = cp_at(u, i, n, &l);
        i += l;
        if (c == '"') vkl_strbuf_puts(b, "\\\"");
        else if (c == '\\') vkl_strbuf_puts(b, "\\\\");
        else if (c == '\n') vkl_strbuf_puts(b, "\\n");
        else if (c == '\r') vkl_strbuf_puts(b, "\\r");
        else if (c == '\t') vkl_strbuf_puts(b, "\\t");
        else if (c == '\b') vkl_strbuf_puts(b, "\\b");
        else if (c == '\f') vkl_strbuf_puts(b, "\\f");
        else if (c >= 0x20 && c < 0x7F) {
            tmp[0] = (char)c;
            vkl_strbuf_putn(b, tmp, 1);
        } else if (c < 0x10000) {
            snprintf(tmp, sizeof tmp, "\\u%04x", (unsigned)c);
            vkl_strbuf_puts(b, tmp);
        } else {
            uint32_t v = c - 0x10000;
            snprintf(tmp, sizeof tmp, "\\u%04x\\u%04x", 0xD800 + (unsigned)(v >> 10),
                     0xDC00 + (unsigned)(v & 0x3FF));
            vkl_strbuf_puts(b, tmp);
        }
    }
    vkl_strbuf_putn(b, "\"", 1);
}

/* Python str.lower() of a UTF-8 tag, malloc'd. */
static char *py_lower(const char *s, size_t n)
{
    vkl_ucbuf in = {0}, low = {0};
    char *r = NULL;
    if (vkl_utf8_decode(s, n, &in, NULL) == 0 && vkl_uc_lower(in.v, in.n, &low) == 0) {
        r = (char *)malloc(low.n * 4 + 1);
        if (r) {
            size_t w = 0;
            for (size_t i = 0; i < low.n; i++) w += vkl_utf8_put(low.v[i], (unsigned char *)r + w);
            r[w] = 0;
        }
    }
    vkl_ucbuf_free(&in);
    vkl_ucbuf_free(&low);
    return r;
}

/* Folders without images (the root, often) are left out, as kohya never
 * makes them subsets; -1 for those. */
static int first_subset_named(const vkl_dataset *d, int si)
{
    if (d->subsets[si].image_count == 0) return -1;
    for (int k = 0; k < si; k++)
        if (d->subsets[k].image_count > 0 && strcmp(d->subsets[k].name, d->subsets[si].name) == 0) return k;
    return si;
}

char *vkl_dataset_tag_frequency_json(const vkl_dataset *d)
{
    vkl_strbuf b = {0};
    vkl_strbuf_puts(&b, "{");
    int first_dir = 1;
    for (int si = 0; si < d->nsubsets; si++) {
        /* kohya merges folders of the same base name into one entry */
        if (first_subset_named(d, si) != si) continue;
        /* tags in first-seen order with their counts, as a Python dict keeps them */
        vkl_strmap index = {0};
        char **tags = NULL;
        int *counts = NULL;
        int ntags = 0, cap = 0;
        for (int ii = 0; ii < d->nimages && !b.failed; ii++) {
            const vkl_ds_image *im = &d->images[ii];
            if (first_subset_named(d, im->subset) != si) continue;
            const char *c = im->caption;
            size_t cn = strlen(c), start = 0;
            for (size_t i = 0; i <= cn && !b.failed; i++) {
                if (i < cn && c[i] != ',') continue;
                size_t tb, tl;
                py_strip(c + start, i - start, &tb, &tl);
                const char *t = c + start + tb;
                start = i + 1;
                if (!tl) continue;
                char *low = py_lower(t, tl);
                if (!low) {
                    b.failed = 1;
                    break;
                }
                int32_t at = vkl_strmap_get(&index, low, strlen(low));
                if (at >= 0) {
                    counts[at]++;
                    free(low);
                    continue;
                }
                if (ntags == cap) {
                    cap = cap ? 2 * cap : 64;
                    char **nt = (char **)realloc(tags, sizeof *nt * (size_t)cap);
                    if (nt) tags = nt;
                    int *nc = (int *)realloc(counts, sizeof *nc * (size_t)cap);
                    if (nc) counts = nc;
                    if (!nt || !nc) {
                        free(low);
                        b.failed = 1;
                        break;
                    }
                }
                if (vkl_strmap_put(&index, low, strlen(low), ntags)) {
                    free(low);
                    b.failed = 1;
                    break;
                }
                tags[ntags] = low;
                counts[ntags++] = 1;
            }
        }
        if (!first_dir) vkl_strbuf_puts(&b, ", ");
        first_dir = 0;
        put_json_string(&b, d->subsets[si].name, strlen(d->subsets[si].name));
        vkl_strbuf_puts(&b, ": {");
        for (int t = 0; t < ntags; t++) {
            char num[32];
            if (t) vkl_strbuf_puts(&b, ", ");
            put_json_string(&b, tags[t], strlen(tags[t]));
            snprintf(num, sizeof num, ": %d", counts[t]);
            vkl_strbuf_puts(&b, num);
            free(tags[t]);
        }
        vkl_strbuf_puts(&b, "}");
        free(tags);
        free(counts);
        vkl_strmap_free(&index);
    }
    vkl_strbuf_puts(&b, "}");
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

char *vkl_dataset_dirs_json(const vkl_dataset *d)
{
    vkl_strbuf b = {0};
    vkl_strbuf_puts(&b, "{");
    int first = 1;
    for (int si = 0; si < d->nsubsets; si++) {
        if (first_subset_named(d, si) != si) continue;
        int count = 0;
        for (int k = si; k < d->nsubsets; k++)
            if (first_subset_named(d, k) == si) count += d->subsets[k].image_count;
        char num[96];
        if (!first) vkl_strbuf_puts(&b, ", ");
        first = 0;
        put_json_string(&b, d->subsets[si].name, strlen(d->subsets[si].name));
        snprintf(num, sizeof num, ": {\"n_repeats\": %d, \"img_count\": %d}", d->subsets[si].repeats,
                 count);
        vkl_strbuf_puts(&b, num);
    }
    vkl_strbuf_puts(&b, "}");
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
