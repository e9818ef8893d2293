/* Resizing and cropping against exactly known values: constants stay
 * constant, ramps stay ramps, area means by hand, Lanczos filters out what
 * the smaller grid cannot hold, and crops pick the expected pixels. */
#include "vkl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"

static vkl_image make(int w, int h, int c)
{
    vkl_image im;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_alloc(&im, w, h, c, VKL_PIX_F32, &e), 0);
    return im;
}

static float px(const vkl_image *im, int x, int y, int c)
{
    return vkl_image_f32(im)[((size_t)y * im->width + x) * im->channels + c];
}

static void constant_stays_constant(void **state)
{
    (void)state;
    static const int sizes[][4] = {{1, 1, 5, 7},   {1, 9, 1, 3},    {9, 1, 4, 1},  {7, 5, 3, 2},
                                   {13, 11, 29, 3}, {64, 48, 17, 31}, {3, 3, 100, 1}, {100, 3, 1, 1}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int f = 0; f < 2; f++) {
            vkl_image src = make(sizes[i][0], sizes[i][1], 3), out;
            for (size_t k = 0; k < (size_t)src.width * src.height; k++) {
                vkl_image_f32(&src)[3 * k] = 0.25f;
                vkl_image_f32(&src)[3 * k + 1] = 0.5f;
                vkl_image_f32(&src)[3 * k + 2] = 1.0f;
            }
            vkl_err e = {{0}};
            assert_int_equal(vkl_image_resize(&src, sizes[i][2], sizes[i][3], f, &out, &e), 0);
            assert_int_equal(out.width, sizes[i][2]);
            assert_int_equal(out.height, sizes[i][3]);
            for (int y = 0; y < out.height; y++)
                for (int x = 0; x < out.width; x++) {
                    assert_true(fabsf(px(&out, x, y, 0) - 0.25f) < 1e-5f);
                    assert_true(fabsf(px(&out, x, y, 1) - 0.5f) < 1e-5f);
                    assert_true(fabsf(px(&out, x, y, 2) - 1.0f) < 1e-5f);
                }
            vkl_image_free(&src);
            vkl_image_free(&out);
        }
    }
}

/* f(x, y) = 0.7 u + 0.3 v with u, v the pixel-centre coordinates in [0, 1].
 * Area at an integer ratio keeps it exact everywhere (the mean of a linear
 * function over whole pixels is its value at the midpoint); at other ratios a
 * partly covered pixel counts with its full-pixel mean, a small error; Lanczos
 * keeps it to within a small tolerance away from the borders, where dropped
 * taps bend it. */
static void ramp_stays_linear(void **state)
{
    (void)state;
    static const int sizes[][4] = {{40, 30, 20, 15}, {40, 30, 13, 11}, {17, 9, 51, 27},
                                   {64, 1, 21, 1},   {1, 50, 1, 19},  {33, 33, 32, 34}};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int W = sizes[i][0], H = sizes[i][1], OW = sizes[i][2], OH = sizes[i][3];
        vkl_image src = make(W, H, 1);
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                vkl_image_f32(&src)[y * W + x] = 0.7f * (x + 0.5f) / W + 0.3f * (y + 0.5f) / H;
        for (int f = 0; f < 2; f++) {
            /* area grows an image as boxes: a staircase, not a ramp */
            if (f == VKL_RESIZE_AREA && (OW > W || OH > H)) continue;
            vkl_image out;
            vkl_err e = {{0}};
            assert_int_equal(vkl_image_resize(&src, OW, OH, f, &out, &e), 0);
            /* borders: 3 input pixels of kernel reach, in output pixels */
            int bx = f == VKL_RESIZE_AREA ? 0 : (int)ceil(3.0 * OW / W * (OW < W ? W / (double)OW : 1)) + 1;
            int by = f == VKL_RESIZE_AREA ? 0 : (int)ceil(3.0 * OH / H * (OH < H ? H / (double)OH : 1)) + 1;
            if (W == 1) bx = 0;
            if (H == 1) by = 0;
            int whole = W % OW == 0 && H % OH == 0;
            float tol = f == VKL_RESIZE_AREA && whole ? 2e-6f : 2e-3f;
            int checked = 0;
            for (int y = by; y < OH - by; y++)
                for (int x = bx; x < OW - bx; x++) {
                    float want = 0.7f * (x + 0.5f) / OW + 0.3f * (y + 0.5f) / OH;
                    if (W == 1) want = 0.7f * 0.5f + 0.3f * (y + 0.5f) / OH;
                    if (H == 1) want = 0.7f * (x + 0.5f) / OW + 0.3f * 0.5f;
                    float got = px(&out, x, y, 0);
                    if (fabsf(got - want) > tol)
                        fail_msg("%dx%d->%dx%d filter %d at (%d,%d): %f, want %f", W, H, OW, OH,
                                 f, x, y, got, want);
                    checked++;
                }
            assert_true(checked > 0);
            vkl_image_free(&out);
        }
        vkl_image_free(&src);
    }
}

