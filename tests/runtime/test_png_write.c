/* PNG writing and text chunks: pixels and texts round-trip exactly, the
 * right chunk type is chosen (tEXt for ASCII, iTXt for UTF-8), float images
 * round to 8 bits as documented, failures leave neither a partial file nor a
 * temporary, and the text reader handles zTXt, iTXt and text bombs. */
#include "vkl_test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "io/image.h"

static char *path_in(const char *dir, const char *name)
{
    static char buf[4][4096];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *de; d && (de = readdir(d));)
        if (de->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

static int has_chunk(const uint8_t *b, size_t n, const char *type)
{
    for (size_t i = 4; i + 4 <= n; i++)
        if (!memcmp(b + i, type, 4)) return 1;
    return 0;
}

static void roundtrip_rgb_rgba_with_texts(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    for (int c = 1; c <= 4; c++) {
        vkl_image im;
        vkl_err e = {{0}};
        assert_int_equal(vkl_image_alloc(&im, 13, 7, c, VKL_PIX_U8, &e), 0);
        for (int i = 0; i < 13 * 7 * c; i++) vkl_image_u8(&im)[i] = (uint8_t)(i * 31 + c);
        const char *params = "a cat, \"quoted\"\nNegative prompt: dog\nSteps: 20, Seed: 1";
        const char *utf8 = "caf\xc3\xa9 \xe2\x98\x95";
        vkl_png_text texts[2] = {{"parameters", (char *)params}, {"Comment", (char *)utf8}};
        const char *p = path_in(dir, "out.png");
        if (vkl_png_write(p, &im, texts, 2, &e)) fail_msg("%s", e.msg);

        vkl_image back;
        vkl_image_info info;
        if (vkl_image_read_file(p, 0, VKL_PIX_U8, &back, &info, &e)) fail_msg("%s", e.msg);
        assert_int_equal(info.format, VKL_IMG_PNG);
        assert_int_equal(back.channels, c);
        assert_int_equal(back.width, 13);
        assert_memory_equal(back.data, im.data, (size_t)13 * 7 * c);

        vkl_png_text *t;
        int n;
        if (vkl_png_read_texts_file(p, &t, &n, &e)) fail_msg("%s", e.msg);
        assert_int_equal(n, 2);
        assert_string_equal(vkl_png_text_get(t, n, "parameters"), params);
        assert_string_equal(vkl_png_text_get(t, n, "Comment"), utf8);
        assert_null(vkl_png_text_get(t, n, "missing"));
        vkl_png_texts_free(t, n);

        uint8_t *raw;
        size_t rn;
        assert_int_equal(vkl_read_file_bytes(p, 1 << 20, &raw, &rn, &e), 0);
        assert_true(has_chunk(raw, rn, "tEXt")); /* ASCII parameters, as A1111 writes */
        assert_true(has_chunk(raw, rn, "iTXt")); /* UTF-8 comment */
        free(raw);
        vkl_image_free(&back);
        vkl_image_free(&im);
    }
    assert_int_equal(count_files(dir), 1); /* no temporaries left behind */
    vkl_test_rmtree(dir);
}

/* vkl_png_encode gives exactly the bytes vkl_png_write puts in the file. */
static void encode_matches_file(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    uint8_t px[5 * 3 * 4];
    for (size_t i = 0; i < sizeof px; i++) px[i] = (uint8_t)(i * 37);
    vkl_image im = {5, 3, 4, VKL_PIX_U8, px};
    vkl_png_text t = {"parameters", "a cat, caf\xc3\xa9"};
    vkl_err e = {{0}};
    const char *p = path_in(dir, "e.png");
    assert_int_equal(vkl_png_write(p, &im, &t, 1, &e), 0);
    uint8_t *file, *mem;
    size_t nf, nm;
    assert_int_equal(vkl_read_file_bytes(p, 1 << 20, &file, &nf, &e), 0);
    assert_int_equal(vkl_png_encode(&im, &t, 1, "e", &mem, &nm, &e), 0);
    assert_int_equal(nf, nm);
    assert_memory_equal(file, mem, nf);
    free(file);
    free(mem);
    vkl_image bad = {0, 3, 4, VKL_PIX_U8, px};
    assert_int_equal(vkl_png_encode(&bad, NULL, 0, "bad", &mem, &nm, &e), -1);
    assert_null(mem);
    assert_non_null(strstr(e.msg, "bad"));
    vkl_test_rmtree(dir);
}

static void float_rounds_to_8_bits(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    float v[6] = {0.0f, 1.0f, 0.5f, -0.2f, 1.7f, 100.0f / 255.0f + 0.001f};
    vkl_image im = {2, 1, 3, VKL_PIX_F32, v};
    vkl_err e = {{0}};
    const char *p = path_in(dir, "f.png");
    assert_int_equal(vkl_png_write(p, &im, NULL, 0, &e), 0);
    vkl_image back;
    assert_int_equal(vkl_image_read_file(p, 3, VKL_PIX_U8, &back, NULL, &e), 0);
    assert_memory_equal(back.data, ((uint8_t[]){0, 255, 128, 0, 255, 100}), 6);
    vkl_image_free(&back);
    vkl_test_rmtree(dir);
}

static void failures_leave_nothing(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    uint8_t px[3] = {1, 2, 3};
    vkl_image im = {1, 1, 3, VKL_PIX_U8, px};
    vkl_err e = {{0}};
    const char *p = path_in(dir, "keep.png");
    assert_int_equal(vkl_png_write(p, &im, NULL, 0, &e), 0);
    struct stat before;
    assert_int_equal(stat(p, &before), 0);

    /* invalid keywords are refused before anything is written */
    vkl_png_text bad[] = {{"", "x"}, {" lead", "x"}, {"caf\xc3\xa9", "x"},
                          {"0123456789012345678901234567890123456789012345678901234567890123456789"
                           "0123456789", "x"}};
    uint8_t px2[3] = {9, 9, 9};
    vkl_image im2 = {1, 1, 3, VKL_PIX_U8, px2};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(vkl_png_write(p, &im2, &bad[i], 1, &e), -1);
        assert_non_null(strstr(e.msg, "keep.png"));
    }
    vkl_image back;
    assert_int_equal(vkl_image_read_file(p, 3, VKL_PIX_U8, &back, NULL, &e), 0);
    assert_memory_equal(back.data, px, 3); /* old content intact */
    vkl_image_free(&back);

    /* a folder that does not exist */
    assert_int_equal(vkl_png_write(path_in(dir, "no/such/dir/x.png"), &im, NULL, 0, &e), -1);
    assert_non_null(strstr(e.msg, "no/such/dir/x.png"));
    /* an invalid image */
    vkl_image empty = {0, 0, 3, VKL_PIX_U8, NULL};
    assert_int_equal(vkl_png_write(path_in(dir, "e.png"), &empty, NULL, 0, &e), -1);
    assert_int_equal(count_files(dir), 1);
    vkl_test_rmtree(dir);
}

