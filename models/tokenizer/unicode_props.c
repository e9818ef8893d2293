/* Lookups into the generated range tables, and UTF-8 coding. */
#include <stdlib.h>

#include "unicode.h"
#include "unicode_tables.h"

/* Runs are sorted by start: find the last run whose start <= cp. */
static uint32_t run_value(const uint32_t *runs, size_t n, int bits, uint32_t cp)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if ((runs[mid] >> bits) <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return runs[lo] & ((1u << bits) - 1u);
}

int vkl_uc_class(uint32_t cp)
{
    if (cp > 0x10FFFF)
        return VKL_UC_CONTROL;
    return (int)run_value(vkl_uc_gc_runs, vkl_uc_gc_runs_count, 3, cp);
}

int vkl_uc_ccc(uint32_t cp)
{
    if (cp < 0x300 || cp > 0x10FFFF)
        return 0;
    return (int)run_value(vkl_uc_ccc_runs, vkl_uc_ccc_runs_count, 8, cp);
}

int vkl_uc_case_prop(uint32_t cp)
{
    if (cp > 0x10FFFF)
        return 0;
    return (int)run_value(vkl_uc_case_runs, vkl_uc_case_runs_count, 2, cp);
}

int vkl_uc_is_word(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') || cp == '_';
    if (cp > 0x10FFFF)
        return 0;
    return (int)run_value(vkl_uc_word_runs, vkl_uc_word_runs_count, 1, cp);
}

int vkl_uc_is_white_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

int vkl_uc_is_py_space(uint32_t cp)
{
    return vkl_uc_is_white_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

uint32_t vkl_uc_lower1(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    size_t lo = 0, hi = vkl_uc_lower_runs_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (vkl_uc_lower_runs[mid].start <= cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return cp;
    const vkl_uc_lower_run *r = &vkl_uc_lower_runs[lo - 1];
    uint32_t off = cp - r->start;
    if (off % r->stride == 0 && off / r->stride < r->count)
        return (uint32_t)((int32_t)cp + r->delta);
    return cp;
}

int vkl_ucbuf_push(vkl_ucbuf *b, uint32_t cp)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        uint32_t *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    b->v[b->n++] = cp;
    return 0;
}

void vkl_ucbuf_free(vkl_ucbuf *b)
{
    free(b->v);
    b->v = NULL;
    b->n = b->cap = 0;
}

int vkl_utf8_decode(const char *s, size_t len, vkl_ucbuf *out, vkl_err *e)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        uint32_t c = p[i], cp, min;
        size_t k;
        if (c < 0x80) {
            cp = c; k = 0; min = 0;
        } else if ((c & 0xE0) == 0xC0) {
            cp = c & 0x1F; k = 1; min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            cp = c & 0x0F; k = 2; min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            cp = c & 0x07; k = 3; min = 0x10000;
        } else {
            return vkl_fail(e, "invalid UTF-8 in prompt at byte %zu (0x%02x)", i, c);
        }
        if (k && i + k >= len)
            return vkl_fail(e, "invalid UTF-8 in prompt at byte %zu: truncated sequence", i);
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80)
                return vkl_fail(e, "invalid UTF-8 in prompt at byte %zu: bad continuation byte", i);
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return vkl_fail(e, "invalid UTF-8 in prompt at byte %zu: overlong, surrogate or out of range", i);
        if (vkl_ucbuf_push(out, cp))
            return vkl_fail(e, "out of memory decoding prompt");
        i += k + 1;
    }
    return 0;
}

size_t vkl_utf8_put(uint32_t cp, unsigned char *b)
{
    if (cp < 0x80) {
        b[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
