/* The font reader: fonts built here byte by byte cover both cmap formats and
 * every index subtable and image format the reader knows (the Debian Noto
 * font only uses cmap 12, index format 1 and image format 17); damaged copies
 * (every truncation, lying offsets in each table) give an error naming the
 * font and the table, never a crash; the Noto font, when installed, opens and
 * gives a 136x128 PNG for U+2764. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>

#include "io/font.h"
#include "io/image.h"

#define NOTO "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"

/* ---- a growable big-endian byte buffer ---- */
typedef struct {
    uint8_t b[4096];
    size_t n;
} buf;

static void u8(buf *x, unsigned v) { x->b[x->n++] = (uint8_t)v; }
static void u16(buf *x, unsigned v) { u8(x, v >> 8), u8(x, v & 0xFF); }
static void u32(buf *x, uint32_t v) { u16(x, v >> 16), u16(x, v & 0xFFFF); }
static void bytes(buf *x, const char *s, size_t n) { memcpy(x->b + x->n, s, n), x->n += n; }
static void put32(buf *x, size_t at, uint32_t v)
{
    x->b[at] = (uint8_t)(v >> 24), x->b[at + 1] = (uint8_t)(v >> 16), x->b[at + 2] = (uint8_t)(v >> 8), x->b[at + 3] = (uint8_t)v;
}

/* An sfnt with the given tables (tags and contents), each 4-byte aligned. */
static uint8_t *sfnt(int n, const char *const *tags, const buf *const *tables, size_t *size)
{
    static buf out;
    memset(&out, 0, sizeof out);
    u32(&out, 0x00010000), u16(&out, (unsigned)n), u16(&out, 0), u16(&out, 0), u16(&out, 0);
    size_t at = 12 + 16 * (size_t)n;
    for (int i = 0; i < n; i++) {
        bytes(&out, tags[i], 4), u32(&out, 0), u32(&out, (uint32_t)at), u32(&out, (uint32_t)tables[i]->n);
        at += (tables[i]->n + 3) & ~(size_t)3;
    }
    for (int i = 0; i < n; i++) {
        bytes(&out, (const char *)tables[i]->b, tables[i]->n);
        while (out.n % 4) u8(&out, 0);
    }
    *size = out.n;
    uint8_t *copy = malloc(out.n);
    memcpy(copy, out.b, out.n);
    return copy;
}

static void maxp(buf *m, unsigned nglyphs) { u32(m, 0x00005000), u16(m, nglyphs); }

static void small_metrics(buf *x) { u8(x, 2), u8(x, 2), u8(x, 0), u8(x, 2), u8(x, 2); }
static void big_metrics(buf *x) { small_metrics(x), u8(x, 0), u8(x, 0), u8(x, 2); }

/* Font A: cmap (3,1) format 4 with a delta segment (U+2764 -> 1) and a
 * range-offset segment (U+2600, U+2601 -> 3, 2); CBLC with a 20 ppem strike
 * (index format 3 for glyph 1 in image format 17, index format 5 for glyphs 2
 * and 3 in image format 19) and a smaller 10 ppem strike that must not win. */
