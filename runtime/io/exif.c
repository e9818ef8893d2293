/* EXIF orientation from a JPEG APP1 segment. The payload is a small TIFF
 * file: a byte-order mark ("II" little-endian or "MM" big-endian), the magic
 * 42, the offset of IFD0, then 12-byte entries (tag, type, count, value).
 * Only tag 0x0112 (Orientation, SHORT) matters here. A malformed block is
 * ignored rather than fatal: EXIF is advisory and cameras write odd things. */
#include "io/image_internal.h"

#include <string.h>

static unsigned rd16(const uint8_t *p, int le) { return le ? p[0] | p[1] << 8 : p[0] << 8 | p[1]; }

static uint32_t rd32(const uint8_t *p, int le)
{
    return le ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24
              : (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int vkl_exif_orientation(const uint8_t *app1, size_t size)
{
    if (size < 6 + 8 || memcmp(app1, "Exif\0\0", 6) != 0) return 1;
    const uint8_t *t = app1 + 6;
    size_t n = size - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I') le = 1;
    else if (t[0] == 'M' && t[1] == 'M') le = 0;
    else return 1;
    if (rd16(t + 2, le) != 42) return 1;
    uint32_t ifd = rd32(t + 4, le);
    if (ifd < 8 || (uint64_t)ifd + 2 > n) return 1;
    unsigned count = rd16(t + ifd, le);
    for (unsigned i = 0; i < count; i++) {
        uint64_t at = (uint64_t)ifd + 2 + 12ull * i;
        if (at + 12 > n) return 1;
        const uint8_t *ent = t + at;
        if (rd16(ent, le) != 0x0112) continue;
        if (rd16(ent + 2, le) != 3 || rd32(ent + 4, le) != 1) return 1; /* SHORT, count 1 */
        unsigned v = rd16(ent + 8, le);
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}