/* A PNG assembled by hand around a real 1x1 image, with extra chunks. */
static size_t put_chunk(uint8_t *b, const char *type, const void *data, uint32_t n)
{
    b[0] = (uint8_t)(n >> 24); b[1] = (uint8_t)(n >> 16); b[2] = (uint8_t)(n >> 8); b[3] = (uint8_t)n;
    memcpy(b + 4, type, 4);
    if (n) memcpy(b + 8, data, n);
    uint32_t c = (uint32_t)crc32(0, b + 4, n + 4);
    b[8 + n] = (uint8_t)(c >> 24); b[9 + n] = (uint8_t)(c >> 16);
    b[10 + n] = (uint8_t)(c >> 8); b[11 + n] = (uint8_t)c;
    return 12 + n;
}

static size_t png_with(uint8_t *b, const char *type, const uint8_t *data, uint32_t n)
{
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    size_t p = 8;
    uint8_t ihdr[13] = {0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0};
    p += put_chunk(b + p, "IHDR", ihdr, 13);
    p += put_chunk(b + p, type, data, n);
    uint8_t raw[2] = {0, 77}, z[64];
    uLongf zn = sizeof z;
    compress(z, &zn, raw, 2);
    p += put_chunk(b + p, "IDAT", z, (uint32_t)zn);
    p += put_chunk(b + p, "IEND", NULL, 0);
    return p;
}

