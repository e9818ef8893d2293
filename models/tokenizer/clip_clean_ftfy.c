/* Text cleanup as transformers' CLIPTokenizer does it when ftfy is installed
 * (and openai/CLIP always): ftfy.fix_text with its default configuration, then
 * whitespace runs -> one space, strip, lower-case.
 *
 * Of fix_text's steps this reproduces those that change clean (non-mojibake)
 * text: HTML entities (only while no '<' has been seen, ftfy's "auto"),
 * terminal escapes, C1 controls read as Windows-1252, Latin ligatures,
 * half/full-width forms, curly quotes, line breaks, control characters, NFC;
 * repeated until nothing changes, as ftfy does. Mojibake repair (fix_encoding)
 * is not attempted. */
#include <string.h>

#include "clip_internal.h"
#include "unicode_tables.h"

static int push3(vkl_ucbuf *o, const uint32_t cp[3])
{
    for (int i = 0; i < 3 && cp[i]; i++)
        if (vkl_ucbuf_push(o, cp[i]))
            return -1;
    return 0;
}

static int is_alnum_ascii(uint32_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static const uint16_t cp1252_80[32] = {
    0x20AC, 0x81,   0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x8D,   0x017D, 0x8F,   0x90,   0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D,   0x017E, 0x0178};

/* Python's html.unescape of a numeric reference, as ftfy keeps it: returns the
 * number of code points written to r (0 = reference removed, -1 = keep text). */
static int numeric_ref(const uint32_t *s, size_t n, uint32_t r[1])
{
    int hex = s[0] == 'x' || s[0] == 'X';
    size_t i = hex ? 1 : 0;
    if (i >= n)
        return -1;
    uint64_t v = 0;
    for (; i < n; i++) {
        uint32_t c = s[i];
        int d = c >= '0' && c <= '9' ? (int)(c - '0')
                : hex && c >= 'a' && c <= 'f' ? (int)(c - 'a' + 10)
                : hex && c >= 'A' && c <= 'F' ? (int)(c - 'A' + 10) : -1;
        if (d < 0)
            return -1; /* html.unescape stops early, so ';' stays: ftfy keeps the text */
        v = v * (hex ? 16 : 10) + (uint64_t)d;
        if (v > 0x10FFFFull)
            v = 0x110000; /* saturate: anything beyond is U+FFFD */
    }
    if (v == 0)
        r[0] = 0xFFFD;
    else if (v == 0x0D)
        r[0] = '\r';
    else if (v >= 0x80 && v <= 0x9F)
        r[0] = cp1252_80[v - 0x80];
    else if ((v >= 0xD800 && v <= 0xDFFF) || v > 0x10FFFF)
        r[0] = 0xFFFD;
    else if ((v >= 1 && v <= 8) || v == 0x0B || (v >= 0x0E && v <= 0x1F) || (v >= 0x7F && v <= 0x9F) ||
             (v >= 0xFDD0 && v <= 0xFDEF) || (v & 0xFFFE) == 0xFFFE)
        return 0;
    else
        r[0] = (uint32_t)v;
    return r[0] == ';' ? -1 : 1;
}

static const vkl_html_entity *named_ref(const uint32_t *s, size_t n)
{
    char name[32];
    for (size_t i = 0; i < n; i++)
        name[i] = (char)s[i];
    name[n] = 0;
    size_t lo = 0, hi = vkl_html_entities_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(vkl_html_entities[mid].name, name);
        if (c == 0)
            return &vkl_html_entities[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ftfy's unescape_html: matches &#?[0-9A-Za-z]{1,24}; */
static int unescape_html(const uint32_t *s, size_t n, vkl_ucbuf *o)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '&') {
            size_t j = i + 1, hash = j < n && s[j] == '#';
            j += hash;
            size_t k = j;
            while (k < n && is_alnum_ascii(s[k]))
                k++;
            if (k > j && k - j <= 24 && k < n && s[k] == ';') {
                if (hash) {
                    uint32_t r[1];
                    int got = numeric_ref(s + j, k - j, r);
                    if (got >= 0) {
                        if (got && vkl_ucbuf_push(o, r[0]))
                            return -1;
                        i = k;
                        continue;
                    }
                } else {
                    const vkl_html_entity *ent = named_ref(s + j, k - j);
                    if (ent) {
                        if (push3(o, ent->cp))
                            return -1;
                        i = k;
                        continue;
                    }
                }
                /* not an entity: the whole match is kept and scanning resumes after it */
                for (size_t m = i; m <= k; m++)
                    if (vkl_ucbuf_push(o, s[m]))
                        return -1;
                i = k;
                continue;
            }
        }
        if (vkl_ucbuf_push(o, s[i]))
            return -1;
    }
    return 0;
}

static const uint32_t ligatures[][4] = {
    {0x132, 'I', 'J', 0},     {0x133, 'i', 'j', 0},     {0x149, 0x2BC, 'n', 0},
    {0x1C4, 'D', 0x17D, 0},   {0x1C5, 'D', 0x17E, 0},   {0x1C6, 'd', 0x17E, 0},
    {0x1C7, 'L', 'J', 0},     {0x1C8, 'L', 'j', 0},     {0x1C9, 'l', 'j', 0},
    {0x1CA, 'N', 'J', 0},     {0x1CB, 'N', 'j', 0},     {0x1CC, 'n', 'j', 0},
    {0x1F1, 'D', 'Z', 0},     {0x1F2, 'D', 'z', 0},     {0x1F3, 'd', 'z', 0},
    {0xFB00, 'f', 'f', 0},    {0xFB01, 'f', 'i', 0},    {0xFB02, 'f', 'l', 0},
    {0xFB03, 'f', 'f', 'i'},  {0xFB04, 'f', 'f', 'l'},  {0xFB05, 0x17F, 't', 0},
    {0xFB06, 's', 't', 0},
};

