/* The cmap table: chooses the Unicode subtable that covers the most (format
 * 12 "full repertoire" before format 4 "BMP only"), checks it once, and maps
 * codepoints to glyphs. The checks make the lookups simple: format 12 groups
 * ascending and disjoint inside U+0000..U+10FFFF, format 4 segments ascending
 * and disjoint, every array inside the subtable. */
#include "io/font_internal.h"

#include <stdlib.h>
#include <string.h>

/* How much a (platform, encoding, format) triple covers; 0 = not usable. */
static int subtable_rank(int platform, int encoding, int format)
{
    int unicode_full = (platform == 3 && encoding == 10) || (platform == 0 && (encoding == 4 || encoding == 6));
    int unicode_bmp = (platform == 3 && encoding == 1) || (platform == 0 && encoding <= 3);
    if (format == 12 && (unicode_full || unicode_bmp)) return unicode_full ? 4 : 3;
    if (format == 4 && (unicode_full || unicode_bmp)) return unicode_bmp ? 2 : 1;
    return 0;
}

static int check_format12(vkl_font *f, const uint8_t *s, uint32_t avail, vkl_err *e)
{
    if (avail < 16) return vkl_fail(e, "%s: cmap table: format 12 subtable header runs past the table", f->label);
    uint32_t len = vkl_be32(s + 4), ngroups = vkl_be32(s + 12);
    if (len > avail) return vkl_fail(e, "%s: cmap table: format 12 subtable of %u bytes runs past the table (%u left)", f->label, len, avail);
    if (len < 16) return vkl_fail(e, "%s: cmap table: format 12 subtable length %u is shorter than its header", f->label, len);
    if (ngroups > (len - 16) / 12)
        return vkl_fail(e, "%s: cmap table: format 12 subtable claims %u groups, its %u bytes hold %u", f->label, ngroups,
                        len, (len - 16) / 12);
    uint64_t prev_end = 0;
    for (uint32_t i = 0; i < ngroups; i++) {
        const uint8_t *g = s + 16 + (size_t)i * 12;
        uint32_t start = vkl_be32(g), end = vkl_be32(g + 4);
        const char *why = start > end ? "is reversed" : end > 0x10FFFF ? "goes past U+10FFFF"
                        : i > 0 && start <= prev_end ? "overlaps or precedes the group before it" : NULL;
        if (why) return vkl_fail(e, "%s: cmap table: format 12 group %u (U+%04X..U+%04X) %s", f->label, i, start, end, why);
        prev_end = end;
    }
    f->cmap_len = 16 + ngroups * 12;
    return 0;
}

static int check_format4(vkl_font *f, const uint8_t *s, uint32_t avail, vkl_err *e)
{
    if (avail < 14) return vkl_fail(e, "%s: cmap table: format 4 subtable header runs past the table", f->label);
    uint32_t len = vkl_be16(s + 2), segx2 = vkl_be16(s + 6);
    if (len > avail) return vkl_fail(e, "%s: cmap table: format 4 subtable of %u bytes runs past the table (%u left)", f->label, len, avail);
    if (segx2 == 0 || segx2 % 2 || 16 + 4 * (uint32_t)segx2 > len)
        return vkl_fail(e, "%s: cmap table: format 4 subtable with %u segments does not fit its %u bytes", f->label, segx2 / 2,
                        len);
    const uint8_t *ends = s + 14, *starts = ends + segx2 + 2;
    for (uint32_t i = 0; i < segx2 / 2; i++) {
        uint32_t start = vkl_be16(starts + 2 * i), end = vkl_be16(ends + 2 * i);
        const char *why = start > end ? "is reversed" : i > 0 && start <= vkl_be16(ends + 2 * (i - 1))
                        ? "overlaps or precedes the segment before it" : NULL;
        if (why) return vkl_fail(e, "%s: cmap table: format 4 segment %u (U+%04X..U+%04X) %s", f->label, i, start, end, why);
    }
    f->cmap_len = len;
    return 0;
}

int vkl_font_cmap_init(vkl_font *f, vkl_err *e)
{
    const vkl_font_table *t = vkl_font_find_table(f, VKL_FONT_TAG('c', 'm', 'a', 'p'));
    if (!t) return vkl_fail(e, "%s: the font has no cmap table", f->label);
    const uint8_t *c = f->data + t->offset;
    if (t->length < 4) return vkl_fail(e, "%s: cmap table: %u bytes, shorter than its header", f->label, t->length);
    uint32_t n = vkl_be16(c + 2);
    if (4 + 8 * n > t->length)
        return vkl_fail(e, "%s: cmap table: %u encoding records run past the table (%u bytes)", f->label, n, t->length);
    int best = 0;
    uint32_t best_off = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *r = c + 4 + 8 * i;
        uint32_t off = vkl_be32(r + 4);
        if (off > t->length - 2)
            return vkl_fail(e, "%s: cmap table: encoding record %u points at offset %u, past the table (%u bytes)", f->label, i,
                            off, t->length);
        int rank = subtable_rank(vkl_be16(r), vkl_be16(r + 2), vkl_be16(c + off));
        if (rank > best) best = rank, best_off = off;
    }
    if (!best) return vkl_fail(e, "%s: cmap table has no Unicode subtable of format 4 or 12", f->label);
    f->cmap = c + best_off;
    f->cmap_format = vkl_be16(f->cmap);
    uint32_t avail = t->length - best_off;
    return f->cmap_format == 12 ? check_format12(f, f->cmap, avail, e) : check_format4(f, f->cmap, avail, e);
}

