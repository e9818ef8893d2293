/* JPEG marker walk. stb_image returns whatever it decoded from a progressive
 * JPEG cut off mid-scan, which would put a half-grey image into a training
 * set without a word, so the structure is checked first: segments must lie
 * inside the file and EOI must be reached. The walk also picks up the EXIF
 * orientation, which stb ignores. */
#include "io/image_internal.h"

#include <string.h>

static int is_sof(int m)
{
    return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

int vkl_jpeg_scan(const uint8_t *buf, size_t size, const char *label, int *width, int *height,
                  int *orientation, vkl_err *e)
{
    if (size < 4 || buf[0] != 0xff || buf[1] != 0xd8)
        return vkl_fail(e, "%s: not a JPEG file (no SOI marker)", label);
    int seen_sof = 0, seen_sos = 0;
    *width = *height = 0;
    *orientation = 1;
    size_t pos = 2;
    for (;;) {
        /* Encoders may pad with 0xff fill bytes; libjpeg also skips stray bytes
         * before a marker with a warning, and so do we. */
        while (pos < size && buf[pos] != 0xff) pos++;
        while (pos < size && buf[pos] == 0xff) pos++;
        if (pos >= size)
            return vkl_fail(e, "%s: JPEG ends at byte %zu without an EOI marker (truncated)",
                            label, size);
        int m = buf[pos++];
        if (m == 0xd9) break;
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd8)) continue; /* no length */
        if (size - pos < 2)
            return vkl_fail(e, "%s: JPEG truncated in marker 0x%02x", label, m);
        size_t len = (size_t)buf[pos] << 8 | buf[pos + 1];
        if (len < 2 || len > size - pos)
            return vkl_fail(e, "%s: JPEG segment 0x%02x at byte %zu has length %zu past the end "
                            "of the file (truncated)", label, m, pos - 2, len);
        const uint8_t *seg = buf + pos + 2;
        size_t slen = len - 2;
        if (is_sof(m)) {
            if (slen < 6) return vkl_fail(e, "%s: JPEG frame header too short", label);
            /* what stb_image decodes: baseline, extended and progressive
             * Huffman coding with 8-bit samples */
            if (m >= 0xc9)
                return vkl_fail(e, "%s: arithmetic-coded JPEG (SOF%d) is not supported", label,
                                m - 0xc0);
            if (m == 0xc3 || m == 0xc7)
                return vkl_fail(e, "%s: lossless JPEG (SOF%d) is not supported", label, m - 0xc0);
            if (seg[0] != 8)
                return vkl_fail(e, "%s: %d-bit JPEG is not supported (8-bit samples only)", label,
                                seg[0]);
            *height = seg[1] << 8 | seg[2];
            *width = seg[3] << 8 | seg[4];
            seen_sof = 1;
        } else if (m == 0xe1 && *orientation == 1) {
            *orientation = vkl_exif_orientation(seg, slen);
        }
        pos += len;
        if (m == 0xda) {
            if (!seen_sof) return vkl_fail(e, "%s: JPEG scan before any frame header", label);
            seen_sos = 1;
            /* Entropy-coded data: 0xff is followed by 0x00 (a stuffed byte) or a
             * restart marker; anything else ends the scan. */
            while (pos + 1 < size) {
                if (buf[pos] == 0xff && buf[pos + 1] != 0x00 &&
                    !(buf[pos + 1] >= 0xd0 && buf[pos + 1] <= 0xd7) && buf[pos + 1] != 0xff)
                    break;
                pos++;
            }
            if (pos + 1 >= size)
                return vkl_fail(e, "%s: JPEG ends inside scan data without an EOI marker "
                                "(truncated)", label);
        }
    }
    if (!seen_sof || !seen_sos)
        return vkl_fail(e, "%s: JPEG has no %s", label, seen_sof ? "scan (SOS)" : "frame header");
    return vkl_image_check_size((uint64_t)*width, (uint64_t)*height, label, e);
}
