/* Colour bitmaps: CBLC (where each glyph's image is) and CBDT (the images).
 *
 * CBLC holds bitmap size records (strikes); each points at an array of index
 * subtables, each covering a glyph range with one of five layouts. The
 * largest strike is chosen, and at open every glyph of it is located once,
 * so an offset that points outside CBLC or CBDT is reported then, naming the
 * table, before any output is written. Only the PNG image formats (17, 18,
 * 19) are read; CBDT's other formats are monochrome/greyscale bitmaps that
 * colour fonts do not use. */
#include "io/font_internal.h"

#include <string.h>

#define SIZE_RECORD_BYTES 48
#define SMALL_METRICS_BYTES 5
#define BIG_METRICS_BYTES 8

typedef struct {
    uint32_t first, last;
    uint32_t header; /* offset of the index subtable inside CBLC */
    int index_format, image_format;
    uint32_t image_data; /* imageDataOffset: inside CBDT */
} subtable;

static int read_subtable(const vkl_font *f, uint32_t k, subtable *s, vkl_err *e)
{
    const uint8_t *r = f->cblc + f->strike_array + 8 * (size_t)k;
    s->first = vkl_be16(r);
    s->last = vkl_be16(r + 2);
    uint64_t at = (uint64_t)f->strike_array + vkl_be32(r + 4);
    if (s->first > s->last)
        return vkl_fail(e, "%s: CBLC table: index subtable %u covers glyphs %u..%u (reversed)", f->label, k, s->first, s->last);
    if (at + 8 > f->cblc_len)
        return vkl_fail(e, "%s: CBLC table: index subtable %u at offset %llu lies outside the table (%u bytes)", f->label, k,
                        (unsigned long long)at, f->cblc_len);
    const uint8_t *h = f->cblc + at;
    s->header = (uint32_t)at;
    s->index_format = vkl_be16(h);
    s->image_format = vkl_be16(h + 2);
    s->image_data = vkl_be32(h + 4);
    uint64_t n = s->last - s->first + 1, need;
    switch (s->index_format) {
    case 1: need = 8 + 4 * (n + 1); break;
    case 2: need = 8 + 4 + BIG_METRICS_BYTES; break;
    case 3: need = 8 + 2 * (n + 1); break;
    case 4: need = 8 + 4 + (at + 12 <= f->cblc_len ? 4 * ((uint64_t)vkl_be32(h + 8) + 1) : 0); break;
    case 5: need = 8 + 4 + BIG_METRICS_BYTES + 4 + (at + 24 <= f->cblc_len ? 2 * (uint64_t)vkl_be32(h + 20) : 0); break;
    default:
        return vkl_fail(e, "%s: CBLC table: index subtable %u has unknown index format %d", f->label, k, s->index_format);
    }
    if (at + need > f->cblc_len)
        return vkl_fail(e, "%s: CBLC table: index subtable %u (format %d, glyphs %u..%u) needs %llu bytes at offset %llu, past the table (%u bytes)",
                        f->label, k, s->index_format, s->first, s->last, (unsigned long long)need, (unsigned long long)at,
                        f->cblc_len);
    if (s->image_format != 17 && s->image_format != 18 && s->image_format != 19)
        return vkl_fail(e, "%s: CBLC table: index subtable %u uses glyph image format %d; only the PNG formats 17, 18, 19 are supported",
                        f->label, k, s->image_format);
    return 0;
}

/* Where glyph g's record is in CBDT: *off, *len (0 when the subtable has no
 * image for it). Offsets are checked against CBDT. */
static int locate(const vkl_font *f, const subtable *s, uint32_t g, uint32_t *off, uint32_t *len, vkl_err *e)
{
    const uint8_t *h = f->cblc + s->header;
    uint32_t i = g - s->first;
    uint64_t a = 0, b = 0;
    switch (s->index_format) {
    case 1:
        a = vkl_be32(h + 8 + 4 * (size_t)i);
        b = vkl_be32(h + 12 + 4 * (size_t)i);
        break;
    case 3:
        a = vkl_be16(h + 8 + 2 * (size_t)i);
        b = vkl_be16(h + 10 + 2 * (size_t)i);
        break;
    case 2:
        a = (uint64_t)i * vkl_be32(h + 8);
        b = a + vkl_be32(h + 8);
        break;
    case 4: {
        uint32_t n = vkl_be32(h + 8);
        for (uint32_t k = 0; k < n; k++) {
            const uint8_t *p = h + 12 + 4 * (size_t)k;
            if (vkl_be16(p) == g) {
                a = vkl_be16(p + 2);
                b = vkl_be16(p + 6); /* the array has numGlyphs+1 pairs, so the next one ends this */
                break;
            }
        }
        break;
    }
    case 5: {
        uint32_t n = vkl_be32(h + 20);
        for (uint32_t k = 0; k < n; k++)
            if (vkl_be16(h + 24 + 2 * (size_t)k) == g) {
                a = (uint64_t)k * vkl_be32(h + 8);
                b = a + vkl_be32(h + 8);
                break;
            }
        break;
    }
    }
    if (b < a)
        return vkl_fail(e, "%s: CBLC table: glyph %u has a negative image length (offsets %llu, %llu)", f->label, g,
                        (unsigned long long)a, (unsigned long long)b);
    if ((uint64_t)s->image_data + b > f->cbdt_len)
        return vkl_fail(e, "%s: CBLC table: glyph %u's image at CBDT offset %llu..%llu lies outside the CBDT table (%u bytes)",
                        f->label, g, (unsigned long long)(s->image_data + a), (unsigned long long)(s->image_data + b), f->cbdt_len);
    *off = (uint32_t)(s->image_data + a);
    *len = (uint32_t)(b - a);
    return 0;
}

