/* EXIF orientation: the tag says how the stored pixels must be turned for
 * display (1 as stored, 2 mirrored, 3 rotated 180, 4 flipped, 5 transposed,
 * 6 rotated 90 clockwise, 7 transversed, 8 rotated 90 counter-clockwise). */
#include "io/image_internal.h"

#include <string.h>

int vkl_image_orient(const vkl_image *src, int orientation, vkl_image *out, vkl_err *e)
{
    if (orientation < 1 || orientation > 8)
        return vkl_fail(e, "EXIF orientation %d is not in 1..8", orientation);
    int W = src->width, H = src->height, C = src->channels;
    int swap = orientation >= 5;
    int OW = swap ? H : W, OH = swap ? W : H;
    if (vkl_image_alloc(out, OW, OH, C, src->type, e)) return -1;
    size_t px = (size_t)C * (src->type == VKL_PIX_F32 ? sizeof(float) : 1);
    const uint8_t *s = src->data;
    uint8_t *d = out->data;
    for (int oy = 0; oy < OH; oy++) {
        for (int ox = 0; ox < OW; ox++) {
            int x, y;
            switch (orientation) {
            case 2: x = W - 1 - ox; y = oy; break;
            case 3: x = W - 1 - ox; y = H - 1 - oy; break;
            case 4: x = ox; y = H - 1 - oy; break;
            case 5: x = oy; y = ox; break;
            case 6: x = oy; y = H - 1 - ox; break;
            case 7: x = W - 1 - oy; y = H - 1 - ox; break;
            case 8: x = W - 1 - oy; y = ox; break;
            default: x = ox; y = oy; break;
            }
            memcpy(d + ((size_t)oy * OW + ox) * px, s + ((size_t)y * W + x) * px, px);
        }
    }
    return 0;
}
