/* Image reading: EXIF orientation (parser and the 8 transforms, exact
 * values), JPEG orientation against the upright reference photo, every format
 * we promise (BMP, TGA, GIF made here with known pixels), 16-bit precision,
 * size limits before allocation, and truncated or damaged files at every
 * length giving a clear error. */
#include "vkl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include <stb_image_write.h>

#include "io/image.h"
#include "io/image_internal.h"

/* ---- EXIF ---- */

/* An APP1 payload with IFD0 holding (tag 0x010f Make, then Orientation). */
static size_t make_exif(uint8_t *b, int little, int orientation)
{
    memcpy(b, "Exif\0\0", 6);
    uint8_t *t = b + 6;
#define W16(p, v) (little ? ((p)[0] = (uint8_t)(v), (p)[1] = (uint8_t)((v) >> 8)) \
                          : ((p)[1] = (uint8_t)(v), (p)[0] = (uint8_t)((v) >> 8)))
#define W32(p, v) (W16((p) + (little ? 0 : 2), (v) & 0xffff), W16((p) + (little ? 2 : 0), (v) >> 16))
    t[0] = t[1] = little ? 'I' : 'M';
    W16(t + 2, 42);
    W32(t + 4, 8u);
    W16(t + 8, 2); /* two entries */
    uint8_t *e0 = t + 10, *e1 = t + 22;
    W16(e0, 0x010f); W16(e0 + 2, 2); W32(e0 + 4, 4u); memcpy(e0 + 8, "abc", 4);
    W16(e1, 0x0112); W16(e1 + 2, 3); W32(e1 + 4, 1u); W16(e1 + 8, orientation); W16(e1 + 10, 0);
    W32(t + 34, 0u); /* no next IFD */
#undef W16
#undef W32
    return 6 + 38;
}

static void exif_both_byte_orders(void **state)
{
    (void)state;
    uint8_t b[64];
    for (int o = 1; o <= 8; o++) {
        size_t n = make_exif(b, 1, o);
        assert_int_equal(vkl_exif_orientation(b, n), o);
        n = make_exif(b, 0, o);
        assert_int_equal(vkl_exif_orientation(b, n), o);
    }
    size_t n = make_exif(b, 0, 6);
    /* every truncation is tolerated (EXIF is advisory): orientation 1 */
    for (size_t k = 0; k < n - 4; k++) assert_int_equal(vkl_exif_orientation(b, k), 1);
    n = make_exif(b, 1, 9); /* out of range */
    assert_int_equal(vkl_exif_orientation(b, n), 1);
    n = make_exif(b, 1, 3);
    b[6] = 'X'; /* bad byte-order mark */
    assert_int_equal(vkl_exif_orientation(b, n), 1);
}

static void orient_known_values(void **state)
{
    (void)state;
    uint8_t px[6] = {1, 2, 3, 4, 5, 6}; /* 3x2: rows 1 2 3 / 4 5 6 */
    vkl_image src = {3, 2, 1, VKL_PIX_U8, px};
    static const uint8_t want[9][6] = {
        {0},
        {1, 2, 3, 4, 5, 6}, {3, 2, 1, 6, 5, 4}, {6, 5, 4, 3, 2, 1}, {4, 5, 6, 1, 2, 3},
        {1, 4, 2, 5, 3, 6}, {4, 1, 5, 2, 6, 3}, {6, 3, 5, 2, 4, 1}, {3, 6, 2, 5, 1, 4},
    };
    for (int o = 1; o <= 8; o++) {
        vkl_image out;
        vkl_err e = {{0}};
        assert_int_equal(vkl_image_orient(&src, o, &out, &e), 0);
        assert_int_equal(out.width, o >= 5 ? 2 : 3);
        assert_int_equal(out.height, o >= 5 ? 3 : 2);
        assert_memory_equal(out.data, want[o], 6);
        vkl_image_free(&out);
    }
    vkl_image out;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_orient(&src, 9, &out, &e), -1);
}

static double mean_abs(const vkl_image *a, const vkl_image *b)
{
    size_t n = (size_t)a->width * a->height * a->channels;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabsf(vkl_image_f32(a)[i] - vkl_image_f32(b)[i]);
    return s / n;
}

/* hopper_orientation_6.jpg stores Grace Hopper turned on her side with
 * Orientation=6; read upright it must match hopper.png, and no other of the
 * eight orientations of our result may match as well. */
