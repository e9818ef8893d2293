/* PNG writing with libpng. The file is written under a temporary name in the
 * same folder, flushed to disk and renamed over the target only when
 * complete, so an interrupted run never leaves a half-written image. */
#include "io/image_internal.h"
#include "io/dir.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    jmp_buf jmp;
    char msg[256];
} png_err_ctx;

static void on_error(png_structp png, png_const_charp msg)
{
    png_err_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    longjmp(c->jmp, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static int is_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80) return 0;
    return 1;
}

static int check_key(const char *key, const char *path, vkl_err *e)
{
    size_t n = key ? strlen(key) : 0;
    if (n < 1 || n > 79)
        return vkl_fail(e, "%s: PNG text keyword must be 1..79 bytes (got %zu)", path, n);
    if (key[0] == ' ' || key[n - 1] == ' ')
        return vkl_fail(e, "%s: PNG text keyword '%s' has leading or trailing spaces", path, key);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x20 || c > 0x7e)
            return vkl_fail(e, "%s: PNG text keyword '%s' must be printable ASCII", path, key);
    }
    return 0;
}

/* The libpng part, isolated so setjmp does not clobber the caller's locals. */
static int write_png(FILE *f, const vkl_image *im, const vkl_png_text *texts, int ntexts,
                     png_text *pt, png_err_ctx *ctx)
{
    static const int ctype[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                 PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, on_error, on_warning);
    if (!png) {
        snprintf(ctx->msg, sizeof ctx->msg, "libpng initialisation failed");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(ctx->jmp)) {
        if (!ctx->msg[0]) snprintf(ctx->msg, sizeof ctx->msg, "libpng initialisation failed");
        png_destroy_write_struct(&png, info ? &info : NULL);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)im->width, (png_uint_32)im->height, 8,
                 ctype[im->channels], PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    for (int i = 0; i < ntexts; i++) {
        memset(&pt[i], 0, sizeof pt[i]);
        pt[i].key = (png_charp)texts[i].key;
        pt[i].text = (png_charp)texts[i].value;
        pt[i].text_length = strlen(texts[i].value);
        /* like Pillow (and so A1111): tEXt when the value is plain ASCII,
         * iTXt (UTF-8) otherwise, since tEXt is Latin-1 */
        pt[i].compression = is_ascii(texts[i].value) ? PNG_TEXT_COMPRESSION_NONE
                                                      : PNG_ITXT_COMPRESSION_NONE;
        if (pt[i].compression == PNG_ITXT_COMPRESSION_NONE) {
            pt[i].itxt_length = pt[i].text_length;
            pt[i].text_length = 0;
            pt[i].lang = "";
            pt[i].lang_key = "";
        }
    }
    if (ntexts) png_set_text(png, info, pt, ntexts);
    png_write_info(png, info);
    const uint8_t *px = im->data;
    size_t stride = (size_t)im->width * im->channels;
    for (int y = 0; y < im->height; y++) png_write_row(png, (png_const_bytep)(px + y * stride));
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 0;
}

/* Checks the arguments and gives the 8-bit image to encode (im itself, or
 * its conversion in *u8, which the caller frees). */
static int prepare(const char *path, const vkl_image *im, const vkl_png_text *texts, int ntexts,
                   vkl_image *u8, const vkl_image **src, vkl_err *e)
{
    if (!im || !im->data || im->channels < 1 || im->channels > 4 || im->width < 1 ||
        im->height < 1)
        return vkl_fail(e, "%s: cannot write an empty or invalid image as PNG", path);
    if (ntexts < 0 || (ntexts > 0 && !texts))
        return vkl_fail(e, "%s: invalid text chunk list", path);
    for (int i = 0; i < ntexts; i++) {
        if (check_key(texts[i].key, path, e)) return -1;
        if (!texts[i].value) return vkl_fail(e, "%s: PNG text '%s' has no value", path, texts[i].key);
    }
    memset(u8, 0, sizeof *u8);
    *src = im;
    if (im->type != VKL_PIX_U8) {
        if (vkl_image_convert(im, VKL_PIX_U8, u8, e)) {
            vkl_err_prefix(e, "%s: ", path);
            return -1;
        }
        *src = u8;
    }
    return 0;
}

int vkl_png_encode(const vkl_image *im, const vkl_png_text *texts, int ntexts, const char *label,
                   uint8_t **out, size_t *size, vkl_err *e)
{
    *out = NULL;
    *size = 0;
    if (!label) label = "(memory)";
    vkl_image u8;
    const vkl_image *src;
    if (prepare(label, im, texts, ntexts, &u8, &src, e)) return -1;
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    png_text *pt = calloc((size_t)ntexts + 1, sizeof *pt);
    png_err_ctx *ctx = calloc(1, sizeof *ctx);
    int rc = -1;
    if (!f || !pt || !ctx) {
        vkl_fail(e, "%s: out of memory", label);
    } else if (write_png(f, src, texts, ntexts, pt, ctx)) {
        vkl_fail(e, "%s: encoding PNG failed: %s", label, ctx->msg);
    } else {
        rc = 0;
    }
    if (f && fclose(f) != 0 && !rc) rc = vkl_fail(e, "%s: out of memory", label);
    if (rc) free(buf);
    else *out = (uint8_t *)buf, *size = n;
    free(pt);
    free(ctx);
    vkl_image_free(&u8);
    return rc;
}

int vkl_png_write(const char *path, const vkl_image *im, const vkl_png_text *texts, int ntexts,
                  vkl_err *e)
{
    vkl_image u8;
    const vkl_image *src;
    if (prepare(path, im, texts, ntexts, &u8, &src, e)) return -1;
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    png_text *pt = calloc((size_t)ntexts + 1, sizeof *pt);
    png_err_ctx *ctx = calloc(1, sizeof *ctx);
    int rc = -1, fd = -1;
    FILE *f = NULL;
    if (!tmp || !pt || !ctx) {
        vkl_fail(e, "%s: out of memory", path);
        goto done;
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    fd = mkstemp(tmp);
    if (fd < 0) {
        vkl_fail(e, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
        goto done;
    }
    /* mkstemp makes the file private; an image is an ordinary output file */
    if (fchmod(fd, 0644) != 0) {
        vkl_fail(e, "%s: chmod failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        vkl_fail(e, "%s: fdopen failed: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    if (write_png(f, src, texts, ntexts, pt, ctx)) {
        vkl_fail(e, "%s: writing PNG failed: %s", path, ctx->msg);
        fclose(f);
        unlink(tmp);
        goto done;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        vkl_fail(e, "%s: writing failed: %s", path, strerror(errno));
        fclose(f);
        unlink(tmp);
        goto done;
    }
    if (fclose(f) != 0) {
        vkl_fail(e, "%s: closing failed: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    if (vkl_rename_durable(tmp, path) != 0) {
        vkl_fail(e, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rc = 0;
done:
    free(tmp);
    free(pt);
    free(ctx);
    vkl_image_free(&u8);
    return rc;
}
