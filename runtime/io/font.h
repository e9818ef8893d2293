/* TrueType/OpenType fonts, as far as colour-bitmap emoji need them: the table
 * directory, the Unicode character map (cmap formats 12 and 4) and the
 * CBLC/CBDT colour bitmaps (embedded PNG images, glyph image formats 17, 18
 * and 19 through index subtable formats 1 to 5).
 *
 * The whole file is read into memory and its structure checked when it is
 * opened: every offset and length that a later lookup follows is compared
 * against the table and file it points into, so a truncated or lying font is
 * an error naming the file and the table, never a read out of bounds. */
#ifndef VKL_FONT_H
#define VKL_FONT_H

#include "vkl_base.h"

/* Fonts larger than this are refused before being read into memory. */
#define VKL_FONT_MAX_FILE_BYTES (256ull << 20)

typedef struct vkl_font vkl_font;

/* Reads and checks a font file (a collection, .ttc, is refused). */
int vkl_font_open(const char *path, vkl_font **out, vkl_err *e);
/* Same on bytes in memory (copied); label names them in messages. */
int vkl_font_open_memory(const void *buf, size_t size, const char *label, vkl_font **out, vkl_err *e);
void vkl_font_close(vkl_font *f);

/* Number of glyphs (maxp). */
int vkl_font_glyph_count(const vkl_font *f);

/* The glyph for a codepoint through the chosen Unicode cmap subtable; 0 (the
 * .notdef glyph) when unmapped. */
uint32_t vkl_font_glyph(const vkl_font *f, uint32_t codepoint);

typedef struct vkl_font_char {
    uint32_t codepoint, glyph;
} vkl_font_char;

/* Every codepoint the cmap maps to a glyph other than 0, ascending
 * (malloc'd array in *out, count in *n). */
int vkl_font_chars(const vkl_font *f, vkl_font_char **out, size_t *n, vkl_err *e);

/* Colour bitmaps: the font's largest strike (CBLC bitmap size record). */
int vkl_font_has_color_bitmaps(const vkl_font *f);
int vkl_font_strike_ppem(const vkl_font *f); /* 0 without colour bitmaps */

typedef struct vkl_font_bitmap {
    const uint8_t *png; /* points into the font; valid until vkl_font_close */
    size_t size;        /* 0: the glyph has no bitmap in the strike */
    int image_format;   /* CBDT glyph image format: 17, 18 or 19 */
} vkl_font_bitmap;

/* The PNG bytes of a glyph in the strike (size 0 when it has none). */
int vkl_font_bitmap_png(const vkl_font *f, uint32_t glyph, vkl_font_bitmap *out, vkl_err *e);

#endif
