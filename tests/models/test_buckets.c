/* Aspect-ratio buckets: kohya's resolution list for R = 512 against a list
 * worked out by hand from its algorithm, bucket choice for several aspect
 * ratios in both modes (values worked by hand from BucketManager.select_bucket),
 * the no-upscale guarantees over a grid of sizes, and whole datasets of
 * synthetic PNGs bucketed, square-cropped and loaded (crop, flip, range). */
#include "vkl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/image.h"
#include "train/dataset.h"

/* kohya-ss/sd-scripts library/model_util.py make_bucket_resolutions((512, 512),
 * 256, 1024, 64), by hand: max_area = 262144; the square side is
 * floor(sqrt(262144) / 64) * 64 = 512; then for w = 256, 320, ..., 1024,
 * h = min(1024, (262144 // w) // 64 * 64):
 *   256 -> 1024, 320 -> 768 (819 // 64 = 12), 384 -> 640 (682), 448 -> 576 (585),
 *   512 -> 512, 576 -> 448, 640 -> 384, 704 -> 320 (372), 768 -> 320 (341),
 *   832 -> 256 (315), 896 -> 256 (292), 960 -> 256 (273), 1024 -> 256;
 * each (w, h) and (h, w) added to a set, which is then sorted. */
static const vkl_reso KOHYA_512[] = {
    {256, 832}, {256, 896}, {256, 960}, {256, 1024}, {320, 704}, {320, 768},
    {384, 640}, {448, 576}, {512, 512}, {576, 448}, {640, 384}, {704, 320},
    {768, 320}, {832, 256}, {896, 256}, {960, 256}, {1024, 256},
};

static void kohya_list_512(void **state)
{
    (void)state;
    vkl_reso *r;
    int n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_bucket_resolutions(512, 512, 256, 1024, 64, &r, &n, &e), 0);
    assert_int_equal(n, (int)(sizeof KOHYA_512 / sizeof *KOHYA_512));
    for (int i = 0; i < n; i++) {
        assert_int_equal(r[i].w, KOHYA_512[i].w);
        assert_int_equal(r[i].h, KOHYA_512[i].h);
        assert_true((long)r[i].w * r[i].h <= 512L * 512);
    }
    free(r);
    /* settings kohya would assert on are errors here */
    assert_int_equal(vkl_bucket_resolutions(512, 512, 256, 400, 64, &r, &n, &e), -1);
    assert_non_null(strstr(e.msg, "400"));
    assert_int_equal(vkl_bucket_resolutions(512, 512, 0, 1024, 64, &r, &n, &e), -1);
}

static void select_predefined(void **state)
{
    (void)state;
    vkl_reso *r, b, rs;
    int n;
    double err;
    vkl_err e = {{0}};
    assert_int_equal(vkl_bucket_resolutions(512, 512, 256, 1024, 64, &r, &n, &e), 0);
    const long area = 512L * 512;
    /* an exact bucket size is used as is */
    assert_int_equal(vkl_bucket_select(0, r, n, area, 64, 448, 576, &b, &rs, &err, &e), 0);
    assert_true(b.w == 448 && b.h == 576 && rs.w == 448 && rs.h == 576);
    /* 1000x500 (ratio 2): closest 704x320 (2.2, error 0.2; 640x384 is 0.33 off);
     * 2 < 2.2 so widths match: scale 0.704 -> 704x352 */
    assert_int_equal(vkl_bucket_select(0, r, n, area, 64, 1000, 500, &b, &rs, &err, &e), 0);
    assert_true(b.w == 704 && b.h == 320);
    assert_true(rs.w == 704 && rs.h == 352);
    assert_true(fabs(err - 0.2) < 1e-12);
    /* 300x900 (1/3): 256x832 (0.3077) beats 320x768 (0.4167); 1/3 > 0.3077 so
     * heights match: scale 832/900 -> int(277.33 + 0.5) = 277 x 832 */
    assert_int_equal(vkl_bucket_select(0, r, n, area, 64, 300, 900, &b, &rs, &err, &e), 0);
    assert_true(b.w == 256 && b.h == 832);
    assert_true(rs.w == 277 && rs.h == 832);
    /* a small square image is enlarged to 512x512 when upscaling is allowed */
    assert_int_equal(vkl_bucket_select(0, r, n, area, 64, 100, 100, &b, &rs, &err, &e), 0);
    assert_true(b.w == 512 && b.h == 512 && rs.w == 512 && rs.h == 512);
    free(r);
}