static void text_reader_chunk_kinds(void **state)
{
    (void)state;
    static uint8_t body[1 << 16], file[1 << 17];
    vkl_err e = {{0}};
    vkl_png_text *t;
    int n;
    const char *value = "Steps: 20, Sampler: Euler a";
    /* zTXt: keyword \0 method 0, zlib data */
    size_t k = 0;
    memcpy(body, "parameters\0\0", 12);
    uLongf zn = sizeof body - 12;
    compress(body + 12, &zn, (const Bytef *)value, strlen(value));
    size_t fn = png_with(file, "zTXt", body, (uint32_t)(12 + zn));
    assert_int_equal(vkl_png_read_texts_memory(file, fn, "z.png", &t, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].value, value);
    vkl_png_texts_free(t, n);

    /* compressed iTXt */
    k = 0;
    memcpy(body, "parameters\0\1\0en\0Parameter", 26); /* with the string's own NUL */
    k = 26;
    zn = sizeof body - k;
    compress(body + k, &zn, (const Bytef *)"\xc3\xa9t\xc3\xa9", 5);
    fn = png_with(file, "iTXt", body, (uint32_t)(k + zn));
    assert_int_equal(vkl_png_read_texts_memory(file, fn, "i.png", &t, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_string_equal(t[0].value, "\xc3\xa9t\xc3\xa9");
    vkl_png_texts_free(t, n);

    /* Latin-1 tEXt comes back as UTF-8 */
    fn = png_with(file, "tEXt", (const uint8_t *)"Title\0caf\xe9", 10);
    assert_int_equal(vkl_png_read_texts_memory(file, fn, "l.png", &t, &n, &e), 0);
    assert_string_equal(t[0].value, "caf\xc3\xa9");
    vkl_png_texts_free(t, n);

    /* a malformed text chunk (no keyword separator) is skipped */
    fn = png_with(file, "tEXt", (const uint8_t *)"nokeyword", 9);
    assert_int_equal(vkl_png_read_texts_memory(file, fn, "m.png", &t, &n, &e), 0);
    assert_int_equal(n, 0);
    vkl_png_texts_free(t, n);

    /* a zTXt that inflates past the limit is an error, not an allocation */
    size_t big = VKL_PNG_TEXT_CHUNK_MAX_BYTES + 1000;
    uint8_t *zeros = calloc(big, 1);
    memcpy(body, "bomb\0\0", 6);
    zn = sizeof body - 6;
    assert_int_equal(compress2(body + 6, &zn, zeros, big, 9), Z_OK);
    free(zeros);
    fn = png_with(file, "zTXt", body, (uint32_t)(6 + zn));
    assert_int_equal(vkl_png_read_texts_memory(file, fn, "bomb.png", &t, &n, &e), -1);
    assert_non_null(strstr(e.msg, "bomb.png"));
    assert_non_null(strstr(e.msg, "more than"));
    /* while the image itself still reads */
    vkl_image im;
    assert_int_equal(vkl_image_read_memory(file, fn, "bomb.png", 1, VKL_PIX_U8, &im, NULL, &e), 0);
    assert_int_equal(vkl_image_u8(&im)[0], 77);
    vkl_image_free(&im);

    /* a corrupt chunk: CRC error names the chunk */
    fn = png_with(file, "tEXt", (const uint8_t *)"Title\0x", 7);
    file[8 + 25 + 9] ^= 1;
    assert_int_equal(vkl_png_read_texts_memory(file, fn, "crc.png", &t, &n, &e), -1);
    assert_non_null(strstr(e.msg, "crc.png: PNG chunk 'tEXt'"));
    assert_non_null(strstr(e.msg, "bad CRC"));
}

static void corpus_texts(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/image-corpus/png-misc/hopper_idat_after_image_end.png");
    vkl_err e = {{0}};
    vkl_png_text *t;
    int n;
    assert_int_equal(vkl_png_read_texts_file(
        vkl_test_shared_path("data/image-corpus/png-misc/hopper_idat_after_image_end.png"), &t, &n,
        &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(vkl_png_text_get(t, n, "TXT"), "VALUE");
    assert_string_equal(vkl_png_text_get(t, n, "ZIP"), "VALUE");
    vkl_png_texts_free(t, n);
    /* three zTXt chunks that each inflate to 2 MiB */
    assert_int_equal(vkl_png_read_texts_file(
        vkl_test_shared_path("data/image-corpus/png-misc/png_decompression_dos.png"), &t, &n, &e), -1);
    fprintf(stderr, "text bomb: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "png_decompression_dos.png"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_rgb_rgba_with_texts),
        cmocka_unit_test(float_rounds_to_8_bits),
        cmocka_unit_test(encode_matches_file),
        cmocka_unit_test(failures_leave_nothing),
        cmocka_unit_test(text_reader_chunk_kinds),
        cmocka_unit_test(corpus_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
