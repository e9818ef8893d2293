#include "grid.h"
#include "tiny_font.h"

#include <string.h>

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
        static const uint8_t black[3] = {0, 0, 0};
        int scale = 4, tw = (int)strlen(labels[i]) * 4 * scale;
        vkl_tiny_text(px, W, h + band, i * w + (w - tw > 0 ? (w - tw) / 2 : 0), 6, scale, labels[i], black);
    }
    return 0;
}
