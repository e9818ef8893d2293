/* PNG container validation.
 *
 * stb_image decodes PNG pixels well (every colour type, 16 bits, Adam7) but
 * does not verify chunk CRCs, so a file with a damaged chunk would decode into
 * silently wrong pixels. Rather than decode PNGs twice with two libraries, we
 * walk the chunks ourselves first (CRC-32 from zlib, lengths, order, header
 * fields) and inflate the IDAT stream once with zlib to check its Adler-32 and
 * its size against the header; only a file that passes reaches stb. */
#include "io/image_internal.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a};

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int valid_depth(int color_type, int depth)
{
    switch (color_type) {
    case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    case 2: case 4: case 6: return depth == 8 || depth == 16;
    default: return 0;
    }
}

static int is_known_critical(const uint8_t *t)
{
    return !memcmp(t, "IHDR", 4) || !memcmp(t, "PLTE", 4) || !memcmp(t, "IDAT", 4) ||
           !memcmp(t, "IEND", 4);
}

static void chunk_name(const uint8_t *t, char out[5])
{
    for (int i = 0; i < 4; i++) out[i] = (t[i] >= 0x20 && t[i] < 0x7f) ? (char)t[i] : '?';
    out[4] = 0;
}

int vkl_image_check_size(uint64_t width, uint64_t height, const char *label, vkl_err *e)
{
    if (width == 0 || height == 0)
        return vkl_fail(e, "%s: image size %llux%llu is empty", label, (unsigned long long)width,
                        (unsigned long long)height);
    if (width > VKL_IMAGE_MAX_SIDE || height > VKL_IMAGE_MAX_SIDE ||
        width * height > VKL_IMAGE_MAX_PIXELS)
        return vkl_fail(e, "%s: image size %llux%llu is over the limit (%d per side, %llu pixels)",
                        label, (unsigned long long)width, (unsigned long long)height,
                        VKL_IMAGE_MAX_SIDE, (unsigned long long)VKL_IMAGE_MAX_PIXELS);
    return 0;
}

int vkl_png_walk(const uint8_t *buf, size_t size, const char *label, vkl_png_header *hdr,
                 vkl_png_chunk_fn fn, void *ctx, vkl_err *e)
{
    if (size < 8 || memcmp(buf, png_sig, 8) != 0)
        return vkl_fail(e, "%s: corrupt PNG signature (the file was damaged, e.g. by a text-mode "
                        "transfer)", label);
    size_t pos = 8;
    int seen_ihdr = 0, seen_plte = 0, nidat = 0;
    memset(hdr, 0, sizeof *hdr);
    for (;;) {
        if (size - pos < 12)
            return vkl_fail(e, "%s: PNG truncated at byte %zu (no IEND chunk)", label, pos);
        uint32_t len = be32(buf + pos);
        const uint8_t *type = buf + pos + 4;
        char name[5];
        chunk_name(type, name);
        if (len > 0x7fffffffu)
            return vkl_fail(e, "%s: PNG chunk '%s' at byte %zu has invalid length %u", label, name,
                            pos, len);
        if ((uint64_t)len + 12 > size - pos)
            return vkl_fail(e, "%s: PNG chunk '%s' at byte %zu claims %u bytes but the file ends "
                            "after %zu (truncated)", label, name, pos, len, size - pos - 12);
        for (int i = 0; i < 4; i++) {
            uint8_t c = type[i];
            if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
                return vkl_fail(e, "%s: invalid PNG chunk type '%s' at byte %zu", label, name, pos);
        }
        const uint8_t *data = buf + pos + 8;
        uint32_t want = be32(data + len);
        uint32_t got = (uint32_t)crc32(crc32(0L, Z_NULL, 0), type, len + 4);
        if (want != got)
            return vkl_fail(e, "%s: PNG chunk '%s' at byte %zu has a bad CRC (stored %08x, computed "
                            "%08x): the file is corrupt", label, name, pos, want, got);
        if (!memcmp(type, "CgBI", 4))
            return vkl_fail(e, "%s: Apple CgBI ('iPhone-optimized') PNG is not a standard PNG "
                            "(byte-swapped, premultiplied); convert it with pngcrush "
                            "-revert-iphone-optimizations", label);
        if (!seen_ihdr) {
            if (memcmp(type, "IHDR", 4) != 0)
                return vkl_fail(e, "%s: first PNG chunk is '%s', not IHDR", label, name);
            if (len != 13) return vkl_fail(e, "%s: PNG IHDR has length %u, not 13", label, len);
            hdr->width = be32(data);
            hdr->height = be32(data + 4);
            hdr->bit_depth = data[8];
            hdr->color_type = data[9];
            hdr->interlace = data[12];
            if (hdr->width > 0x7fffffffu || hdr->height > 0x7fffffffu)
                return vkl_fail(e, "%s: PNG size %ux%u is invalid", label, hdr->width, hdr->height);
            if (vkl_image_check_size(hdr->width, hdr->height, label, e)) return -1;
            if (!valid_depth(hdr->color_type, hdr->bit_depth))
                return vkl_fail(e, "%s: PNG colour type %d with bit depth %d is invalid", label,
                                hdr->color_type, hdr->bit_depth);
            if (data[10] != 0 || data[11] != 0 || hdr->interlace > 1)
                return vkl_fail(e, "%s: PNG compression/filter/interlace method %d/%d/%d unknown",
                                label, data[10], data[11], data[12]);
            seen_ihdr = 1;
        } else if (!memcmp(type, "IHDR", 4)) {
            return vkl_fail(e, "%s: second PNG IHDR chunk at byte %zu", label, pos);
        } else if (!memcmp(type, "PLTE", 4)) {
            if (nidat) return vkl_fail(e, "%s: PNG PLTE after IDAT", label);
            if (len == 0 || len % 3 || len / 3 > 256u)
                return vkl_fail(e, "%s: PNG PLTE has invalid length %u", label, len);
            seen_plte = 1;
        } else if (!memcmp(type, "IDAT", 4)) {
            if (hdr->color_type == 3 && !seen_plte)
                return vkl_fail(e, "%s: palette PNG has no PLTE before its IDAT", label);
            nidat++;
        } else if (!memcmp(type, "tRNS", 4)) {
            hdr->has_trns = 1;
        } else if (!memcmp(type, "IEND", 4)) {
            if (!nidat) return vkl_fail(e, "%s: PNG has no IDAT chunk (no image data)", label);
            return 0;
        } else if (!(type[0] & 0x20) && !is_known_critical(type)) {
            return vkl_fail(e, "%s: unknown critical PNG chunk '%s'", label, name);
        }
        if (fn && fn(ctx, (const char *)type, data, len, e)) return -1;
        pos += (size_t)len + 12;
    }
}

