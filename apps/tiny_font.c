#include "tiny_font.h"

#include <string.h>

/* one row per byte, bits 2..0 = left..right */
static const struct { char c; unsigned char rows[5]; } glyphs[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'.', {0, 0, 0, 0, 2}}, {'-', {0, 0, 7, 0, 0}},
    {'+', {0, 2, 7, 2, 0}}, {':', {0, 2, 0, 2, 0}}, {'e', {0, 7, 7, 4, 7}}, {'S', {3, 4, 2, 1, 6}},
    {'T', {7, 2, 2, 2, 2}}, {'E', {7, 4, 6, 4, 7}}, {'P', {6, 5, 6, 4, 4}}, {'L', {4, 4, 4, 4, 7}},
    {'O', {2, 5, 5, 5, 2}},
};

void vkl_tiny_text(uint8_t *px, int W, int H, int x, int y, int scale, const char *s, const uint8_t rgb[3])
{
    for (; *s; s++, x += 4 * scale) {
        const unsigned char *rows = NULL;
        for (size_t g = 0; g < sizeof glyphs / sizeof *glyphs; g++)
            if (glyphs[g].c == *s) rows = glyphs[g].rows;
        if (!rows) continue;
        for (int r = 0; r < 5; r++)
            for (int c = 0; c < 3; c++)
                if (rows[r] & (4 >> c))
                    for (int dy = 0; dy < scale; dy++)
                        for (int dx = 0; dx < scale; dx++) {
                            int xx = x + c * scale + dx, yy = y + r * scale + dy;
                            if (xx < 0 || yy < 0 || xx >= W || yy >= H) continue;
                            memcpy(px + ((size_t)yy * W + xx) * 3, rgb, 3);
                        }
    }
}

int vkl_tiny_text_width(const char *s, int scale)
{
    int n = (int)strlen(s);
    return n ? n * 4 * scale - scale : 0;
}