static int is_ftfy_control(uint32_t c)
{
    return c <= 8 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
           c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

/* One pass of the character-level fixes after HTML unescaping. */
static int char_fixes(const uint32_t *s, size_t n, vkl_ucbuf *o)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = s[i];
        if (c == 0x1B && i + 1 < n && s[i + 1] == '[') { /* ANSI terminal escape */
            size_t j = i + 2;
            while (j < n && ((s[j] >= '0' && s[j] <= '9') || s[j] == ';'))
                j++;
            if (j < n && ((s[j] >= 'a' && s[j] <= 'z') || (s[j] >= 'A' && s[j] <= 'Z'))) {
                i = j;
                continue;
            }
        }
        if (c >= 0x80 && c <= 0x9F)
            c = cp1252_80[c - 0x80];
        if ((c >= 0x132 && c <= 0x1F3) || (c >= 0xFB00 && c <= 0xFB06)) {
            size_t k = 0;
            for (; k < sizeof ligatures / sizeof *ligatures; k++)
                if (ligatures[k][0] == c)
                    break;
            if (k < sizeof ligatures / sizeof *ligatures) {
                if (push3(o, ligatures[k] + 1))
                    return -1;
                continue;
            }
        }
        if (c == 0x3000) {
            c = ' ';
        } else if (c >= 0xFF01 && c <= 0xFFEF) {
            size_t lo = 0, hi = vkl_uc_width_count;
            while (lo < hi) {
                size_t mid = (lo + hi) / 2;
                if (vkl_uc_width[mid].a < c)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < vkl_uc_width_count && vkl_uc_width[lo].a == c) {
                c = vkl_uc_width[lo].b;
                if (vkl_uc_width[lo].c) {
                    if (vkl_ucbuf_push(o, c))
                        return -1;
                    c = vkl_uc_width[lo].c;
                }
            }
        }
        if (c >= 0x2018 && c <= 0x201B)
            c = '\'';
        else if (c >= 0x201C && c <= 0x201F)
            c = '"';
        if (c == '\r' && i + 1 < n && s[i + 1] == '\n')
            continue; /* \r\n -> \n: the \n follows */
        if (c == '\r' || c == 0x2028 || c == 0x2029 || c == 0x85)
            c = '\n';
        if (is_ftfy_control(c))
            continue;
        if (vkl_ucbuf_push(o, c))
            return -1;
    }
    return 0;
}

static int fix_segment(const uint32_t *s, size_t n, int unescape, vkl_ucbuf *out)
{
    vkl_ucbuf cur = {0}, a = {0}, b = {0};
    int rc = -1;
    for (size_t i = 0; i < n; i++)
        if (vkl_ucbuf_push(&cur, s[i]))
            goto done;
    for (int pass = 0; pass < 16; pass++) {
        a.n = b.n = 0;
        if (unescape ? unescape_html(cur.v, cur.n, &a) : 0)
            goto done;
        const vkl_ucbuf *src = unescape ? &a : &cur;
        vkl_ucbuf c = {0};
        if (char_fixes(src->v, src->n, &b) || vkl_uc_nfc(b.v, b.n, &c)) {
            vkl_ucbuf_free(&c);
            goto done;
        }
        int same = c.n == cur.n && (c.n == 0 || memcmp(c.v, cur.v, c.n * sizeof *c.v) == 0);
        vkl_ucbuf_free(&cur);
        cur = c;
        if (same)
            break;
    }
    for (size_t i = 0; i < cur.n; i++)
        if (vkl_ucbuf_push(out, cur.v[i]))
            goto done;
    rc = 0;
done:
    vkl_ucbuf_free(&cur);
    vkl_ucbuf_free(&a);
    vkl_ucbuf_free(&b);
    return rc;
}

int vkl_clip_clean_ftfy(const uint32_t *in, size_t n, vkl_ucbuf *out)
{
    vkl_ucbuf fixed = {0}, ws = {0};
    int rc = -1, unescape = 1;
    /* fix_text works line by line and turns HTML unescaping off for good at
     * the first line that contains '<'. */
    for (size_t pos = 0; pos < n;) {
        size_t end = pos;
        while (end < n && in[end] != '\n')
            end++;
        if (end < n)
            end++;
        for (size_t i = pos; i < end; i++)
            if (in[i] == '<')
                unescape = 0;
        if (fix_segment(in + pos, end - pos, unescape, &fixed))
            goto done;
        pos = end;
    }
    for (size_t i = 0; i < fixed.n; i++) {
        uint32_t c = fixed.v[i];
        if (vkl_uc_is_white_space(c)) {
            if (ws.n && ws.v[ws.n - 1] == ' ' && i > 0 && vkl_uc_is_white_space(fixed.v[i - 1]))
                continue;
            c = ' ';
        }
        if (vkl_ucbuf_push(&ws, c))
            goto done;
    }
    size_t s = 0, e = ws.n;
    while (s < e && vkl_uc_is_py_space(ws.v[s]))
        s++;
    while (e > s && vkl_uc_is_py_space(ws.v[e - 1]))
        e--;
    rc = e > s ? vkl_uc_lower(ws.v + s, e - s, out) : 0; /* an empty buffer has no storage */
done:
    vkl_ucbuf_free(&fixed);
    vkl_ucbuf_free(&ws);
    return rc;
}