/* The PNG inside a CBDT glyph record of len bytes at off. */
static int record_png(const vkl_font *f, uint32_t g, int format, uint32_t off, uint32_t len, vkl_font_bitmap *out,
                      vkl_err *e)
{
    uint32_t head = format == 17 ? SMALL_METRICS_BYTES : format == 18 ? BIG_METRICS_BYTES : 0;
    if (len < head + 4)
        return vkl_fail(e, "%s: CBDT table: glyph %u's record of %u bytes is shorter than its format %d header", f->label, g,
                        len, format);
    uint32_t n = vkl_be32(f->cbdt + off + head);
    if (n > len - head - 4)
        return vkl_fail(e, "%s: CBDT table: glyph %u claims %u bytes of PNG data, its record holds %u", f->label, g, n,
                        len - head - 4);
    out->png = f->cbdt + off + head + 4;
    out->size = n;
    out->image_format = format;
    return 0;
}

static int glyph_png(const vkl_font *f, const subtable *s, uint32_t g, vkl_font_bitmap *out, vkl_err *e)
{
    uint32_t off = 0, len = 0;
    if (locate(f, s, g, &off, &len, e)) return -1;
    if (len == 0) return 0;
    return record_png(f, g, s->image_format, off, len, out, e);
}

int vkl_font_bitmap_png(const vkl_font *f, uint32_t glyph, vkl_font_bitmap *out, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    if (!f->cblc) return 0;
    for (uint32_t k = 0; k < f->strike_nsub; k++) {
        subtable s;
        if (read_subtable(f, k, &s, e)) return -1;
        if (glyph >= s.first && glyph <= s.last) return glyph_png(f, &s, glyph, out, e);
    }
    return 0;
}

/* Locates every glyph of the strike once, so damage shows at open. */
static int check_strike(vkl_font *f, vkl_err *e)
{
    for (uint32_t k = 0; k < f->strike_nsub; k++) {
        subtable s;
        if (read_subtable(f, k, &s, e)) return -1;
        for (uint32_t g = s.first; g <= s.last; g++) {
            vkl_font_bitmap b;
            if (glyph_png(f, &s, g, &b, e)) return -1;
        }
    }
    return 0;
}

int vkl_font_cbdt_init(vkl_font *f, vkl_err *e)
{
    const vkl_font_table *lc = vkl_font_find_table(f, VKL_FONT_TAG('C', 'B', 'L', 'C'));
    const vkl_font_table *dt = vkl_font_find_table(f, VKL_FONT_TAG('C', 'B', 'D', 'T'));
    if (!lc && !dt) return 0;
    if (!lc || !dt) return vkl_fail(e, "%s: the font has a %s table without its %s table", f->label, lc ? "CBLC" : "CBDT", lc ? "CBDT" : "CBLC");
    f->cblc = f->data + lc->offset;
    f->cblc_len = lc->length;
    f->cbdt = f->data + dt->offset;
    f->cbdt_len = dt->length;
    if (f->cbdt_len < 4) return vkl_fail(e, "%s: CBDT table: %u bytes, shorter than its header", f->label, f->cbdt_len);
    if (f->cblc_len < 8) return vkl_fail(e, "%s: CBLC table: %u bytes, shorter than its header", f->label, f->cblc_len);
    int major = vkl_be16(f->cblc);
    if (major != 2 && major != 3) return vkl_fail(e, "%s: CBLC table: unknown version %d", f->label, major);
    uint32_t nsizes = vkl_be32(f->cblc + 4);
    if (nsizes == 0) return vkl_fail(e, "%s: CBLC table has no bitmap sizes", f->label);
    if (nsizes > (f->cblc_len - 8) / SIZE_RECORD_BYTES)
        return vkl_fail(e, "%s: CBLC table: %u bitmap size records run past the table (%u bytes)", f->label, nsizes, f->cblc_len);
    const uint8_t *best = NULL;
    for (uint32_t i = 0; i < nsizes; i++) {
        const uint8_t *r = f->cblc + 8 + (size_t)i * SIZE_RECORD_BYTES;
        if (!best || r[45] > best[45]) best = r; /* ppemY */
    }
    f->strike_array = vkl_be32(best);
    f->strike_nsub = vkl_be32(best + 8);
    f->strike_ppem = best[45];
    if ((uint64_t)f->strike_array + 8ull * f->strike_nsub > f->cblc_len)
        return vkl_fail(e, "%s: CBLC table: the %d ppem strike's %u index subtable records at offset %u run past the table (%u bytes)",
                        f->label, f->strike_ppem, f->strike_nsub, f->strike_array, f->cblc_len);
    return check_strike(f, e);
}

int vkl_font_has_color_bitmaps(const vkl_font *f) { return f->cblc != NULL; }
int vkl_font_strike_ppem(const vkl_font *f) { return f->cblc ? f->strike_ppem : 0; }
