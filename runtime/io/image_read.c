/* Image decoding: our own container checks (png_chunks.c, jpeg_scan.c) and a
 * size check on the header come first; stb_image (linked from Debian's libstb,
 * which already holds the implementation, so STB_IMAGE_IMPLEMENTATION is not
 * defined here) then decodes the pixels. */
#include "io/image_internal.h"

#include <stdlib.h>
#include <string.h>

#include <stb_image.h>

const char *vkl_image_format_name(vkl_image_format f)
{
    switch (f) {
    case VKL_IMG_PNG: return "PNG";
    case VKL_IMG_JPEG: return "JPEG";
    case VKL_IMG_BMP: return "BMP";
    case VKL_IMG_GIF: return "GIF";
    case VKL_IMG_TGA: return "TGA";
    default: return "unknown";
    }
}

int vkl_image_alloc(vkl_image *im, int width, int height, int channels, vkl_pixel_type type,
                    vkl_err *e)
{
    memset(im, 0, sizeof *im);
    if (width < 1 || height < 1 || channels < 1 || channels > 4)
        return vkl_fail(e, "image %dx%d with %d channels is invalid", width, height, channels);
    if (vkl_image_check_size((uint64_t)width, (uint64_t)height, "image", e)) return -1;
    size_t n = (size_t)width * (size_t)height * (size_t)channels;
    im->data = calloc(n, type == VKL_PIX_F32 ? sizeof(float) : 1);
    if (!im->data)
        return vkl_fail(e, "out of memory for a %dx%dx%d image", width, height, channels);
    im->width = width;
    im->height = height;
    im->channels = channels;
    im->type = type;
    return 0;
}

void vkl_image_free(vkl_image *im)
{
    if (!im) return;
    free(im->data);
    memset(im, 0, sizeof *im);
}

int vkl_image_convert(const vkl_image *src, vkl_pixel_type type, vkl_image *out, vkl_err *e)
{
    if (vkl_image_alloc(out, src->width, src->height, src->channels, type, e)) return -1;
    size_t n = (size_t)src->width * src->height * src->channels;
    if (src->type == type) {
        memcpy(out->data, src->data, n * (type == VKL_PIX_F32 ? sizeof(float) : 1));
    } else if (type == VKL_PIX_F32) {
        const uint8_t *s = src->data;
        float *d = out->data;
        for (size_t i = 0; i < n; i++) d[i] = s[i] * (1.0f / 255.0f);
    } else {
        const float *s = src->data;
        uint8_t *d = out->data;
        for (size_t i = 0; i < n; i++) {
            float v = s[i] * 255.0f + 0.5f;
            d[i] = !(v > 0.0f) ? 0 : v >= 255.0f ? 255 : (uint8_t)v; /* NaN -> 0 */
        }
    }
    return 0;
}

static vkl_image_format sniff(const uint8_t *b, size_t n)
{
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return VKL_IMG_PNG;
    /* a damaged signature in front of an IHDR is still a (corrupt) PNG */
    if (n >= 16 && !memcmp(b + 12, "IHDR", 4)) return VKL_IMG_PNG;
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return VKL_IMG_JPEG;
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return VKL_IMG_BMP;
    if (n >= 6 && (!memcmp(b, "GIF87a", 6) || !memcmp(b, "GIF89a", 6))) return VKL_IMG_GIF;
    /* stb also reads PSD, HDR, PNM and PIC; those are not formats we promise,
     * so they are named and refused instead of half-supported. TGA has no
     * signature and is what is left for stb to try. */
    if (n >= 4 && !memcmp(b, "8BPS", 4)) return VKL_IMG_UNKNOWN;
    if (n >= 2 && b[0] == '#' && b[1] == '?') return VKL_IMG_UNKNOWN;
    if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7') return VKL_IMG_UNKNOWN;
    if (n >= 4 && !memcmp(b, "\x53\x80\xf6\x34", 4)) return VKL_IMG_UNKNOWN;
    return VKL_IMG_TGA;
}

/* Validates container and header; fills info (except bits for non-PNG, which
 * is 8 unless stb says 16). */