static void area_known_values(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_image out;
    /* 4x4 -> 2x2: means of 2x2 blocks, two channels */
    vkl_image a = make(4, 4, 2);
    for (int i = 0; i < 16; i++) {
        vkl_image_f32(&a)[2 * i] = (float)i;
        vkl_image_f32(&a)[2 * i + 1] = (float)(100 - 3 * i);
    }
    assert_int_equal(vkl_image_resize(&a, 2, 2, VKL_RESIZE_AREA, &out, &e), 0);
    static const float want0[4] = {2.5f, 4.5f, 10.5f, 12.5f};
    for (int k = 0; k < 4; k++) {
        assert_true(vkl_image_f32(&out)[2 * k] == want0[k]);
        assert_true(vkl_image_f32(&out)[2 * k + 1] == 100 - 3 * want0[k]);
    }
    vkl_image_free(&out);
    vkl_image_free(&a);

    /* 3 -> 2 (non-integer ratio): footprints [0,1.5) and [1.5,3) */
    vkl_image b = make(3, 1, 1);
    memcpy(b.data, (float[]){0, 3, 6}, 3 * sizeof(float));
    assert_int_equal(vkl_image_resize(&b, 2, 1, VKL_RESIZE_AREA, &out, &e), 0);
    assert_true(fabsf(vkl_image_f32(&out)[0] - 1.0f) < 1e-6f);
    assert_true(fabsf(vkl_image_f32(&out)[1] - 5.0f) < 1e-6f);
    vkl_image_free(&out);
    vkl_image_free(&b);

    /* 1x9 -> 1x3: means of triples; 1x1 -> 1x5 upscale: copies */
    vkl_image c = make(1, 9, 1);
    for (int i = 0; i < 9; i++) vkl_image_f32(&c)[i] = (float)(i * i);
    assert_int_equal(vkl_image_resize(&c, 1, 3, VKL_RESIZE_AREA, &out, &e), 0);
    assert_true(fabsf(vkl_image_f32(&out)[0] - 5.0f / 3) < 1e-5f);
    assert_true(fabsf(vkl_image_f32(&out)[1] - 50.0f / 3) < 1e-5f);
    assert_true(fabsf(vkl_image_f32(&out)[2] - 149.0f / 3) < 1e-5f);
    vkl_image_free(&out);
    vkl_image_free(&c);
    /* 2x upscale with area is a box: each pixel doubled */
    vkl_image d = make(2, 1, 1);
    memcpy(d.data, (float[]){0.25f, 0.75f}, 2 * sizeof(float));
    assert_int_equal(vkl_image_resize(&d, 4, 1, VKL_RESIZE_AREA, &out, &e), 0);
    assert_memory_equal(out.data, ((float[]){0.25f, 0.25f, 0.75f, 0.75f}), 4 * sizeof(float));
    vkl_image_free(&out);
    vkl_image_free(&d);
}

static void lanczos_identity_and_antialias(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 7);
    vkl_image a = make(11, 7, 3), out;
    vkl_test_fill(&r, a.data, 11 * 7 * 3, 0, 1);
    /* same size: every tap but the centre lands on a zero of the sinc */
    assert_int_equal(vkl_image_resize(&a, 11, 7, VKL_RESIZE_LANCZOS3, &out, &e), 0);
    assert_true(vkl_test_max_abs_diff(out.data, a.data, 11 * 7 * 3) < 1e-6f);
    vkl_image_free(&out);
    vkl_image_free(&a);

    /* Columns alternating 0/1 (the highest frequency) halved: the stretched
     * kernel averages it to 0.5; a kernel that was not widened would sample
     * mostly one phase and give values near 0 or 1. */
    vkl_image s = make(64, 4, 1);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 64; x++) vkl_image_f32(&s)[y * 64 + x] = (float)(x & 1);
    assert_int_equal(vkl_image_resize(&s, 32, 4, VKL_RESIZE_LANCZOS3, &out, &e), 0);
    for (int x = 3; x < 29; x++) assert_true(fabsf(px(&out, x, 1, 0) - 0.5f) < 0.02f);
    vkl_image_free(&out);
    /* 64 -> 21 (non-integer ratio) likewise */
    assert_int_equal(vkl_image_resize(&s, 21, 4, VKL_RESIZE_LANCZOS3, &out, &e), 0);
    for (int x = 2; x < 19; x++) assert_true(fabsf(px(&out, x, 1, 0) - 0.5f) < 0.02f);
    vkl_image_free(&out);
    vkl_image_free(&s);
}