static void jpeg_orientation_matches_upright(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/image-corpus/jpeg/hopper_orientation_6.jpg");
    vkl_err e = {{0}};
    vkl_image jpg, png;
    vkl_image_info info;
    assert_int_equal(vkl_image_read_file(
                         vkl_test_shared_path("data/image-corpus/jpeg/hopper_orientation_6.jpg"),
                         3, VKL_PIX_F32, &jpg, &info, &e), 0);
    assert_int_equal(info.orientation, 6);
    assert_int_equal(info.format, VKL_IMG_JPEG);
    assert_int_equal(vkl_image_read_file(vkl_test_shared_path("data/image-corpus/png-misc/hopper.png"),
                                         3, VKL_PIX_F32, &png, NULL, &e), 0);
    assert_int_equal(jpg.width, png.width);
    double best = 1e9, upright = 0;
    int best_o = 0;
    for (int o = 1; o <= 8; o++) {
        vkl_image t;
        assert_int_equal(vkl_image_orient(&jpg, o, &t, &e), 0);
        double d = mean_abs(&t, &png);
        if (o == 1) upright = d;
        if (d < best) best = d, best_o = o;
        vkl_image_free(&t);
    }
    fprintf(stderr, "hopper: mean |jpeg - png| upright %.4f\n", upright);
    assert_int_equal(best_o, 1);
    assert_true(upright < 0.03); /* JPEG loss only */
    vkl_image_free(&jpg);
    vkl_image_free(&png);
}

static void jpeg_variants(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/image-corpus/jpeg/testorig.jpg");
    static const struct { const char *f; int w, h, c; } cases[] = {
        {"testorig.jpg", 227, 149, 3}, {"hopper_gray.jpg", 128, 128, 1},
        {"app13-multiple.jpg", 256, 160, 3}, {"jfif_unit_cm.jpg", 1, 1, 1},
        {"pil_sample_cmyk.jpg", 100, 100, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "data/image-corpus/jpeg/%s", cases[i].f);
        vkl_err e = {{0}};
        vkl_image im;
        vkl_image_info info;
        if (vkl_image_read_file(vkl_test_shared_path(rel), 0, VKL_PIX_U8, &im, &info, &e))
            fail_msg("%s", e.msg);
        assert_int_equal(im.width, cases[i].w);
        assert_int_equal(im.height, cases[i].h);
        assert_int_equal(info.channels, cases[i].c);
        assert_int_equal(im.channels, cases[i].c);
        vkl_image_free(&im);
    }
}

/* ---- formats made here with known pixels ---- */

