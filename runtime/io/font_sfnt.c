/* Opening a font: the sfnt table directory, then the tables other files
 * check (cmap in font_cmap.c, CBLC/CBDT in font_cbdt.c). Every table record
 * is checked to lie inside the file here, so later code only has to check
 * offsets against its own table. */
#include "io/font_internal.h"
#include "io/image.h"

#include <stdlib.h>
#include <string.h>

const vkl_font_table *vkl_font_find_table(const vkl_font *f, uint32_t tag)
{
    for (int i = 0; i < f->ntables; i++)
        if (f->tables[i].tag == tag) return &f->tables[i];
    return NULL;
}

static void tag_text(uint32_t tag, char out[5])
{
    for (int i = 0; i < 4; i++) {
        char c = (char)(tag >> (24 - 8 * i));
        out[i] = c >= 0x20 && c < 0x7f ? c : '?';
    }
    out[4] = 0;
}

static int read_directory(vkl_font *f, vkl_err *e)
{
    if (f->size < 12) return vkl_fail(e, "%s: not a font: %zu bytes, shorter than the sfnt header", f->label, f->size);
    uint32_t version = vkl_be32(f->data);
    if (version == VKL_FONT_TAG('t', 't', 'c', 'f'))
        return vkl_fail(e, "%s: font collections (.ttc) are not supported", f->label);
    if (version != 0x00010000u && version != VKL_FONT_TAG('O', 'T', 'T', 'O') &&
        version != VKL_FONT_TAG('t', 'r', 'u', 'e'))
        return vkl_fail(e, "%s: not a TrueType/OpenType font (sfnt version 0x%08x)", f->label, version);
    int n = vkl_be16(f->data + 4);
    if (n == 0) return vkl_fail(e, "%s: the table directory is empty", f->label);
    if (12 + (size_t)n * 16 > f->size)
        return vkl_fail(e, "%s: table directory of %d tables needs %zu bytes, the file has %zu (truncated?)",
                        f->label, n, 12 + (size_t)n * 16, f->size);
    f->tables = calloc((size_t)n, sizeof *f->tables);
    if (!f->tables) return vkl_fail(e, "%s: out of memory", f->label);
    f->ntables = n;
    for (int i = 0; i < n; i++) {
        const uint8_t *r = f->data + 12 + (size_t)i * 16;
        vkl_font_table *t = &f->tables[i];
        t->tag = vkl_be32(r);
        t->offset = vkl_be32(r + 8);
        t->length = vkl_be32(r + 12);
        if ((uint64_t)t->offset + t->length > f->size) {
            char tag[5];
            tag_text(t->tag, tag);
            return vkl_fail(e, "%s: table '%s' at offset %u with %u bytes runs past the end of the file (%zu bytes; truncated?)",
                            f->label, tag, t->offset, t->length, f->size);
        }
    }
    return 0;
}

static int read_maxp(vkl_font *f, vkl_err *e)
{
    const vkl_font_table *t = vkl_font_find_table(f, VKL_FONT_TAG('m', 'a', 'x', 'p'));
    f->nglyphs = 65536;
    if (!t) return 0;
    if (t->length < 6) return vkl_fail(e, "%s: maxp table: %u bytes, shorter than its header", f->label, t->length);
    f->nglyphs = vkl_be16(f->data + t->offset + 4);
    return 0;
}

/* Takes ownership of buf (freed on failure too). */
static int open_owned(uint8_t *buf, size_t size, const char *label, vkl_font **out, vkl_err *e)
{
    vkl_font *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label))) {
        free(f);
        free(buf);
        return vkl_fail(e, "%s: out of memory", label);
    }
    f->data = buf;
    f->size = size;
    if (read_directory(f, e) || read_maxp(f, e) || vkl_font_cmap_init(f, e) || vkl_font_cbdt_init(f, e)) {
        vkl_font_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int vkl_font_open_memory(const void *buf, size_t size, const char *label, vkl_font **out, vkl_err *e)
{
    *out = NULL;
    if (!label) label = "(memory)";
    if (size > VKL_FONT_MAX_FILE_BYTES)
        return vkl_fail(e, "%s: %zu bytes is larger than the %llu a font may have", label, size,
                        (unsigned long long)VKL_FONT_MAX_FILE_BYTES);
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy) return vkl_fail(e, "%s: out of memory", label);
    memcpy(copy, buf, size);
    return open_owned(copy, size, label, out, e);
}

int vkl_font_open(const char *path, vkl_font **out, vkl_err *e)
{
    *out = NULL;
    uint8_t *buf;
    size_t n;
    if (vkl_read_file_bytes(path, VKL_FONT_MAX_FILE_BYTES, &buf, &n, e)) return -1;
    return open_owned(buf, n, path, out, e);
}

void vkl_font_close(vkl_font *f)
{
    if (!f) return;
    free(f->label);
    free(f->data);
    free(f->tables);
    free(f);
}

int vkl_font_glyph_count(const vkl_font *f) { return f->nglyphs; }
