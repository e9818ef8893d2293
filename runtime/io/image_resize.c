/* Resampling as two separable 1-D passes with precomputed weights.
 *
 * Lanczos-3: when shrinking by s < 1 the kernel is stretched by 1/s (support
 * 3/s input pixels) so it also low-pass filters; without that, shrinking
 * aliases. Taps that fall outside the image are dropped and the rest
 * renormalised (as Pillow does), so a constant image stays exactly constant.
 * Area: each output pixel is the overlap-weighted mean of the input pixels
 * under its footprint (cv2's INTER_AREA when shrinking, a box when growing). */
#include "io/image_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int *start, *count; /* per output index */
    float *w;           /* count[i] weights for output i at offset i*stride */
    int stride;
} taps;

static void taps_free(taps *t)
{
    free(t->start);
    free(t->count);
    free(t->w);
}

static double sinc(double x)
{
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}

static double lanczos3(double x) { return fabs(x) < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0; }

static int make_taps(int in, int out, vkl_resize_filter f, taps *t, vkl_err *e)
{
    double scale = (double)out / in;
    double support = f == VKL_RESIZE_LANCZOS3 ? 3.0 * (scale < 1.0 ? 1.0 / scale : 1.0)
                                              : 0.5 * (scale < 1.0 ? 1.0 / scale : 1.0) + 1.0;
    t->stride = (int)ceil(2.0 * support) + 2;
    t->start = calloc((size_t)out, sizeof *t->start);
    t->count = calloc((size_t)out, sizeof *t->count);
    t->w = calloc((size_t)out * t->stride, sizeof *t->w);
    if (!t->start || !t->count || !t->w) {
        taps_free(t);
        return vkl_fail(e, "out of memory for resize weights (%d -> %d)", in, out);
    }
    double fscale = scale < 1.0 ? scale : 1.0; /* kernel stretch when shrinking */
    for (int i = 0; i < out; i++) {
        double lo, hi;
        if (f == VKL_RESIZE_LANCZOS3) {
            double c = (i + 0.5) / scale; /* centre in input coordinates (pixel edges at integers) */
            lo = c - support;
            hi = c + support;
        } else {
            lo = i / scale;
            hi = (i + 1) / scale;
        }
        int j0 = (int)floor(lo), j1 = (int)ceil(hi);
        if (j0 < 0) j0 = 0;
        if (j1 > in) j1 = in;
        if (j1 - j0 > t->stride) j1 = j0 + t->stride; /* cannot happen; keeps writes in bounds */
        float *w = t->w + (size_t)i * t->stride;
        double sum = 0;
        int n = 0;
        for (int j = j0; j < j1; j++) {
            double v;
            if (f == VKL_RESIZE_LANCZOS3) {
                double c = (i + 0.5) / scale;
                v = lanczos3((j + 0.5 - c) * fscale);
            } else {
                double a = j > lo ? j : lo, b = j + 1 < hi ? j + 1 : hi;
                v = b > a ? b - a : 0.0;
            }
            w[n++] = (float)v;
            sum += v;
        }
        if (n == 0 || sum == 0.0) {
            /* cannot happen for in >= 1, but never divide by zero */
            int j = (int)floor((i + 0.5) / scale);
            j0 = j < 0 ? 0 : j >= in ? in - 1 : j;
            w[0] = 1.0f;
            n = 1;
            sum = 1.0;
        }
        for (int k = 0; k < n; k++) w[k] = (float)(w[k] / sum);
        t->start[i] = j0;
        t->count[i] = n;
    }
    return 0;
}

