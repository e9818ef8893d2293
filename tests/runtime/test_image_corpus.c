/* Every file of the shared image corpus (odd-but-valid and known-bad PNG and
 * JPEG files) is read, and the outcome must match MANIFEST.tsv: `ok` files
 * decode, `error` files are refused with a message naming the file, `either`
 * files may go both ways but must not crash. PngSuite sizes come from stb's
 * ref_results.csv; PngSuite pixels from stb's primary_check/ RGBA outputs. */
#include "vkl_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"

#define CORPUS "data/image-corpus"

typedef struct {
    char path[256];
    int w, h, ncomp;
    int has_error;
} ref_row;

static ref_row *load_refs(int *count)
{
    FILE *f = fopen(vkl_test_shared_path(CORPUS "/pngsuite/ref_results.csv"), "r");
    assert_non_null(f);
    ref_row *rows = calloc(512, sizeof *rows);
    int n = 0;
    char line[1024];
    while (fgets(line, sizeof line, f) && n < 512) {
        char *fields[6] = {0};
        int nf = 0;
        for (char *p = line, *tok; nf < 6 && (tok = strsep(&p, ",")) != NULL;) fields[nf++] = tok;
        if (nf < 5 || !strcmp(fields[0], "filename")) continue;
        snprintf(rows[n].path, sizeof rows[n].path, "%s", fields[0]);
        rows[n].w = atoi(fields[1]);
        rows[n].h = atoi(fields[2]);
        rows[n].ncomp = atoi(fields[3]);
        rows[n].has_error = fields[4][0] != 0;
        n++;
    }
    fclose(f);
    *count = n;
    return rows;
}

static void manifest_outcomes(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(CORPUS "/MANIFEST.tsv");
    int nref;
    ref_row *refs = load_refs(&nref);
    assert_true(nref > 200);
    FILE *f = fopen(vkl_test_shared_path(CORPUS "/MANIFEST.tsv"), "r");
    assert_non_null(f);
    char line[4096];
    int total = 0, ok = 0, refused = 0, either = 0, mismatches = 0, sized = 0;
    while (fgets(line, sizeof line, f)) {
        char *p = line;
        char *path = strsep(&p, "\t");
        strsep(&p, "\t"); /* bytes */
        char *expect = strsep(&p, "\t");
        if (!path || !expect || !strcmp(path, "path")) continue;
        char full[8400];
        snprintf(full, sizeof full, "%s", vkl_test_shared_path(CORPUS));
        strncat(full, "/", sizeof full - strlen(full) - 1);
        strncat(full, path, sizeof full - strlen(full) - 1);
        total++;

        vkl_err e = {{0}};
        vkl_image im;
        vkl_image_info info;
        int rc = vkl_image_read_file(full, 4, VKL_PIX_U8, &im, &info, &e);
        /* info alone must agree with the full decode on ok/error for the
         * container checks; a decode failure after a good header is allowed
         * for `either` files only. */
        vkl_err e2 = {{0}};
        vkl_image_info info2;
        int rc_info = vkl_image_info_file(full, &info2, &e2);
        if (rc == 0) {
            assert_int_equal(rc_info, 0);
            assert_int_equal(info2.width, im.width);
            assert_int_equal(info2.height, im.height);
            assert_int_equal(im.channels, 4);
        } else {
            /* every failure names the file */
            if (!strstr(e.msg, path)) fail_msg("%s: error message does not name the file: %s",
                                               path, e.msg);
        }
        if (!strcmp(expect, "ok")) {
            if (rc) {
                fprintf(stderr, "MISMATCH %s: expected ok, got error: %s\n", path, e.msg);
                mismatches++;
            }
            ok++;
        } else if (!strcmp(expect, "error")) {
            if (!rc) {
                fprintf(stderr, "MISMATCH %s: expected an error, decoded %dx%d\n", path, im.width,
                        im.height);
                mismatches++;
            } else {
                fprintf(stderr, "refused as expected: %s\n", e.msg);
            }
            refused++;
        } else {
            fprintf(stderr, "either %s: %s\n", path, rc ? e.msg : "decoded");
            either++;
        }
        if (!rc && !strncmp(path, "pngsuite/", 9)) {
            for (int i = 0; i < nref; i++) {
                if (strcmp(refs[i].path, path) != 0 || refs[i].has_error) continue;
                if (im.width != refs[i].w || im.height != refs[i].h || info.channels != refs[i].ncomp)
                    fail_msg("%s: %dx%d c%d, stb reference says %dx%d c%d", path, im.width,
                             im.height, info.channels, refs[i].w, refs[i].h, refs[i].ncomp);
                sized++;
            }
        }
        vkl_image_free(&im);
    }
    fclose(f);
    free(refs);
    fprintf(stderr, "corpus: %d files (%d ok, %d error, %d either), %d PngSuite sizes checked, "
            "%d mismatches\n", total, ok, refused, either, sized, mismatches);
    assert_int_equal(total, 214);
    assert_true(sized >= 150);
    assert_int_equal(mismatches, 0);
}

