/* Reading the two name lists. Both files come from Debian packages
 * (unicode-data, unicode-cldr-core) and are trusted to be text, but are read
 * defensively: a line that does not parse is skipped, never a crash. The CLDR
 * file is scanned for <annotation> elements rather than parsed as XML: its
 * layout is one element per line and the annotations are all that is needed. */
#include "emoji_names.h"

#include "io/image.h"
#include "tokenizer/unicode.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define NAME_FILE_MAX_BYTES (64u << 20)

int vkl_emoji_skipped(uint32_t cp)
{
    return cp < 0x80 || (cp >= 0x1F1E6 && cp <= 0x1F1FF) || (cp >= 0x1F3FB && cp <= 0x1F3FF) || cp == 0x200D ||
           cp == 0x20E3 || cp == 0xFE0F || (cp >= 0xE0020 && cp <= 0xE007F);
}

static int cmp_name(const void *a, const void *b)
{
    uint32_t x = ((const vkl_emoji_name *)a)->cp, y = ((const vkl_emoji_name *)b)->cp;
    return x < y ? -1 : x > y;
}

/* Appends (cp, a copy of text[0..len)) to a growing list. */
static int push(vkl_emoji_name **a, size_t *n, size_t *cap, uint32_t cp, const char *text, size_t len, vkl_err *e)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 4096;
        vkl_emoji_name *b = realloc(*a, c * sizeof *b);
        if (!b) return vkl_fail(e, "out of memory for names");
        *a = b;
        *cap = c;
    }
    char *s = malloc(len + 1);
    if (!s) return vkl_fail(e, "out of memory for names");
    memcpy(s, text, len);
    s[len] = 0;
    (*a)[(*n)++] = (vkl_emoji_name){cp, s};
    return 0;
}

/* Sorts by codepoint and keeps the first entry of each (file order). */
static void sort_unique(vkl_emoji_name *a, size_t *n)
{
    size_t k = 0;
    if (*n == 0) return;
    /* insertion sort: stable (qsort is not, and the first entry must win), and
     * fast on UnicodeData, which is sorted already; CLDR has ~2000 entries */
    for (size_t i = 1; i < *n; i++) {
        vkl_emoji_name x = a[i];
        size_t j = i;
        while (j > 0 && cmp_name(&a[j - 1], &x) > 0) a[j] = a[j - 1], j--;
        a[j] = x;
    }
    for (size_t i = 1; i < *n; i++) {
        if (a[i].cp == a[k].cp) free(a[i].name);
        else a[++k] = a[i];
    }
    *n = k + 1;
}

static int load_unicode(vkl_emoji_names *out, const char *path, vkl_err *e)
{
    uint8_t *buf;
    size_t size, cap = 0;
    if (vkl_read_file_bytes(path, NAME_FILE_MAX_BYTES, &buf, &size, e)) return -1;
    int rc = 0;
    for (size_t at = 0; at < size && !rc;) {
        const char *line = (const char *)buf + at;
        const char *end = memchr(line, '\n', size - at);
        size_t len = end ? (size_t)(end - line) : size - at;
        at += len + 1;
        /* "1F34E;RED APPLE;So;0;ON;;;;;N;;;;;" */
        const char *semi = memchr(line, ';', len);
        if (!semi) continue;
        const char *name = semi + 1, *name_end = memchr(name, ';', len - (size_t)(name - line));
        if (!name_end || name_end == name || name[0] == '<') continue; /* <control>, <CJK Ideograph, First>, ... */
        char hex[16];
        size_t hl = (size_t)(semi - line);
        if (hl == 0 || hl >= sizeof hex) continue;
        memcpy(hex, line, hl);
        hex[hl] = 0;
        char *stop;
        unsigned long cp = strtoul(hex, &stop, 16);
        if (*stop || cp > 0x10FFFF) continue;
        size_t nl = (size_t)(name_end - name);
        rc = push(&out->unicode, &out->nunicode, &cap, (uint32_t)cp, name, nl, e);
        if (!rc)
            for (char *p = out->unicode[out->nunicode - 1].name; *p; p++) *p = (char)tolower((unsigned char)*p);
    }
    free(buf);
    if (rc) return vkl_fail(e, "%s: %s", path, e->msg);
    if (out->nunicode == 0) return vkl_fail(e, "%s: no character names found (not a UnicodeData.txt?)", path);
    sort_unique(out->unicode, &out->nunicode);
    return 0;
}

/* Decodes &amp; &lt; &gt; &quot; &apos; in s[0..n)
 * into out (at least n+1 bytes: decoding only shortens). */