static uint8_t *font_a(size_t *size, size_t *cblc_at)
{
    static buf cmap, cblc, cbdt, mx;
    memset(&cmap, 0, sizeof cmap), memset(&cblc, 0, sizeof cblc), memset(&cbdt, 0, sizeof cbdt), memset(&mx, 0, sizeof mx);
    maxp(&mx, 4);
    u16(&cmap, 0), u16(&cmap, 1), u16(&cmap, 3), u16(&cmap, 1), u32(&cmap, 12);
    /* format 4: 3 segments [2600-2601 range offset] [2764 delta] [FFFF] */
    size_t sub = cmap.n;
    u16(&cmap, 4), u16(&cmap, 0), u16(&cmap, 0), u16(&cmap, 6), u16(&cmap, 4), u16(&cmap, 1), u16(&cmap, 2);
    u16(&cmap, 0x2601), u16(&cmap, 0x2764), u16(&cmap, 0xFFFF), u16(&cmap, 0);             /* ends, pad */
    u16(&cmap, 0x2600), u16(&cmap, 0x2764), u16(&cmap, 0xFFFF);                             /* starts */
    u16(&cmap, 0), u16(&cmap, (unsigned)(1 - 0x2764) & 0xFFFF), u16(&cmap, 1);             /* deltas */
    u16(&cmap, 6), u16(&cmap, 0), u16(&cmap, 0);                                            /* range offsets */
    u16(&cmap, 3), u16(&cmap, 2);                                                           /* glyph ids */
    cmap.b[sub + 3] = (uint8_t)(cmap.n - sub), cmap.b[sub + 2] = (uint8_t)((cmap.n - sub) >> 8);

    u16(&cbdt, 3), u16(&cbdt, 0);
    size_t g1 = cbdt.n; /* format 17 */
    small_metrics(&cbdt), u32(&cbdt, 5), bytes(&cbdt, "PNG-1", 5);
    size_t g23 = cbdt.n; /* format 19, fixed size 4 + 5 */
    u32(&cbdt, 5), bytes(&cbdt, "PNG-2", 5), u32(&cbdt, 5), bytes(&cbdt, "PNG-3", 5);
    size_t small = cbdt.n;
    small_metrics(&cbdt), u32(&cbdt, 5), bytes(&cbdt, "small", 5);

    u16(&cblc, 3), u16(&cblc, 0), u32(&cblc, 2);
    size_t rec[2];
    for (int s = 0; s < 2; s++) {
        rec[s] = cblc.n;
        u32(&cblc, 0), u32(&cblc, 0), u32(&cblc, s ? 1 : 2), u32(&cblc, 0);
        for (int k = 0; k < 24; k++) u8(&cblc, 0);
        u16(&cblc, 1), u16(&cblc, 3), u8(&cblc, s ? 10 : 20), u8(&cblc, s ? 10 : 20), u8(&cblc, 32), u8(&cblc, 1);
    }
    /* strike 0 (20 ppem): array of 2 records, then subtables */
    size_t arr = cblc.n;
    put32(&cblc, rec[0], (uint32_t)arr);
    u16(&cblc, 1), u16(&cblc, 1), u32(&cblc, 16);
    u16(&cblc, 2), u16(&cblc, 3), u32(&cblc, 16 + 12);
    /* index format 3 for glyph 1: offsets relative to imageDataOffset */
    u16(&cblc, 3), u16(&cblc, 17), u32(&cblc, (uint32_t)g1), u16(&cblc, 0), u16(&cblc, 14);
    /* index format 5 for glyphs 3 and 2 listed in id order */
    u16(&cblc, 5), u16(&cblc, 19), u32(&cblc, (uint32_t)g23), u32(&cblc, 9), big_metrics(&cblc), u32(&cblc, 2),
        u16(&cblc, 2), u16(&cblc, 3);
    /* strike 1 (10 ppem): index format 1, glyph 1 only */
    size_t arr1 = cblc.n;
    put32(&cblc, rec[1], (uint32_t)arr1);
    u16(&cblc, 1), u16(&cblc, 1), u32(&cblc, 8);
    u16(&cblc, 1), u16(&cblc, 17), u32(&cblc, (uint32_t)small), u32(&cblc, 0), u32(&cblc, 14);

    const char *tags[] = {"CBDT", "CBLC", "cmap", "maxp"};
    const buf *tabs[] = {&cbdt, &cblc, &cmap, &mx};
    uint8_t *f = sfnt(4, tags, tabs, size);
    *cblc_at = 12 + 16 * 4 + ((cbdt.n + 3) & ~(size_t)3);
    return f;
}

/* Font B: cmap with a (3,1) format 4 and a (3,10) format 12 subtable (12 must
 * win: U+1F34E -> 1, U+1F34F -> 2, U+2764 -> 4); CBLC index format 2 for
 * glyphs 1-2 (image format 18) and index format 4 for glyph 4 (image format 17). */