static int read_rgba(const char *rel, vkl_image *im, vkl_image_info *info)
{
    vkl_err e = {{0}};
    int rc = vkl_image_read_file(vkl_test_shared_path(rel), 4, VKL_PIX_U8, im, info, &e);
    if (rc) fprintf(stderr, "%s\n", e.msg);
    return rc;
}

/* Decoded RGBA must equal stb's reference RGBA output byte for byte. */
static void pngsuite_pixels_match_reference(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(CORPUS "/pngsuite/primary_check");
    static const char *names[] = {
        "basn0g01", "basn0g02", "basn0g04", "basn0g08", "basn2c08", "basn3p01", "basn3p02",
        "basn3p04", "basn3p08", "basn4a08", "basn6a08", "basi0g01", "basi0g02", "basi0g04",
        "basi0g08", "basi2c08", "basi3p01", "basi3p08", "basi4a08", "basi6a08", "bgai4a08",
        "s01i3p01", "s01n3p01", "s09i3p02", "s33n3p04", "s40i3p04", "tbbn3p08", "tbrn2c08",
        "tp1n3p08", "tm3n3p02", "z00n2c08", "z09n2c08",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char a[256], b[256];
        snprintf(a, sizeof a, CORPUS "/pngsuite/primary/%s.png", names[i]);
        snprintf(b, sizeof b, CORPUS "/pngsuite/primary_check/%s.png", names[i]);
        vkl_image x, y;
        vkl_image_info ix, iy;
        assert_int_equal(read_rgba(a, &x, &ix), 0);
        assert_int_equal(read_rgba(b, &y, &iy), 0);
        assert_int_equal(x.width, y.width);
        assert_int_equal(x.height, y.height);
        if (memcmp(x.data, y.data, (size_t)x.width * x.height * 4) != 0)
            fail_msg("%s: pixels differ from stb's reference decode", names[i]);
        vkl_image_free(&x);
        vkl_image_free(&y);
    }
}

/* Adam7 interlaced files hold the same picture as their plain twins; the
 * 16-bit ones are compared in float to keep all 16 bits. */
static void interlaced_equals_plain(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(CORPUS "/pngsuite/16bit/basi6a16.png");
    static const char *pairs[][2] = {
        {"primary/basi0g01", "primary/basn0g01"}, {"primary/basi0g02", "primary/basn0g02"},
        {"primary/basi0g04", "primary/basn0g04"}, {"primary/basi0g08", "primary/basn0g08"},
        {"primary/basi2c08", "primary/basn2c08"}, {"primary/basi3p01", "primary/basn3p01"},
        {"primary/basi3p02", "primary/basn3p02"}, {"primary/basi3p04", "primary/basn3p04"},
        {"primary/basi3p08", "primary/basn3p08"}, {"primary/basi4a08", "primary/basn4a08"},
        {"primary/basi6a08", "primary/basn6a08"}, {"16bit/basi0g16", "16bit/basn0g16"},
        {"16bit/basi2c16", "16bit/basn2c16"},     {"16bit/basi4a16", "16bit/basn4a16"},
        {"16bit/basi6a16", "16bit/basn6a16"},     {"primary/s09i3p02", "primary/s09n3p02"},
        {"primary/s35i3p04", "primary/s35n3p04"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        vkl_image im[2];
        vkl_image_info info[2];
        for (int k = 0; k < 2; k++) {
            char rel[256];
            snprintf(rel, sizeof rel, CORPUS "/pngsuite/%s.png", pairs[i][k]);
            vkl_err e = {{0}};
            if (vkl_image_read_file(vkl_test_shared_path(rel), 0, VKL_PIX_F32, &im[k], &info[k], &e))
                fail_msg("%s", e.msg);
        }
        assert_int_equal(info[0].bits, strstr(pairs[i][0], "16bit") ? 16 : 8);
        assert_int_equal(im[0].channels, im[1].channels);
        assert_int_equal(info[0].bits, info[1].bits);
        size_t n = (size_t)im[0].width * im[0].height * im[0].channels;
        assert_int_equal(n, (size_t)im[1].width * im[1].height * im[1].channels);
        assert_true(vkl_test_max_abs_diff(im[0].data, im[1].data, n) == 0.0f);
        vkl_image_free(&im[0]);
        vkl_image_free(&im[1]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(manifest_outcomes),
        cmocka_unit_test(pngsuite_pixels_match_reference),
        cmocka_unit_test(interlaced_equals_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