/* Bytes of filtered scanlines (one filter byte per row) for a w x h pass. */
static uint64_t pass_bytes(uint64_t w, uint64_t h, int bits_per_pixel)
{
    if (w == 0 || h == 0) return 0;
    return h * (1 + (w * (uint64_t)bits_per_pixel + 7) / 8);
}

static uint64_t expected_raw(const vkl_png_header *h)
{
    static const int samples[7] = {1, 0, 3, 1, 2, 0, 4};
    if (h->color_type < 0 || h->color_type > 6) return 0; /* walk refuses these */
    int bpp = samples[h->color_type] * h->bit_depth;
    if (!h->interlace) return pass_bytes(h->width, h->height, bpp);
    /* Adam7: pass origin and step in x and y */
    static const int x0[7] = {0, 4, 0, 2, 0, 1, 0}, dx[7] = {8, 8, 4, 4, 2, 2, 1};
    static const int y0[7] = {0, 0, 4, 0, 2, 0, 1}, dy[7] = {8, 8, 8, 4, 4, 2, 2};
    uint64_t total = 0;
    for (int p = 0; p < 7; p++) {
        uint64_t pw = h->width > (uint32_t)x0[p] ? (h->width - x0[p] + dx[p] - 1) / dx[p] : 0;
        uint64_t ph = h->height > (uint32_t)y0[p] ? (h->height - y0[p] + dy[p] - 1) / dy[p] : 0;
        total += pass_bytes(pw, ph, bpp);
    }
    return total;
}

typedef struct {
    z_stream z;
    int ended, zerr;
    uint64_t out, limit;
    const vkl_png_header *hdr;
    uint8_t sink[16384];
} idat_ctx;

static int idat_feed(void *vctx, const char type[4], const uint8_t *data, uint32_t len, vkl_err *e)
{
    (void)e;
    idat_ctx *c = vctx;
    if (memcmp(type, "IDAT", 4) != 0 || c->ended || c->zerr) return 0;
    if (!c->limit) {
        /* Some encoders leave a little extra data in the stream (libpng only
         * warns); beyond this margin it is a decompression bomb. */
        uint64_t need = expected_raw(c->hdr);
        c->limit = need + need / 4 + 4096;
    }
    if (c->out > c->limit) return 0;
    c->z.next_in = (Bytef *)data;
    c->z.avail_in = len;
    while (c->z.avail_in > 0 && !c->ended) {
        c->z.next_out = c->sink;
        c->z.avail_out = sizeof c->sink;
        int r = inflate(&c->z, Z_NO_FLUSH);
        c->out += sizeof c->sink - c->z.avail_out;
        if (r == Z_STREAM_END) {
            c->ended = 1;
        } else if (r != Z_OK && r != Z_BUF_ERROR) {
            c->zerr = r;
            return 0;
        }
        if (c->out > c->limit) return 0;
        if (r == Z_BUF_ERROR && c->z.avail_out != 0) break; /* needs the next IDAT */
    }
    return 0;
}

int vkl_png_validate(const uint8_t *buf, size_t size, const char *label, vkl_png_header *hdr,
                     vkl_err *e)
{
    idat_ctx *c = calloc(1, sizeof *c);
    if (!c) return vkl_fail(e, "%s: out of memory", label);
    c->hdr = hdr; /* filled by the walk from IHDR before any IDAT arrives */
    if (inflateInit(&c->z) != Z_OK) {
        free(c);
        return vkl_fail(e, "%s: zlib initialisation failed", label);
    }
    int rc = vkl_png_walk(buf, size, label, hdr, idat_feed, c, e);
    if (rc == 0) {
        uint64_t need = expected_raw(hdr);
        if (c->zerr)
            rc = vkl_fail(e, "%s: PNG image data is corrupt (zlib: %s)", label,
                          c->z.msg ? c->z.msg : "error");
        else if (c->out > c->limit)
            rc = vkl_fail(e, "%s: PNG image data inflates to more than %llu bytes, far over the "
                          "%llu the %ux%u image needs", label, (unsigned long long)c->limit,
                          (unsigned long long)need, hdr->width, hdr->height);
        else if (c->out < need)
            rc = vkl_fail(e, "%s: PNG image data holds %llu bytes, the %ux%u image needs %llu "
                          "(truncated)", label, (unsigned long long)c->out, hdr->width,
                          hdr->height, (unsigned long long)need);
        else if (!c->ended)
            rc = vkl_fail(e, "%s: PNG image data stream is not terminated (truncated)", label);
    }
    inflateEnd(&c->z);
    free(c);
    return rc;
}