static uint8_t *font_b(size_t *size)
{
    static buf cmap, cblc, cbdt, mx;
    memset(&cmap, 0, sizeof cmap), memset(&cblc, 0, sizeof cblc), memset(&cbdt, 0, sizeof cbdt), memset(&mx, 0, sizeof mx);
    maxp(&mx, 5);
    u16(&cmap, 0), u16(&cmap, 2), u16(&cmap, 3), u16(&cmap, 1), u32(&cmap, 20), u16(&cmap, 3), u16(&cmap, 10), u32(&cmap, 52);
    /* format 4 at 20 (32 bytes) maps only U+2764 -> glyph 3, the wrong answer if chosen */
    u16(&cmap, 4), u16(&cmap, 32), u16(&cmap, 0), u16(&cmap, 4), u16(&cmap, 4), u16(&cmap, 1), u16(&cmap, 0);
    u16(&cmap, 0x2764), u16(&cmap, 0xFFFF), u16(&cmap, 0), u16(&cmap, 0x2764), u16(&cmap, 0xFFFF);
    u16(&cmap, (unsigned)(3 - 0x2764) & 0xFFFF), u16(&cmap, 1), u16(&cmap, 0), u16(&cmap, 0);
    /* format 12 at 52 */
    u16(&cmap, 12), u16(&cmap, 0), u32(&cmap, 16 + 24), u32(&cmap, 0), u32(&cmap, 2);
    u32(&cmap, 0x2764), u32(&cmap, 0x2764), u32(&cmap, 4);
    u32(&cmap, 0x1F34E), u32(&cmap, 0x1F34F), u32(&cmap, 1);

    u16(&cbdt, 3), u16(&cbdt, 0);
    size_t g12 = cbdt.n; /* format 18, fixed size 8 + 4 + 5 */
    big_metrics(&cbdt), u32(&cbdt, 5), bytes(&cbdt, "PNG-1", 5);
    big_metrics(&cbdt), u32(&cbdt, 5), bytes(&cbdt, "PNG-2", 5);
    size_t g4 = cbdt.n;
    small_metrics(&cbdt), u32(&cbdt, 5), bytes(&cbdt, "PNG-4", 5);

    u16(&cblc, 3), u16(&cblc, 0), u32(&cblc, 1);
    u32(&cblc, 8 + 48), u32(&cblc, 0), u32(&cblc, 2), u32(&cblc, 0);
    for (int k = 0; k < 24; k++) u8(&cblc, 0);
    u16(&cblc, 1), u16(&cblc, 4), u8(&cblc, 20), u8(&cblc, 20), u8(&cblc, 32), u8(&cblc, 1);
    u16(&cblc, 1), u16(&cblc, 2), u32(&cblc, 16);
    u16(&cblc, 4), u16(&cblc, 4), u32(&cblc, 16 + 20);
    u16(&cblc, 2), u16(&cblc, 18), u32(&cblc, (uint32_t)g12), u32(&cblc, 17), big_metrics(&cblc);
    u16(&cblc, 4), u16(&cblc, 17), u32(&cblc, (uint32_t)g4), u32(&cblc, 1), u16(&cblc, 4), u16(&cblc, 0), u16(&cblc, 0),
        u16(&cblc, 14);

    const char *tags[] = {"CBDT", "CBLC", "cmap", "maxp"};
    const buf *tabs[] = {&cbdt, &cblc, &cmap, &mx};
    return sfnt(4, tags, tabs, size);
}

static void expect_png(const vkl_font *f, uint32_t cp, const char *want, int format)
{
    vkl_err e;
    vkl_font_bitmap b;
    uint32_t g = vkl_font_glyph(f, cp);
    if (vkl_font_bitmap_png(f, g, &b, &e)) fail_msg("U+%04X: %s", cp, e.msg);
    if (b.size != strlen(want) || memcmp(b.png, want, b.size))
        fail_msg("U+%04X (glyph %u): got %zu bytes '%.*s', want '%s'", cp, g, b.size, (int)b.size, b.png ? (const char *)b.png : "", want);
    assert_int_equal(b.image_format, format);
}

