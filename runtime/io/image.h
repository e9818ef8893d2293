/* Images: reading (PNG, JPEG, BMP, GIF first frame, TGA), resizing and
 * cropping, writing PNG with text chunks, and reading text chunks back.
 *
 * Pixels are row-major and interleaved (y, x, channel), top row first.
 * Float pixels are in [0, 1]. Channels: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.
 *
 * Every read checks the header dimensions against VKL_IMAGE_MAX_SIDE and
 * VKL_IMAGE_MAX_PIXELS before anything the size of the image is allocated,
 * and every failure is an error naming the file (or the label of a buffer). */
#ifndef VKL_IMAGE_H
#define VKL_IMAGE_H

#include "io/text.h"
#include "vkl_base.h"

#define VKL_IMAGE_MAX_SIDE 16384
#define VKL_IMAGE_MAX_PIXELS (1ull << 28)
/* Files larger than this are refused before being read into memory. */
#define VKL_IMAGE_MAX_FILE_BYTES (1ull << 30)

typedef enum vkl_pixel_type { VKL_PIX_U8 = 0, VKL_PIX_F32 = 1 } vkl_pixel_type;

typedef enum vkl_image_format {
    VKL_IMG_UNKNOWN = 0,
    VKL_IMG_PNG,
    VKL_IMG_JPEG,
    VKL_IMG_BMP,
    VKL_IMG_GIF,
    VKL_IMG_TGA,
} vkl_image_format;

const char *vkl_image_format_name(vkl_image_format f); /* "PNG", "JPEG", ... */

typedef struct vkl_image {
    int width, height, channels;
    vkl_pixel_type type;
    void *data; /* width*height*channels elements, malloc'd; vkl_image_free releases */
} vkl_image;

static inline uint8_t *vkl_image_u8(const vkl_image *im) { return (uint8_t *)im->data; }
static inline float *vkl_image_f32(const vkl_image *im) { return (float *)im->data; }

/* Allocates a zeroed image; refuses sizes over the limits. */
int vkl_image_alloc(vkl_image *im, int width, int height, int channels, vkl_pixel_type type,
                    vkl_err *e);
void vkl_image_free(vkl_image *im);
/* New image with another pixel type (u8 <-> f32, rounding and clamping to u8). */
int vkl_image_convert(const vkl_image *src, vkl_pixel_type type, vkl_image *out, vkl_err *e);

typedef struct vkl_image_info {
    vkl_image_format format;
    int width, height;  /* as displayed: after the EXIF orientation is applied */
    int channels;       /* stored in the file (1..4) */
    int bits;           /* bits per channel of the decoded samples: 8 or 16 */
    int orientation;    /* EXIF orientation 1..8 (1 when absent or not JPEG) */
} vkl_image_info;

/* Validates the container (for PNG: signature, chunk structure, CRC-32 of
 * every chunk, header fields, compressed data) and reports the header, without
 * decoding pixels. */
int vkl_image_info_memory(const void *buf, size_t size, const char *label, vkl_image_info *out,
                          vkl_err *e);
int vkl_image_info_file(const char *path, vkl_image_info *out, vkl_err *e);

/* Decodes an image. channels: 0 keeps the file's channel count, 1..4 converts
 * (for example 3 = RGB, dropping alpha). JPEG EXIF orientation is applied, so
 * the result is upright. info may be NULL. */
int vkl_image_read_memory(const void *buf, size_t size, const char *label, int channels,
                          vkl_pixel_type type, vkl_image *out, vkl_image_info *info, vkl_err *e);
int vkl_image_read_file(const char *path, int channels, vkl_pixel_type type, vkl_image *out,
                        vkl_image_info *info, vkl_err *e);

/* vkl_read_file_bytes, the whole file in memory: io/text.h */

/* ---- geometry (float images only) ---- */

typedef enum vkl_resize_filter {
    VKL_RESIZE_LANCZOS3 = 0, /* windowed sinc, support widened by the scale when shrinking */
    VKL_RESIZE_AREA = 1,     /* each output pixel = mean of the input area it covers */
} vkl_resize_filter;

/* Resizes to width x height (each >= 1). Lanczos output is not clamped, so
 * ringing can leave [0, 1] slightly; callers that need [0, 1] clamp. */
int vkl_image_resize(const vkl_image *src, int width, int height, vkl_resize_filter filter,
                     vkl_image *out, vkl_err *e);
/* Copies the width x height rectangle at (x, y); it must lie inside src. Any pixel type. */
int vkl_image_crop(const vkl_image *src, int x, int y, int width, int height, vkl_image *out,
                   vkl_err *e);
/* Centre crop to width x height (each <= the source size). Any pixel type. */
int vkl_image_center_crop(const vkl_image *src, int width, int height, vkl_image *out,
                          vkl_err *e);
/* Scales so the image covers width x height keeping its aspect ratio, then
 * centre-crops: what training wants for a fixed-size bucket. */
int vkl_image_resize_cover(const vkl_image *src, int width, int height, vkl_resize_filter filter,
                           vkl_image *out, vkl_err *e);

/* Applies an EXIF orientation (1..8) so the result is upright; any pixel type. */
int vkl_image_orient(const vkl_image *src, int orientation, vkl_image *out, vkl_err *e);

/* ---- PNG text chunks and writing ---- */

typedef struct vkl_png_text {
    char *key;   /* keyword: 1..79 bytes; printable ASCII when writing */
    char *value; /* UTF-8 (tEXt/zTXt are Latin-1 in the file and converted on reading) */
} vkl_png_text;

/* Writes an 8-bit RGB or RGBA (or grey, grey+alpha) PNG with tEXt chunks
 * (iTXt where a value is not plain ASCII), to a temporary file renamed over
 * path only when complete. A float image is rounded to 8 bits. */
int vkl_png_write(const char *path, const vkl_image *im, const vkl_png_text *texts, int ntexts,
                  vkl_err *e);

/* The same PNG bytes in memory (malloc'd *out), for writers that place and
 * sync files themselves, such as a folder written as a whole. label names the
 * image in messages. */
int vkl_png_encode(const vkl_image *im, const vkl_png_text *texts, int ntexts, const char *label,
                   uint8_t **out, size_t *size, vkl_err *e);

/* Reads every tEXt, zTXt and iTXt chunk of a PNG (whose chunks and CRCs are
 * checked). Compressed text is inflated with a size limit per chunk (as
 * Pillow does) and in all, so a text bomb is an error, not an allocation.
 * Returns the array in *out, free with vkl_png_texts_free. */
#define VKL_PNG_TEXT_CHUNK_MAX_BYTES (1u << 20)
#define VKL_PNG_TEXT_MAX_BYTES (16u << 20)
int vkl_png_read_texts_memory(const void *buf, size_t size, const char *label, vkl_png_text **out,
                              int *count, vkl_err *e);
int vkl_png_read_texts_file(const char *path, vkl_png_text **out, int *count, vkl_err *e);
void vkl_png_texts_free(vkl_png_text *t, int count);
/* The value for key, or NULL. */
const char *vkl_png_text_get(const vkl_png_text *t, int count, const char *key);

#endif