static void select_no_upscale(void **state)
{
    (void)state;
    vkl_reso b, rs;
    double err;
    vkl_err e = {{0}};
    const long area = 512L * 512;
    /* smaller than R*R: no resize, crop down to multiples of 64 */
    assert_int_equal(vkl_bucket_select(1, NULL, 0, area, 64, 100, 70, &b, &rs, &err, &e), 0);
    assert_true(b.w == 64 && b.h == 64 && rs.w == 100 && rs.h == 70);
    assert_int_equal(vkl_bucket_select(1, NULL, 0, area, 64, 200, 130, &b, &rs, &err, &e), 0);
    assert_true(b.w == 192 && b.h == 128 && rs.w == 200 && rs.h == 130);
    /* 2000x1000: shrunk to area R*R (724.08 x 362.04); width-rounding gives
     * 704 x 320 (ratio 2.2), height-rounding 640 x 320 (ratio 2.0) which wins:
     * resized int(320 * 2 + 0.5) = 640 x 320 */
    assert_int_equal(vkl_bucket_select(1, NULL, 0, area, 64, 2000, 1000, &b, &rs, &err, &e), 0);
    assert_true(b.w == 640 && b.h == 320 && rs.w == 640 && rs.h == 320);
    assert_int_equal(vkl_bucket_select(1, NULL, 0, area, 64, 1024, 1024, &b, &rs, &err, &e), 0);
    assert_true(b.w == 512 && b.h == 512 && rs.w == 512 && rs.h == 512);
    /* narrower than one step: an error naming the size, not a 0-wide bucket */
    assert_int_equal(vkl_bucket_select(1, NULL, 0, area, 64, 50, 300, &b, &rs, &err, &e), -1);
    assert_non_null(strstr(e.msg, "50x300"));
}

static void no_upscale_never_enlarges(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    int checked = 0;
    for (int w = 64; w <= 3000; w += 37)
        for (int h = 64; h <= 3000; h += 53) {
            vkl_reso b, rs;
            double err;
            if (vkl_bucket_select(1, NULL, 0, 512L * 512, 64, w, h, &b, &rs, &err, &e)) {
                /* only extreme ratios may fail (a side rounding to under one step) */
                assert_true(w > 8 * h || h > 8 * w);
                continue;
            }
            assert_true(rs.w <= w && rs.h <= h);
            assert_true(b.w <= rs.w && b.h <= rs.h);
            assert_true(b.w % 64 == 0 && b.h % 64 == 0 && b.w > 0 && b.h > 0);
            assert_true((long)b.w * b.h <= 512L * 512);
            checked++;
        }
    assert_true(checked > 3000);
}

/* ---- whole datasets of synthetic images ---- */

static void write_png(const char *dir, const char *name, int w, int h)
{
    vkl_image im;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_alloc(&im, w, h, 3, VKL_PIX_U8, &e), 0);
    uint8_t *p = vkl_image_u8(&im);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            p[(y * w + x) * 3 + 0] = (uint8_t)(x * 255 / (w - 1));
            p[(y * w + x) * 3 + 1] = (uint8_t)(y * 255 / (h - 1));
            p[(y * w + x) * 3 + 2] = (uint8_t)((x * 7 + y * 3) & 255);
        }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(vkl_png_write(path, &im, NULL, 0, &e), 0);
    vkl_image_free(&im);
}

static int bucket_of(const vkl_dataset *d, const char *rel, vkl_reso *resized)
{
    for (int i = 0; i < d->nimages; i++)
        if (strcmp(d->images[i].rel, rel) == 0) {
            if (resized) *resized = d->images[i].resized;
            return i;
        }
    fail_msg("image %s not in the dataset", rel);
    return -1;
}