static void test_format4_and_index_3_5(void **state)
{
    (void)state;
    size_t n, cblc_at;
    uint8_t *d = font_a(&n, &cblc_at);
    vkl_font *f;
    vkl_err e;
    if (vkl_font_open_memory(d, n, "a.ttf", &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_font_strike_ppem(f), 20);
    expect_png(f, 0x2764, "PNG-1", 17);
    expect_png(f, 0x2600, "PNG-3", 19);
    expect_png(f, 0x2601, "PNG-2", 19);
    assert_int_equal(vkl_font_glyph(f, 0x41), 0);
    assert_int_equal(vkl_font_glyph(f, 0x1F600), 0);
    vkl_font_char *c;
    size_t nc;
    if (vkl_font_chars(f, &c, &nc, &e)) fail_msg("%s", e.msg);
    assert_int_equal(nc, 3);
    assert_int_equal(c[0].codepoint, 0x2600), assert_int_equal(c[0].glyph, 3);
    assert_int_equal(c[1].codepoint, 0x2601), assert_int_equal(c[1].glyph, 2);
    assert_int_equal(c[2].codepoint, 0x2764), assert_int_equal(c[2].glyph, 1);
    free(c);
    vkl_font_close(f);
    free(d);
}

static void test_format12_and_index_1_2_4(void **state)
{
    (void)state;
    size_t n;
    uint8_t *d = font_b(&n);
    vkl_font *f;
    vkl_err e;
    if (vkl_font_open_memory(d, n, "b.ttf", &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_font_glyph(f, 0x2764), 4); /* format 12 chosen over format 4 */
    expect_png(f, 0x1F34E, "PNG-1", 18);
    expect_png(f, 0x1F34F, "PNG-2", 18);
    expect_png(f, 0x2764, "PNG-4", 17);
    vkl_font_bitmap b;
    assert_int_equal(vkl_font_bitmap_png(f, 3, &b, &e), 0); /* in no subtable: no bitmap */
    assert_int_equal(b.size, 0);
    vkl_font_close(f);
    free(d);
}

static void expect_error(const uint8_t *d, size_t n, const char *label, const char *table, int show)
{
    vkl_font *f = NULL;
    vkl_err e;
    e.msg[0] = 0;
    if (!vkl_font_open_memory(d, n, label, &f, &e)) {
        vkl_font_close(f);
        fail_msg("%s (%zu bytes) opened without an error", label, n);
    }
    if (!strstr(e.msg, label) || (table && !strstr(e.msg, table)))
        fail_msg("%s: the error should name the font and '%s': %s", label, table ? table : "", e.msg);
    if (show) print_message("%s\n", e.msg);
}

static void test_every_truncation_fails(void **state)
{
    (void)state;
    size_t n, cblc_at;
    uint8_t *d = font_a(&n, &cblc_at);
    for (size_t k = 0; k < n; k++) {
        if (k + 3 >= n) break; /* the last table's alignment padding may go */
        expect_error(d, k, "cut.ttf", NULL, k == n / 2);
    }
    free(d);
    d = font_b(&n);
    for (size_t k = 0; k + 3 < n; k++) expect_error(d, k, "cut.ttf", NULL, k == n / 2);
    free(d);
}

static void test_lying_offsets(void **state)
{
    (void)state;
    size_t n, cblc_at;
    uint8_t *d = font_a(&n, &cblc_at);
    buf x;
    /* each case: a field of font A set to a lie, and the table the error must name */
    struct {
        size_t at;
        uint32_t value;
        int width;
        const char *table;
    } cases[] = {
        {cblc_at + 8, 0x7FFFFFF0, 4, "CBLC"},            /* strike 0 indexSubTableArrayOffset */
        {cblc_at + 8 + 8, 0x10000000, 4, "CBLC"},        /* strike 0 numberOfIndexSubTables */
        {cblc_at + 4, 1000, 4, "CBLC"},                  /* numSizes */
        {cblc_at + 8 + 96 + 4, 0x00FFFF00, 4, "CBLC"},   /* first subtable's additional offset */
        {cblc_at + 8 + 96 + 16 + 4, 0x00FFFF00, 4, "CBLC"}, /* its imageDataOffset, outside CBDT */
        {cblc_at + 8 + 96 + 16 + 10, 0xFFF0, 2, "CBLC"}, /* its end offset: image past CBDT */
        {cblc_at + 8 + 96 + 16 + 2, 3, 2, "CBLC"},       /* image format 3 (not PNG) */
        {cblc_at + 8 + 96 + 16, 9, 2, "CBLC"},           /* unknown index format */
        {4 + 5, 0xFFFF, 4, "CBDT"},                      /* glyph 1's PNG length past its record (CBDT at 12+64=76) */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        memcpy(x.b, d, n);
        size_t at = cases[i].at;
        if (!strcmp(cases[i].table, "CBDT")) at += 12 + 16 * 4; /* CBDT is the first table */
        if (cases[i].width == 4) put32(&x, at, cases[i].value);
        else x.b[at] = (uint8_t)(cases[i].value >> 8), x.b[at + 1] = (uint8_t)cases[i].value;
        char label[32];
        snprintf(label, sizeof label, "lie%zu.ttf", i);
        expect_error(x.b, n, label, cases[i].table, 1);
    }
    /* the table directory: a table past the end of the file; cmap offsets */
    memcpy(x.b, d, n);
    put32(&x, 12 + 16 * 2 + 8, 0x01000000);
    expect_error(x.b, n, "dir.ttf", "cmap", 1);
    free(d);
}

static void test_noto(void **state)
{
    (void)state;
    FILE *probe = fopen(NOTO, "rb");
    if (!probe) {
        fprintf(stderr, "SKIPPED: %s not installed (Debian fonts-noto-color-emoji)\n", NOTO);
        skip();
    }
    fclose(probe);
    vkl_font *f;
    vkl_err e;
    if (vkl_font_open(NOTO, &f, &e)) fail_msg("%s", e.msg);
    assert_true(vkl_font_has_color_bitmaps(f));
    vkl_font_bitmap b;
    if (vkl_font_bitmap_png(f, vkl_font_glyph(f, 0x2764), &b, &e)) fail_msg("%s", e.msg);
    assert_true(b.size > 100);
    vkl_image_info info;
    if (vkl_image_info_memory(b.png, b.size, "U+2764", &info, &e)) fail_msg("%s", e.msg);
    assert_int_equal(info.format, VKL_IMG_PNG);
    assert_int_equal(info.width, 136);
    assert_int_equal(info.height, 128);
    vkl_font_close(f);
}

static void test_missing_file(void **state)
{
    (void)state;
    vkl_font *f;
    vkl_err e;
    assert_int_equal(vkl_font_open("/nonexistent/x.ttf", &f, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/x.ttf"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format4_and_index_3_5),
        cmocka_unit_test(test_format12_and_index_1_2_4),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_lying_offsets),
        cmocka_unit_test(test_noto),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