static void decode_entities(const char *s, size_t n, char *out)
{
    static const struct {
        const char *name;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        int done = 0;
        if (s[i] == '&') {
            for (size_t k = 0; k < sizeof ents / sizeof *ents && !done; k++) {
                size_t l = strlen(ents[k].name);
                if (i + l <= n && !memcmp(s + i, ents[k].name, l)) out[o++] = ents[k].c, i += l, done = 1;
            }
        }
        if (!done) out[o++] = s[i++];
    }
    out[o] = 0;
}

/* The value of attribute name="..." inside the tag text [tag, end), or NULL. */
static const char *attr(const char *tag, const char *end, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (const char *p = tag; p + nl + 2 <= end; p++) {
        if (memcmp(p, name, nl) || p[nl] != '=' || p[nl + 1] != '"' || (p > tag && !isspace((unsigned char)p[-1])))
            continue;
        const char *v = p + nl + 2, *q = memchr(v, '"', (size_t)(end - v));
        if (!q) return NULL;
        *len = (size_t)(q - v);
        return v;
    }
    return NULL;
}

/* The single codepoint of an annotation's cp attribute (FE0F ignored), or 0. */
static uint32_t single_cp(const char *text)
{
    vkl_ucbuf b = {0};
    vkl_err ignored;
    uint32_t found = 0;
    int several = 0;
    if (vkl_utf8_decode(text, strlen(text), &b, &ignored) == 0)
        for (size_t i = 0; i < b.n; i++) {
            if (b.v[i] == 0xFE0F) continue;
            several |= found != 0;
            found = b.v[i];
        }
    vkl_ucbuf_free(&b);
    return several ? 0 : found;
}

static int load_cldr(vkl_emoji_names *out, const char *path, vkl_err *e)
{
    uint8_t *buf;
    size_t size, cap = 0;
    if (vkl_read_file_bytes(path, NAME_FILE_MAX_BYTES, &buf, &size, e)) return -1;
    char *text = malloc(size + 1), *tmp = malloc(size + 1);
    if (!text || !tmp) {
        free(buf);
        free(text);
        free(tmp);
        return vkl_fail(e, "%s: out of memory", path);
    }
    memcpy(text, buf, size);
    text[size] = 0;
    free(buf);
    int rc = 0;
    static const char open[] = "<annotation ", close[] = "</annotation>";
    for (const char *p = strstr(text, open); p && !rc; p = strstr(p, open)) {
        const char *gt = strchr(p, '>');
        if (!gt) break;
        const char *body = gt + 1, *body_end = strstr(body, close);
        if (!body_end) break;
        size_t cl, tl;
        const char *cpv = attr(p, gt, "cp", &cl), *type = attr(p, gt, "type", &tl);
        p = body_end + sizeof close - 1;
        if (!cpv || !type || tl != 3 || memcmp(type, "tts", 3)) continue;
        decode_entities(cpv, cl, tmp);
        uint32_t cp = single_cp(tmp);
        if (!cp) continue;
        decode_entities(body, (size_t)(body_end - body), tmp);
        size_t n = strlen(tmp);
        while (n && isspace((unsigned char)tmp[n - 1])) n--;
        const char *s = tmp;
        while (n && isspace((unsigned char)*s)) s++, n--;
        if (n) rc = push(&out->cldr, &out->ncldr, &cap, cp, s, n, e);
    }
    free(text);
    free(tmp);
    if (rc) return vkl_fail(e, "%s: %s", path, e->msg);
    if (out->ncldr == 0) return vkl_fail(e, "%s: no <annotation type=\"tts\"> entries found (not a CLDR annotations file?)", path);
    sort_unique(out->cldr, &out->ncldr);
    return 0;
}

int vkl_emoji_names_load(vkl_emoji_names *n, const char *unicode_data, const char *cldr, vkl_err *e)
{
    memset(n, 0, sizeof *n);
    if (load_unicode(n, unicode_data, e) || (cldr && load_cldr(n, cldr, e))) {
        vkl_emoji_names_free(n);
        return -1;
    }
    return 0;
}

void vkl_emoji_names_free(vkl_emoji_names *n)
{
    for (size_t i = 0; i < n->nunicode; i++) free(n->unicode[i].name);
    for (size_t i = 0; i < n->ncldr; i++) free(n->cldr[i].name);
    free(n->unicode);
    free(n->cldr);
    memset(n, 0, sizeof *n);
}

static const char *find(const vkl_emoji_name *a, size_t n, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid].cp < cp) lo = mid + 1;
        else if (a[mid].cp > cp) hi = mid;
        else return a[mid].name;
    }
    return NULL;
}

const char *vkl_emoji_caption(const vkl_emoji_names *n, uint32_t cp, vkl_caption_source *from)
{
    const char *s = find(n->cldr, n->ncldr, cp);
    vkl_caption_source src = VKL_CAPTION_CLDR;
    if (!s) s = find(n->unicode, n->nunicode, cp), src = VKL_CAPTION_UNICODE;
    if (from) *from = s ? src : VKL_CAPTION_NONE;
    return s;
}