typedef struct { uint8_t *p; size_t n; } membuf;
static void to_mem(void *ctx, void *data, int size)
{
    membuf *m = ctx;
    m->p = realloc(m->p, m->n + (size_t)size);
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

static void bmp_tga_roundtrip(void **state)
{
    (void)state;
    enum { W = 7, H = 5 };
    uint8_t px[W * H * 4];
    for (int i = 0; i < W * H * 4; i++) px[i] = (uint8_t)(i * 37 + 11);
    for (int fmt = 0; fmt < 2; fmt++) {
        for (int c = 3; c <= 4; c++) {
            membuf m = {0};
            if (fmt == 0) assert_true(stbi_write_bmp_to_func(to_mem, &m, W, H, c, px));
            else assert_true(stbi_write_tga_to_func(to_mem, &m, W, H, c, px));
            vkl_err e = {{0}};
            vkl_image im;
            vkl_image_info info;
            if (vkl_image_read_memory(m.p, m.n, "made.img", c, VKL_PIX_U8, &im, &info, &e))
                fail_msg("%s", e.msg);
            assert_int_equal(info.format, fmt == 0 ? VKL_IMG_BMP : VKL_IMG_TGA);
            assert_int_equal(im.width, W);
            assert_int_equal(im.height, H);
            assert_memory_equal(im.data, px, (size_t)W * H * c);
            vkl_image_free(&im);
            free(m.p);
        }
    }
}

/* 3x2, two frames, 4-colour palette (red, green, blue, white); frame 1 is
 * indices 0 1 2 / 3 2 1, frame 2 all white. LZW written by hand with a clear
 * code every two pixels so every code stays 3 bits. */
static const uint8_t gif_2frames[] = {
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x03, 0x00, 0x02, 0x00, 0xf1, 0x00, 0x00, 0xff, 0x00,
    0x00, 0x00, 0xff, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x00, 0x0a,
    0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x02, 0x04,
    0x44, 0xa8, 0x51, 0x29, 0x00, 0x21, 0xf9, 0x04, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x2c, 0x00,
    0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x02, 0x04, 0xdc, 0xb8, 0x71, 0x2b, 0x00,
    0x3b};

static void gif_first_frame(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_image im;
    vkl_image_info info;
    if (vkl_image_read_memory(gif_2frames, sizeof gif_2frames, "two.gif", 3, VKL_PIX_U8, &im,
                              &info, &e))
        fail_msg("%s", e.msg);
    assert_int_equal(info.format, VKL_IMG_GIF);
    static const uint8_t want[18] = {255, 0, 0, 0, 255, 0, 0, 0, 255,
                                     255, 255, 255, 0, 0, 255, 0, 255, 0};
    assert_int_equal(im.width, 3);
    assert_int_equal(im.height, 2);
    assert_memory_equal(im.data, want, 18);
    vkl_image_free(&im);
    /* a GIF cut short is an error, not a crash */
    for (size_t n = 0; n < sizeof gif_2frames - 30; n++) {
        int rc = vkl_image_read_memory(gif_2frames, n, "cut.gif", 3, VKL_PIX_U8, &im, NULL, &e);
        if (rc == 0) vkl_image_free(&im);
        else assert_non_null(strstr(e.msg, "cut.gif"));
    }
}

static void sixteen_bit_kept_in_float(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/image-corpus/pngsuite/16bit/basn0g16.png");
    vkl_err e = {{0}};
    vkl_image f, u;
    vkl_image_info info;
    const char *p = vkl_test_shared_path("data/image-corpus/pngsuite/16bit/basn0g16.png");
    assert_int_equal(vkl_image_read_file(p, 0, VKL_PIX_F32, &f, &info, &e), 0);
    assert_int_equal(info.bits, 16);
    assert_int_equal(f.channels, 1);
    assert_int_equal(vkl_image_read_file(p, 0, VKL_PIX_U8, &u, NULL, &e), 0);
    int not_8bit = 0;
    for (int i = 0; i < 32 * 32; i++) {
        float v = vkl_image_f32(&f)[i] * 65535.0f;
        assert_true(fabsf(v - roundf(v)) < 1e-2f);  /* exact 16-bit levels */
        int s = (int)lroundf(v);
        if (s % 257) not_8bit++;
        assert_int_equal(vkl_image_u8(&u)[i], s >> 8); /* stb's 16 -> 8 is the high byte */
    }
    assert_true(not_8bit > 100);
    vkl_image_free(&f);
    vkl_image_free(&u);
}

/* ---- limits and damage ---- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* signature + IHDR (w x h, 8-bit grey) + IDAT of one zero row + IEND, CRCs right */
static size_t make_png(uint8_t *b, uint32_t w, uint32_t h)
{
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    size_t p = 8;
    uint8_t ihdr[13] = {0};
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = 8;
    uint8_t raw[64] = {0}, z[128];
    uLongf zn = sizeof z;
    compress(z, &zn, raw, w <= 63 ? w + 1 : 1);
    struct { const char *t; const uint8_t *d; uint32_t n; } ch[3] = {
        {"IHDR", ihdr, 13}, {"IDAT", z, (uint32_t)zn}, {"IEND", NULL, 0}};
    for (int i = 0; i < 3; i++) {
        put_be32(b + p, ch[i].n);
        memcpy(b + p + 4, ch[i].t, 4);
        if (ch[i].n) memcpy(b + p + 8, ch[i].d, ch[i].n);
        put_be32(b + p + 8 + ch[i].n, (uint32_t)crc32(0, b + p + 4, ch[i].n + 4));
        p += 12 + ch[i].n;
    }
    return p;
}

static void size_limits_before_allocation(void **state)
{
    (void)state;
    uint8_t b[256];
    vkl_err e = {{0}};
    vkl_image im;
    size_t n = make_png(b, 5, 1);
    assert_int_equal(vkl_image_read_memory(b, n, "ok.png", 0, VKL_PIX_U8, &im, NULL, &e), 0);
    assert_int_equal(im.width, 5);
    vkl_image_free(&im);
    static const uint32_t bad[][2] = {{100000, 100000}, {16385, 1}, {1, 16385}, {0, 5},
                                      {0x7fffffff, 0x7fffffff}, {0xffffffff, 1}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        n = make_png(b, bad[i][0], bad[i][1]);
        assert_int_equal(vkl_image_read_memory(b, n, "big.png", 0, VKL_PIX_U8, &im, NULL, &e), -1);
        assert_non_null(strstr(e.msg, "big.png"));
        assert_true(strstr(e.msg, "limit") || strstr(e.msg, "empty") || strstr(e.msg, "invalid"));
    }
    /* 16384 x 16384 is exactly at the limit: accepted by the size check,
     * then refused because the data is one row short */
    n = make_png(b, 16384, 16384);
    assert_int_equal(vkl_image_read_memory(b, n, "edge.png", 0, VKL_PIX_U8, &im, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "truncated"));

    /* BMP header claiming 100000 x 100000, 24 bits */
    uint8_t bmp[54] = {'B', 'M'};
    bmp[10] = 54;
    bmp[14] = 40;
    bmp[18] = 0xa0; bmp[19] = 0x86; bmp[20] = 0x01; /* 100000 */
    bmp[22] = 0xa0; bmp[23] = 0x86; bmp[24] = 0x01;
    bmp[26] = 1;
    bmp[28] = 24;
    assert_int_equal(vkl_image_read_memory(bmp, sizeof bmp, "big.bmp", 0, VKL_PIX_U8, &im, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "100000x100000 is over the limit"));
}

/* Every prefix of a valid PNG and JPEG, and every single-byte change to the
 * PNG, is either decoded or refused with a message naming it: never a crash. */
static void damaged_files_never_crash(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/image-corpus/jpeg/testorig.jpg");
    const char *files[] = {"data/image-corpus/pngsuite/primary/basi3p02.png",
                           "data/image-corpus/jpeg/testorig.jpg"};
    for (int f = 0; f < 2; f++) {
        uint8_t *buf;
        size_t n;
        vkl_err e = {{0}};
        assert_int_equal(vkl_read_file_bytes(vkl_test_shared_path(files[f]), 1 << 20, &buf, &n, &e), 0);
        int refused = 0;
        for (size_t k = 0; k < n; k += (f ? 7 : 1)) {
            vkl_image im;
            if (vkl_image_read_memory(buf, k, "cut", 3, VKL_PIX_U8, &im, NULL, &e) == 0) {
                vkl_image_free(&im);
            } else {
                assert_non_null(strstr(e.msg, "cut"));
                refused++;
            }
        }
        /* every strict prefix lacks the end marker */
        assert_int_equal(refused, f ? (int)((n + 6) / 7) : (int)n);
        if (f == 0) {
            int flipped_ok = 0;
            for (size_t k = 0; k < n; k++) {
                buf[k] ^= 0x10;
                vkl_image im;
                if (vkl_image_read_memory(buf, n, "flip", 3, VKL_PIX_U8, &im, NULL, &e) == 0) {
                    vkl_image_free(&im);
                    flipped_ok++;
                }
                buf[k] ^= 0x10;
            }
            /* CRC-32 catches every single-byte change inside a chunk; only
             * bytes after IEND could pass, and there are none */
            assert_int_equal(flipped_ok, 0);
        }
        free(buf);
    }
}

static void errors_name_the_file(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_image im;
    assert_int_equal(vkl_image_read_file("/nonexistent/dir/x.png", 3, VKL_PIX_U8, &im, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/dir/x.png"));
    assert_int_equal(vkl_image_read_memory("", 0, "empty.png", 3, VKL_PIX_U8, &im, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "empty.png: file is empty"));
    const char txt[] = "P6\n1 1\n255\nabc";
    assert_int_equal(vkl_image_read_memory(txt, sizeof txt - 1, "x.ppm", 3, VKL_PIX_U8, &im, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "unsupported image format"));
    assert_int_equal(vkl_image_read_memory("hello world, not an image", 25, "notes.txt", 3,
                                           VKL_PIX_U8, &im, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "notes.txt: not a readable image"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exif_both_byte_orders),
        cmocka_unit_test(orient_known_values),
        cmocka_unit_test(jpeg_orientation_matches_upright),
        cmocka_unit_test(jpeg_variants),
        cmocka_unit_test(bmp_tga_roundtrip),
        cmocka_unit_test(gif_first_frame),
        cmocka_unit_test(sixteen_bit_kept_in_float),
        cmocka_unit_test(size_limits_before_allocation),
        cmocka_unit_test(damaged_files_never_crash),
        cmocka_unit_test(errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