static uint32_t glyph12(const vkl_font *f, uint32_t cp)
{
    uint32_t lo = 0, hi = vkl_be32(f->cmap + 12);
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const uint8_t *g = f->cmap + 16 + (size_t)mid * 12;
        if (cp < vkl_be32(g)) hi = mid;
        else if (cp > vkl_be32(g + 4)) lo = mid + 1;
        else return vkl_be32(g + 8) + (cp - vkl_be32(g));
    }
    return 0;
}

/* Glyph of cp in format 4 segment i (cp inside it); 0 when an idRangeOffset
 * points outside the subtable. */
static uint32_t glyph4_in(const vkl_font *f, uint32_t i, uint32_t cp)
{
    uint32_t segx2 = vkl_be16(f->cmap + 6);
    const uint8_t *starts = f->cmap + 16 + segx2, *deltas = starts + segx2, *ranges = deltas + segx2;
    uint32_t start = vkl_be16(starts + 2 * i), delta = vkl_be16(deltas + 2 * i), ro = vkl_be16(ranges + 2 * i);
    if (ro == 0) return (cp + delta) & 0xFFFF;
    /* the offset counts from the idRangeOffset entry itself */
    size_t at = (size_t)(ranges + 2 * i - f->cmap) + ro + 2 * (size_t)(cp - start);
    if (at + 2 > f->cmap_len) return 0;
    uint32_t g = vkl_be16(f->cmap + at);
    return g ? (g + delta) & 0xFFFF : 0;
}

static uint32_t glyph4(const vkl_font *f, uint32_t cp)
{
    if (cp > 0xFFFF) return 0;
    uint32_t nseg = vkl_be16(f->cmap + 6) / 2;
    const uint8_t *ends = f->cmap + 14, *starts = ends + 2 * nseg + 2;
    for (uint32_t i = 0; i < nseg; i++)
        if (cp <= vkl_be16(ends + 2 * i)) return cp >= vkl_be16(starts + 2 * i) ? glyph4_in(f, i, cp) : 0;
    return 0;
}

uint32_t vkl_font_glyph(const vkl_font *f, uint32_t cp)
{
    uint32_t g = f->cmap_format == 12 ? glyph12(f, cp) : glyph4(f, cp);
    return g < (uint32_t)f->nglyphs ? g : 0;
}

int vkl_font_chars(const vkl_font *f, vkl_font_char **out, size_t *count, vkl_err *e)
{
    *out = NULL;
    *count = 0;
    /* ranges are disjoint and inside Unicode (checked at open), so at most 0x110000 entries */
    size_t total = 0;
    if (f->cmap_format == 12) {
        for (uint32_t i = 0; i < vkl_be32(f->cmap + 12); i++)
            total += vkl_be32(f->cmap + 16 + (size_t)i * 12 + 4) - vkl_be32(f->cmap + 16 + (size_t)i * 12) + 1;
    } else {
        total = 0x10000;
    }
    vkl_font_char *a = malloc(total * sizeof *a);
    if (!a) return vkl_fail(e, "%s: out of memory for %zu characters", f->label, total);
    size_t n = 0;
    if (f->cmap_format == 12) {
        for (uint32_t i = 0; i < vkl_be32(f->cmap + 12); i++) {
            const uint8_t *g = f->cmap + 16 + (size_t)i * 12;
            for (uint32_t cp = vkl_be32(g); cp <= vkl_be32(g + 4); cp++) {
                uint32_t gl = vkl_be32(g + 8) + (cp - vkl_be32(g));
                if (gl && gl < (uint32_t)f->nglyphs) a[n++] = (vkl_font_char){cp, gl};
            }
        }
    } else {
        uint32_t nseg = vkl_be16(f->cmap + 6) / 2;
        const uint8_t *ends = f->cmap + 14, *starts = ends + 2 * nseg + 2;
        for (uint32_t i = 0; i < nseg; i++)
            for (uint32_t cp = vkl_be16(starts + 2 * i); cp <= vkl_be16(ends + 2 * i) && cp < 0xFFFF; cp++) {
                uint32_t gl = glyph4_in(f, i, cp);
                if (gl && gl < (uint32_t)f->nglyphs) a[n++] = (vkl_font_char){cp, gl};
            }
    }
    *out = a;
    *count = n;
    return 0;
}
