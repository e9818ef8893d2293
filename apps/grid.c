#include "grid.h"

#include <string.h>

/* 3x5 glyphs, one row per byte (bits 2..0 = left..right). */
static const struct { char c; unsigned char rows[5]; } glyphs[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'.', {0, 0, 0, 0, 2}}, {'-', {0, 0, 7, 0, 0}},
    {':', {0, 2, 0, 2, 0}},
};

static void draw_text(uint8_t *px, int W, int x0, int y0, int scale, const char *s)
{
    for (; *s; s++) {
        const unsigned char *rows = NULL;
        for (size_t g = 0; g < sizeof glyphs / sizeof *glyphs; g++)
            if (glyphs[g].c == *s) rows = glyphs[g].rows;
        if (!rows) continue;
        for (int r = 0; r < 5; r++)
            for (int c = 0; c < 3; c++)
                if (rows[r] & (4 >> c))
                    for (int dy = 0; dy < scale; dy++)
                        for (int dx = 0; dx < scale; dx++) {
                            uint8_t *p = px + ((size_t)(y0 + r * scale + dy) * W + x0 + c * scale + dx) * 3;
                            p[0] = p[1] = p[2] = 0;
                        }
        x0 += 4 * scale;
    }
}

int vkl_grid_row(const vkl_image *imgs, const char *const *labels, int n, vkl_image *out, vkl_err *e)
{
    if (n < 1) return vkl_fail(e, "an empty grid");
    int w = imgs[0].width, h = imgs[0].height, band = 8 * 4;
    if (vkl_image_alloc(out, w * n, h + band, 3, VKL_PIX_U8, e)) return -1;
    uint8_t *px = vkl_image_u8(out);
    int W = w * n;
    memset(px, 255, (size_t)W * band * 3);
    for (int i = 0; i < n; i++) {
        if (imgs[i].width != w || imgs[i].height != h || imgs[i].channels != 3 || imgs[i].type != VKL_PIX_U8) {
            vkl_image_free(out);
            return vkl_fail(e, "grid images differ in size or type");
        }
        for (int y = 0; y < h; y++)
            memcpy(px + ((size_t)(band + y) * W + (size_t)i * w) * 3, vkl_image_u8(&imgs[i]) + (size_t)y * w * 3,
                   (size_t)w * 3);
        int scale = 4, tw = (int)strlen(labels[i]) * 4 * scale;
        draw_text(px, W, i * w + (w - tw > 0 ? (w - tw) / 2 : 0), 6, scale, labels[i]);
    }
    return 0;
}
