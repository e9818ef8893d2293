/* Aspect-ratio buckets as kohya's sd-scripts makes and picks them
 * (library/model_util.py make_bucket_resolutions, library/train_util.py
 * BucketManager.select_bucket), including its rounding: Python int(x + 0.5)
 * for sizes and numpy argmin (first minimum) for the closest ratio. */
#include "train/dataset.h"
#include "io/text.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reso_cmp(const void *a, const void *b)
{
    const vkl_reso *x = (const vkl_reso *)a, *y = (const vkl_reso *)b;
    if (x->w != y->w) return x->w < y->w ? -1 : 1;
    return (x->h > y->h) - (x->h < y->h);
}

static int add_unique(vkl_reso *v, int *n, int w, int h)
{
    for (int i = 0; i < *n; i++)
        if (v[i].w == w && v[i].h == h) return 0;
    v[*n].w = w;
    v[*n].h = h;
    (*n)++;
    return 0;
}

int vkl_bucket_resolutions(int max_w, int max_h, int min_size, int max_size, int step,
                           vkl_reso **out, int *count, vkl_err *e)
{
    *out = NULL;
    *count = 0;
    if (max_w < 1 || max_h < 1 || step < 1 || min_size < step || max_size < min_size ||
        max_size > 16384 || max_w > 16384 || max_h > 16384)
        return vkl_fail(e, "bucket settings out of range: resolution %dx%d, min %d, max %d, step %d "
                           "(need step >= 1, step <= min <= max <= 16384)",
                        max_w, max_h, min_size, max_size, step);
    if (max_size < max_w || max_size < max_h)
        return vkl_fail(e, "max bucket side %d is smaller than the resolution %dx%d", max_size,
                        max_w, max_h);
    long max_area = (long)max_w * max_h;
    int cap = 2 * ((max_size - min_size) / step + 1) + 1;
    vkl_reso *v = (vkl_reso *)malloc(sizeof *v * (size_t)cap);
    if (!v) return vkl_fail(e, "out of memory for %d bucket resolutions", cap);
    int n = 0;
    int sq = (int)(floor(sqrt((double)max_area) / step)) * step;
    add_unique(v, &n, sq, sq);
    for (int w = min_size; w <= max_size; w += step) {
        long hh = (max_area / w) / step * step;
        int h = hh < max_size ? (int)hh : max_size;
        if (h >= min_size) {
            add_unique(v, &n, w, h);
            add_unique(v, &n, h, w);
        }
    }
    qsort(v, (size_t)n, sizeof *v, reso_cmp);
    *out = v;
    *count = n;
    return 0;
}

/* kohya BucketManager.round_to_steps */
static long round_to_steps(double x, int step)
{
    long r = (long)(x + 0.5);
    return r - r % step;
}

int vkl_bucket_select(int no_upscale, const vkl_reso *predef, int npredef, long max_area, int step,
                      int image_w, int image_h, vkl_reso *bucket, vkl_reso *resized,
                      double *ar_error, vkl_err *e)
{
    if (image_w < 1 || image_h < 1) return vkl_fail(e, "image size %dx%d is empty", image_w, image_h);
    double ar = (double)image_w / image_h;
    if (!no_upscale) {
        if (npredef < 1) return vkl_fail(e, "no bucket resolutions to choose from");
        int best = -1;
        for (int i = 0; i < npredef; i++)
            if (predef[i].w == image_w && predef[i].h == image_h) best = i;
        if (best < 0) {
            double best_err = INFINITY;
            for (int i = 0; i < npredef; i++) {
                double err = fabs((double)predef[i].w / predef[i].h - ar);
                if (err < best_err) {
                    best_err = err;
                    best = i;
                }
            }
        }
        *bucket = predef[best];
        double ar_reso = (double)bucket->w / bucket->h;
        /* wider than the bucket: match heights; else match widths */
        double scale = ar > ar_reso ? (double)bucket->h / image_h : (double)bucket->w / image_w;
        resized->w = (int)(image_w * scale + 0.5);
        resized->h = (int)(image_h * scale + 0.5);
    } else {
        if ((long)image_w * image_h > max_area) {
            double rw = sqrt((double)max_area * ar);
            double rh = (double)max_area / rw;
            /* round the width or the height to steps, whichever keeps the ratio better */
            long bw = round_to_steps(rw, step);
            long bh_w = round_to_steps(bw / ar, step);
            double ar_w = bh_w > 0 ? (double)bw / bh_w : INFINITY;
            long bh = round_to_steps(rh, step);
            long bw_h = round_to_steps(bh * ar, step);
            double ar_h = bh > 0 ? (double)bw_h / bh : INFINITY;
            if (fabs(ar_w - ar) < fabs(ar_h - ar)) {
                resized->w = (int)bw;
                resized->h = (int)(bw / ar + 0.5);
            } else {
                resized->w = (int)(bh * ar + 0.5);
                resized->h = (int)bh;
            }
        } else {
            resized->w = image_w;
            resized->h = image_h;
        }
        bucket->w = resized->w - resized->w % step;
        bucket->h = resized->h - resized->h % step;
    }
    if (bucket->w < 1 || bucket->h < 1 || resized->w < bucket->w || resized->h < bucket->h)
        return vkl_fail(e, "image %dx%d is too small or too elongated for buckets of %d-pixel steps",
                        image_w, image_h, step);
    if (ar_error) *ar_error = (double)bucket->w / bucket->h - ar;
    return 0;
}

/* A double as Python's repr writes it: the shortest digits that read back
 * to the same value, with ".0" on a whole number. */
static void put_python_float(vkl_strbuf *b, double v)
{
    char num[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (strtod(num, NULL) == v) break;
    }
    vkl_strbuf_puts(b, num);
    if (!strpbrk(num, ".eEn")) vkl_strbuf_puts(b, ".0");
}

char *vkl_dataset_bucket_info_json(const vkl_dataset *d)
{
    vkl_strbuf b = {0};
    if (!d->opts.bucket) {
        vkl_strbuf_puts(&b, "null");
    } else {
        vkl_strbuf_puts(&b, "{\"buckets\": {");
        for (int i = 0; i < d->nbuckets; i++)
            vkl_strbuf_printf(&b, "%s\"%d\": {\"resolution\": [%d, %d], \"count\": %d}", i ? ", " : "", i,
                              d->buckets[i].reso.w, d->buckets[i].reso.h, d->buckets[i].count);
        vkl_strbuf_puts(&b, "}, \"mean_img_ar_error\": ");
        put_python_float(&b, d->mean_ar_error);
        vkl_strbuf_puts(&b, "}");
    }
    if (b.failed) {
        free(b.s);
        return NULL;
    }
    return b.s;
}