static void crops(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_image a = make(6, 4, 1), out;
    for (int i = 0; i < 24; i++) vkl_image_f32(&a)[i] = (float)i;
    assert_int_equal(vkl_image_center_crop(&a, 2, 2, &out, &e), 0);
    assert_memory_equal(out.data, ((float[]){8, 9, 14, 15}), 4 * sizeof(float));
    vkl_image_free(&out);
    assert_int_equal(vkl_image_center_crop(&a, 3, 3, &out, &e), 0); /* odd: rounds down */
    assert_memory_equal(out.data, ((float[]){1, 2, 3, 7, 8, 9, 13, 14, 15}), 9 * sizeof(float));
    vkl_image_free(&out);
    assert_int_equal(vkl_image_crop(&a, 5, 3, 1, 1, &out, &e), 0);
    assert_true(vkl_image_f32(&out)[0] == 23.0f);
    vkl_image_free(&out);
    assert_int_equal(vkl_image_crop(&a, 5, 3, 2, 1, &out, &e), -1);
    assert_non_null(strstr(e.msg, "does not fit"));
    assert_int_equal(vkl_image_center_crop(&a, 7, 1, &out, &e), -1);

    /* u8 crops too */
    uint8_t b8[6] = {1, 2, 3, 4, 5, 6};
    vkl_image u = {3, 2, 1, VKL_PIX_U8, b8};
    assert_int_equal(vkl_image_center_crop(&u, 1, 2, &out, &e), 0);
    assert_memory_equal(out.data, ((uint8_t[]){2, 5}), 2);
    vkl_image_free(&out);
    assert_int_equal(vkl_image_resize(&u, 2, 2, VKL_RESIZE_AREA, &out, &e), -1);
    assert_non_null(strstr(e.msg, "float"));

    /* cover 6x4 -> 3x3: scale max(3/6, 3/4) = 0.75 -> 5x3 (4.5 rounded), crop x 1..3 */
    assert_int_equal(vkl_image_resize_cover(&a, 3, 3, VKL_RESIZE_AREA, &out, &e), 0);
    assert_int_equal(out.width, 3);
    assert_int_equal(out.height, 3);
    vkl_image mid, want;
    assert_int_equal(vkl_image_resize(&a, 5, 3, VKL_RESIZE_AREA, &mid, &e), 0);
    assert_int_equal(vkl_image_crop(&mid, 1, 0, 3, 3, &want, &e), 0);
    assert_memory_equal(out.data, want.data, 9 * sizeof(float));
    vkl_image_free(&out);
    vkl_image_free(&mid);
    vkl_image_free(&want);
    /* cover 6x4 -> 6x2: width sets the scale (1.0), rows 1..2 kept exactly (identity Lanczos) */
    assert_int_equal(vkl_image_resize_cover(&a, 6, 2, VKL_RESIZE_LANCZOS3, &out, &e), 0);
    for (int i = 0; i < 12; i++) assert_true(fabsf(vkl_image_f32(&out)[i] - (float)(6 + i)) < 1e-5f);
    vkl_image_free(&out);
    /* cover 6x4 -> 12x12 (upscale): 18x12 then centre 12 columns */
    assert_int_equal(vkl_image_resize_cover(&a, 12, 12, VKL_RESIZE_AREA, &out, &e), 0);
    assert_int_equal(out.width, 12);
    assert_true(px(&out, 0, 0, 0) == 1.0f); /* column 3 of 18 is source column 1 */
    vkl_image_free(&out);
    vkl_image_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(constant_stays_constant),
        cmocka_unit_test(ramp_stays_linear),
        cmocka_unit_test(area_known_values),
        cmocka_unit_test(lanczos_identity_and_antialias),
        cmocka_unit_test(crops),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