int vkl_image_resize(const vkl_image *src, int width, int height, vkl_resize_filter filter,
                     vkl_image *out, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    if (src->type != VKL_PIX_F32)
        return vkl_fail(e, "resize needs a float image (convert it first)");
    if (width < 1 || height < 1)
        return vkl_fail(e, "resize to %dx%d: size must be at least 1x1", width, height);
    if (filter != VKL_RESIZE_LANCZOS3 && filter != VKL_RESIZE_AREA)
        return vkl_fail(e, "unknown resize filter %d", (int)filter);
    int W = src->width, H = src->height, C = src->channels;
    taps tx = {0}, ty = {0};
    vkl_image tmp = {0};
    if (make_taps(W, width, filter, &tx, e) || make_taps(H, height, filter, &ty, e) ||
        vkl_image_alloc(&tmp, width, H, C, VKL_PIX_F32, e) ||
        vkl_image_alloc(out, width, height, C, VKL_PIX_F32, e)) {
        taps_free(&tx);
        taps_free(&ty);
        vkl_image_free(&tmp);
        return -1;
    }
    const float *s = src->data;
    float *m = tmp.data, *d = out->data;
    for (int y = 0; y < H; y++) {
        const float *row = s + (size_t)y * W * C;
        for (int x = 0; x < width; x++) {
            const float *w = tx.w + (size_t)x * tx.stride;
            const float *p = row + (size_t)tx.start[x] * C;
            for (int c = 0; c < C; c++) {
                float acc = 0;
                for (int k = 0; k < tx.count[x]; k++) acc += w[k] * p[(size_t)k * C + c];
                m[((size_t)y * width + x) * C + c] = acc;
            }
        }
    }
    size_t rowlen = (size_t)width * C;
    for (int y = 0; y < height; y++) {
        const float *w = ty.w + (size_t)y * ty.stride;
        float *o = d + (size_t)y * rowlen;
        for (int k = 0; k < ty.count[y]; k++) {
            const float *p = m + (size_t)(ty.start[y] + k) * rowlen;
            for (size_t i = 0; i < rowlen; i++) o[i] += w[k] * p[i];
        }
    }
    taps_free(&tx);
    taps_free(&ty);
    vkl_image_free(&tmp);
    return 0;
}

int vkl_image_crop(const vkl_image *src, int x, int y, int width, int height, vkl_image *out,
                   vkl_err *e)
{
    memset(out, 0, sizeof *out);
    if (x < 0 || y < 0 || width < 1 || height < 1 || width > src->width - x ||
        height > src->height - y)
        return vkl_fail(e, "crop %dx%d at (%d,%d) does not fit in a %dx%d image", width, height, x,
                        y, src->width, src->height);
    if (vkl_image_alloc(out, width, height, src->channels, src->type, e)) return -1;
    size_t px = (size_t)src->channels * (src->type == VKL_PIX_F32 ? sizeof(float) : 1);
    for (int r = 0; r < height; r++)
        memcpy((uint8_t *)out->data + (size_t)r * width * px,
               (const uint8_t *)src->data + ((size_t)(y + r) * src->width + x) * px,
               (size_t)width * px);
    return 0;
}

int vkl_image_center_crop(const vkl_image *src, int width, int height, vkl_image *out, vkl_err *e)
{
    if (width > src->width || height > src->height) {
        memset(out, 0, sizeof *out);
        return vkl_fail(e, "centre crop %dx%d is larger than the %dx%d image", width, height,
                        src->width, src->height);
    }
    return vkl_image_crop(src, (src->width - width) / 2, (src->height - height) / 2, width, height,
                          out, e);
}

int vkl_image_resize_cover(const vkl_image *src, int width, int height, vkl_resize_filter filter,
                           vkl_image *out, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    if (width < 1 || height < 1)
        return vkl_fail(e, "resize to %dx%d: size must be at least 1x1", width, height);
    double sx = (double)width / src->width, sy = (double)height / src->height;
    double s = sx > sy ? sx : sy;
    /* the side that sets the scale gets the target exactly; the other is
     * rounded and never allowed below the target */
    long rw = sx >= sy ? width : lround(src->width * s);
    long rh = sy >= sx ? height : lround(src->height * s);
    if (rw < width) rw = width;
    if (rh < height) rh = height;
    if (rw > VKL_IMAGE_MAX_SIDE || rh > VKL_IMAGE_MAX_SIDE)
        return vkl_fail(e, "covering %dx%d from %dx%d needs %ldx%ld, over the image size limit",
                        width, height, src->width, src->height, rw, rh);
    vkl_image mid;
    if (vkl_image_resize(src, (int)rw, (int)rh, filter, &mid, e)) return -1;
    int rc = vkl_image_center_crop(&mid, width, height, out, e);
    vkl_image_free(&mid);
    return rc;
}
