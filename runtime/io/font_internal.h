/* Internals shared by the font files in runtime/io: the opened font, its
 * table directory, and big-endian reads that the callers bounds-check first. */
#ifndef VKL_FONT_INTERNAL_H
#define VKL_FONT_INTERNAL_H

#include "io/font.h"

typedef struct vkl_font_table {
    uint32_t tag;
    uint32_t offset, length; /* checked to lie inside the file */
} vkl_font_table;

struct vkl_font {
    char *label;
    uint8_t *data;
    size_t size;
    vkl_font_table *tables;
    int ntables;
    int nglyphs; /* maxp numGlyphs; 65536 when the font has no maxp */

    /* chosen Unicode cmap subtable (format 4 or 12), checked by font_cmap.c */
    const uint8_t *cmap;
    uint32_t cmap_len;
    int cmap_format;

    /* colour bitmaps, checked by font_cbdt.c; cblc == NULL when absent */
    const uint8_t *cblc, *cbdt;
    uint32_t cblc_len, cbdt_len;
    uint32_t strike_array; /* indexSubTableArrayOffset of the chosen strike, inside CBLC */
    uint32_t strike_nsub;
    int strike_ppem;
};

static inline uint16_t vkl_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t vkl_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#define VKL_FONT_TAG(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (uint32_t)(d))

/* The table with this tag, or NULL. */
const vkl_font_table *vkl_font_find_table(const vkl_font *f, uint32_t tag);

/* Chooses and checks the Unicode subtable of the cmap table (font_cmap.c). */
int vkl_font_cmap_init(vkl_font *f, vkl_err *e);
/* Checks CBLC/CBDT when present and chooses the largest strike (font_cbdt.c). */
int vkl_font_cbdt_init(vkl_font *f, vkl_err *e);

#endif