static void synthetic_dataset(void **state)
{
    (void)state;
    char dir[256];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    write_png(dir, "square.png", 300, 300);
    write_png(dir, "wide.png", 700, 350);
    write_png(dir, "tall.png", 200, 600);
    write_png(dir, "big.png", 1200, 800);
    write_png(dir, "tiny.png", 40, 40); /* under one bucket step */
    vkl_log_level lvl = vkl_log_get_level();
    vkl_log_set_level(VKL_LOG_ERROR);

    vkl_dataset_opts o;
    vkl_dataset_opts_default(&o);
    o.images_dir = dir;
    vkl_dataset *d;
    vkl_err e = {{0}};
    /* default: buckets, no upscaling */
    assert_int_equal(vkl_dataset_open(&o, &d, &e), 0);
    assert_int_equal(d->nimages, 4);
    assert_int_equal(d->stats.skipped_small, 1);
    static const struct { const char *rel; int bw, bh; } want[] = {
        {"square.png", 256, 256}, /* 300x300 cropped to 256 */
        {"wide.png", 640, 320},   /* 700x350 -> 640x320 */
        {"tall.png", 192, 576},
        /* 1200x800 (1.5): area-fit 627.1 x 418.1; width-rounding 576 x 384 (1.5
         * exactly) beats 640 x 384: resized 576 x 384 */
        {"big.png", 576, 384},
    };
    for (int k = 0; k < 4; k++) {
        int i = bucket_of(d, want[k].rel, NULL);
        vkl_reso b = d->buckets[d->images[i].bucket].reso;
        assert_int_equal(b.w, want[k].bw);
        assert_int_equal(b.h, want[k].bh);
    }
    assert_int_equal(d->nbuckets, 4);
    for (int b = 1; b < d->nbuckets; b++) /* sorted as kohya's BucketManager.sort */
        assert_true(d->buckets[b - 1].reso.w < d->buckets[b].reso.w ||
                    (d->buckets[b - 1].reso.w == d->buckets[b].reso.w &&
                     d->buckets[b - 1].reso.h < d->buckets[b].reso.h));

    /* loading: bucket size, [-1, 1], the flip is an exact mirror */
    int i = bucket_of(d, "wide.png", NULL);
    float *a, *f;
    int w, h, w2, h2;
    assert_int_equal(vkl_dataset_load_image(d, i, 0, &a, &w, &h, &e), 0);
    assert_int_equal(vkl_dataset_load_image(d, i, 1, &f, &w2, &h2, &e), 0);
    assert_true(w == 640 && h == 320 && w2 == 640 && h2 == 320);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float v = a[(size_t)c * w * h + (size_t)y * w + x];
                assert_true(v >= -1 && v <= 1);
                assert_true(v == f[(size_t)c * w * h + (size_t)y * w + (w - 1 - x)]);
            }
    /* the crop is central: 700 -> 640 drops 30 columns each side; red ramps
     * x*255/699 (integer division), so column 0 of the crop holds 7650/699 = 10 */
    assert_true(fabsf((a[0] + 1) / 2 * 255 - 10) < 0.01f);
    free(a);
    free(f);
    /* square.png needs no resize: exact pixels of the 22..277 window */
    i = bucket_of(d, "square.png", NULL);
    assert_int_equal(vkl_dataset_load_image(d, i, 0, &a, &w, &h, &e), 0);
    assert_true(fabsf((a[0] + 1) / 2 * 255 - (float)(22 * 255 / 299)) < 0.01f);
    free(a);
    vkl_dataset_free(d);

    /* predefined buckets (upscaling allowed): the 40x40 image is now usable */
    o.bucket_no_upscale = 0;
    assert_int_equal(vkl_dataset_open(&o, &d, &e), 0);
    assert_int_equal(d->nimages, 5);
    vkl_reso rs;
    i = bucket_of(d, "tiny.png", &rs);
    assert_true(d->buckets[d->images[i].bucket].reso.w == 512 && rs.w == 512);
    i = bucket_of(d, "tall.png", &rs);
    /* 200x600: 256x832 (0.3077 vs 1/3); heights match: 277 x 832 */
    assert_true(d->buckets[d->images[i].bucket].reso.w == 256 &&
                d->buckets[d->images[i].bucket].reso.h == 832);
    assert_true(rs.w == 277 && rs.h == 832);
    vkl_dataset_free(d);

    /* --no-bucket: everything resized to cover 512x512 and centre-cropped */
    o.bucket = 0;
    assert_int_equal(vkl_dataset_open(&o, &d, &e), 0);
    assert_int_equal(d->nimages, 5);
    assert_int_equal(d->nbuckets, 1);
    assert_true(d->buckets[0].reso.w == 512 && d->buckets[0].reso.h == 512);
    i = bucket_of(d, "wide.png", &rs);
    assert_true(rs.w == 1024 && rs.h == 512);
    assert_int_equal(vkl_dataset_load_image(d, i, 0, &a, &w, &h, &e), 0);
    assert_true(w == 512 && h == 512);
    free(a);
    vkl_dataset_free(d);

    vkl_log_set_level(lvl);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kohya_list_512),
        cmocka_unit_test(select_predefined),
        cmocka_unit_test(select_no_upscale),
        cmocka_unit_test(no_upscale_never_enlarges),
        cmocka_unit_test(synthetic_dataset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
