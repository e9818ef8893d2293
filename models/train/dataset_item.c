/* One training image at its bucket size, as kohya's
 * trim_and_resize_if_required prepares it: resize to the bucket's `resized`
 * size, then a centre crop (offset = excess // 2) to the bucket. */
#include "train/dataset.h"

#include <stdlib.h>

#include "io/image.h"

int vkl_dataset_load_image(const vkl_dataset *d, int image, int flip, float **chw, int *w, int *h,
                           vkl_err *e)
{
    *chw = NULL;
    if (image < 0 || image >= d->nimages)
        return vkl_fail(e, "image index %d out of range (%d images)", image, d->nimages);
    const vkl_ds_image *im = &d->images[image];
    const vkl_reso bucket = d->buckets[im->bucket].reso;
    vkl_image src = {0}, sized = {0}, crop = {0};
    vkl_image_info info;
    if (vkl_image_read_file(im->path, 3, VKL_PIX_F32, &src, &info, e)) return -1;
    int rc = 0;
    if (src.width != im->width || src.height != im->height) {
        rc = vkl_fail(e, "%s changed since the scan: %dx%d, was %dx%d", im->path, src.width,
                      src.height, im->width, im->height);
        goto done;
    }
    const vkl_image *cur = &src;
    if (im->resized.w != src.width || im->resized.h != src.height) {
        /* area averaging when shrinking avoids aliasing, as kohya's cv2.INTER_AREA */
        vkl_resize_filter f = (long)im->resized.w * im->resized.h < (long)src.width * src.height
                                  ? VKL_RESIZE_AREA
                                  : VKL_RESIZE_LANCZOS3;
        if ((rc = vkl_image_resize(&src, im->resized.w, im->resized.h, f, &sized, e))) goto done;
        cur = &sized;
    }
    if ((rc = vkl_image_crop(cur, (cur->width - bucket.w) / 2, (cur->height - bucket.h) / 2,
                             bucket.w, bucket.h, &crop, e)))
        goto done;
    float *out = (float *)malloc(sizeof(float) * 3 * (size_t)bucket.w * (size_t)bucket.h);
    if (!out) {
        rc = vkl_fail(e, "%s: out of memory for a %dx%d image", im->path, bucket.w, bucket.h);
        goto done;
    }
    const float *px = vkl_image_f32(&crop);
    const size_t plane = (size_t)bucket.w * bucket.h;
    for (int y = 0; y < bucket.h; y++)
        for (int x = 0; x < bucket.w; x++) {
            int sx = flip ? bucket.w - 1 - x : x;
            const float *p = px + ((size_t)y * bucket.w + sx) * 3;
            for (int c = 0; c < 3; c++) {
                float v = p[c] < 0 ? 0 : p[c] > 1 ? 1 : p[c]; /* Lanczos rings past [0, 1] */
                out[c * plane + (size_t)y * bucket.w + x] = v * 2 - 1;
            }
        }
    *chw = out;
    *w = bucket.w;
    *h = bucket.h;
done:
    vkl_image_free(&src);
    vkl_image_free(&sized);
    vkl_image_free(&crop);
    return rc;
}