static int probe(const uint8_t *buf, size_t size, const char *label, vkl_image_info *info,
                 vkl_err *e)
{
    memset(info, 0, sizeof *info);
    info->orientation = 1;
    if (size == 0) return vkl_fail(e, "%s: file is empty", label);
    if (size > (size_t)0x7fffffff)
        return vkl_fail(e, "%s: %zu bytes is too large for the decoder", label, size);
    info->format = sniff(buf, size);
    if (info->format == VKL_IMG_UNKNOWN)
        return vkl_fail(e, "%s: unsupported image format (PNG, JPEG, BMP, GIF and TGA are read)",
                        label);
    int png_channels = 0;
    if (info->format == VKL_IMG_PNG) {
        vkl_png_header h;
        if (vkl_png_validate(buf, size, label, &h, e)) return -1;
        /* stb's header-only scan ignores tRNS, its decoder does not: count the
         * alpha a tRNS chunk adds so info and decode agree */
        static const int base[7] = {1, 0, 3, 3, 2, 0, 4};
        png_channels = base[h.color_type] + (h.has_trns && h.color_type != 4 && h.color_type != 6);
    } else if (info->format == VKL_IMG_JPEG) {
        int w, h;
        if (vkl_jpeg_scan(buf, size, label, &w, &h, &info->orientation, e)) return -1;
    }
    int w = 0, h = 0, c = 0;
    if (!stbi_info_from_memory(buf, (int)size, &w, &h, &c)) {
        const char *why = stbi_failure_reason();
        if (info->format == VKL_IMG_TGA)
            return vkl_fail(e, "%s: not a readable image (PNG, JPEG, BMP, GIF or TGA): %s", label,
                            why ? why : "unknown format");
        return vkl_fail(e, "%s: cannot read %s header: %s", label,
                        vkl_image_format_name(info->format), why ? why : "unknown error");
    }
    if (vkl_image_check_size((uint64_t)(w < 0 ? 0 : w), (uint64_t)(h < 0 ? 0 : h), label, e))
        return -1;
    if (c < 1 || c > 4) return vkl_fail(e, "%s: %d channels is not supported", label, c);
    info->channels = png_channels ? png_channels : c;
    info->bits = stbi_is_16_bit_from_memory(buf, (int)size) ? 16 : 8;
    int swap = info->orientation >= 5;
    info->width = swap ? h : w;
    info->height = swap ? w : h;
    return 0;
}

int vkl_image_info_memory(const void *buf, size_t size, const char *label, vkl_image_info *out,
                          vkl_err *e)
{
    return probe(buf, size, label ? label : "(memory)", out, e);
}

int vkl_image_info_file(const char *path, vkl_image_info *out, vkl_err *e)
{
    uint8_t *buf;
    size_t n;
    if (vkl_read_file_bytes(path, VKL_IMAGE_MAX_FILE_BYTES, &buf, &n, e)) return -1;
    int rc = probe(buf, n, path, out, e);
    free(buf);
    return rc;
}

int vkl_image_read_memory(const void *vbuf, size_t size, const char *label, int channels,
                          vkl_pixel_type type, vkl_image *out, vkl_image_info *info_out,
                          vkl_err *e)
{
    const uint8_t *buf = vbuf;
    memset(out, 0, sizeof *out);
    if (!label) label = "(memory)";
    if (channels < 0 || channels > 4)
        return vkl_fail(e, "%s: cannot convert to %d channels", label, channels);
    vkl_image_info info;
    if (probe(buf, size, label, &info, e)) return -1;
    int want = channels ? channels : info.channels;

    int w = 0, h = 0, c = 0;
    vkl_image raw;
    memset(&raw, 0, sizeof raw);
    if (type == VKL_PIX_F32 && info.bits == 16) {
        /* keep all 16 bits instead of stb's truncation to 8 */
        stbi_us *p = stbi_load_16_from_memory(buf, (int)size, &w, &h, &c, want);
        if (!p) goto stb_failed;
        if (vkl_image_alloc(&raw, w, h, want, VKL_PIX_F32, e)) {
            stbi_image_free(p);
            vkl_err_prefix(e, "%s: ", label);
            return -1;
        }
        size_t n = (size_t)w * h * want;
        float *d = raw.data;
        for (size_t i = 0; i < n; i++) d[i] = p[i] * (1.0f / 65535.0f);
        stbi_image_free(p);
    } else {
        stbi_uc *p = stbi_load_from_memory(buf, (int)size, &w, &h, &c, want);
        if (!p) goto stb_failed;
        vkl_image view = {w, h, want, VKL_PIX_U8, p};
        int rc = vkl_image_convert(&view, type, &raw, e);
        stbi_image_free(p);
        if (rc) {
            vkl_err_prefix(e, "%s: ", label);
            return -1;
        }
    }
    if (info.orientation != 1) {
        int rc = vkl_image_orient(&raw, info.orientation, out, e);
        vkl_image_free(&raw);
        if (rc) {
            vkl_err_prefix(e, "%s: ", label);
            return -1;
        }
    } else {
        *out = raw;
    }
    if (info_out) *info_out = info;
    return 0;

stb_failed:;
    const char *why = stbi_failure_reason();
    return vkl_fail(e, "%s: cannot decode %s: %s", label, vkl_image_format_name(info.format),
                    why ? why : "unknown error");
}

int vkl_image_read_file(const char *path, int channels, vkl_pixel_type type, vkl_image *out,
                        vkl_image_info *info, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    uint8_t *buf;
    size_t n;
    if (vkl_read_file_bytes(path, VKL_IMAGE_MAX_FILE_BYTES, &buf, &n, e)) return -1;
    int rc = vkl_image_read_memory(buf, n, path, channels, type, out, info, e);
    free(buf);
    return rc;
}
