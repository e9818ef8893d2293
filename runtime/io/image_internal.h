/* Internals shared by the image files in runtime/io: container walkers that
 * validate PNG and JPEG structure before any decoder sees the bytes. */
#ifndef VKL_IMAGE_INTERNAL_H
#define VKL_IMAGE_INTERNAL_H

#include "io/image.h"

typedef struct vkl_png_header {
    uint32_t width, height;
    int bit_depth, color_type, interlace;
    int has_trns; /* a tRNS chunk adds an alpha channel on decode */
} vkl_png_header;

/* Called for every chunk after IHDR, in file order; returns 0 to go on, -1 to stop with e set. */
typedef int (*vkl_png_chunk_fn)(void *ctx, const char type[4], const uint8_t *data, uint32_t len,
                                vkl_err *e);

/* Walks a PNG: signature, chunk lengths inside the file, CRC-32 of every
 * chunk, IHDR first and valid, PLTE where required, at least one IDAT, IEND
 * present; unknown critical chunks and Apple CgBI files are refused. Data
 * after IEND is ignored. fn may be NULL. Errors are prefixed with label. */
int vkl_png_walk(const uint8_t *buf, size_t size, const char *label, vkl_png_header *hdr,
                 vkl_png_chunk_fn fn, void *ctx, vkl_err *e);

/* vkl_png_walk, then inflates the concatenated IDAT data (checking zlib's
 * Adler-32) and checks that it holds the filtered scanlines the header
 * promises: not fewer, and not vastly more (a decompression bomb). Bytes after
 * the zlib stream are ignored. */
int vkl_png_validate(const uint8_t *buf, size_t size, const char *label, vkl_png_header *hdr,
                     vkl_err *e);

/* Walks JPEG markers up to EOI (which must be present: a truncated scan is an
 * error), returning the frame size and the EXIF orientation (1 when absent). */
int vkl_jpeg_scan(const uint8_t *buf, size_t size, const char *label, int *width, int *height,
                  int *orientation, vkl_err *e);

/* Orientation tag (0x0112) from an APP1 Exif payload (starting at "Exif\0\0"),
 * either byte order; 1 when absent or malformed (EXIF is advisory). */
int vkl_exif_orientation(const uint8_t *app1, size_t size);

/* Checks width/height against the limits; label names the file. */
int vkl_image_check_size(uint64_t width, uint64_t height, const char *label, vkl_err *e);

#endif
