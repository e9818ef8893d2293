/* `vklora dataset emoji` end to end on the Debian packages: the Noto font
 * gives over 1000 captioned 32x32 RGB images whose colours match their names
 * (red heart red, green apple green), byte for byte the same on a second run;
 * the gemojione PNGs give the same captions; damaged fonts and an existing
 * output folder are refused with no folder left behind. The whole program is
 * skipped (exit 77) when the font package is not installed. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/image.h"

#define NOTO "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
#define GEMOJIONE "/usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png"

static const char *tmp;

static int exists(const char *dir, const char *name)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s%s%s", dir, name ? "/" : "", name ? name : "");
    return stat(p, &st) == 0;
}

/* Runs the command in tmp; returns its status, output in *out (may be NULL). */
static int run(const char *args, char **out)
{
    char *o = NULL;
    int rc = vkl_test_run_cli(tmp, NULL, args, &o);
    if (out) *out = o;
    else free(o);
    return rc;
}

static void expect_ok(const char *args)
{
    char *out;
    int rc = run(args, &out);
    if (rc != 0) fail_msg("vklora %s: status %d\n%s", args, rc, out ? out : "");
    free(out);
}

/* Number of data rows of dataset.tsv in dir (header excluded). */
static int rows(const char *dir)
{
    char *t = vkl_test_slurp(tmp, dir);
    if (!t) fail_msg("%s/%s cannot be read", tmp, dir);
    int n = -1;
    for (char *p = t; *p; p++) n += *p == '\n';
    free(t);
    return n;
}

/* Mean colour over the pixels that are not (near) white, in [0, 255]. */
static void mean_colour(const char *dir, const char *file, double rgb[3])
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/%s", tmp, dir, file);
    vkl_image im;
    vkl_image_info info;
    vkl_err e;
    if (vkl_image_read_file(p, 0, VKL_PIX_U8, &im, &info, &e)) fail_msg("%s", e.msg);
    assert_int_equal(im.width, 32);
    assert_int_equal(im.height, 32);
    assert_int_equal(info.channels, 3);
    const uint8_t *px = vkl_image_u8(&im);
    double sum[3] = {0, 0, 0};
    int n = 0;
    for (int i = 0; i < 32 * 32; i++) {
        const uint8_t *q = px + 3 * i;
        if (q[0] > 240 && q[1] > 240 && q[2] > 240) continue;
        for (int c = 0; c < 3; c++) sum[c] += q[c];
        n++;
    }
    vkl_image_free(&im);
    if (n < 50) fail_msg("%s: only %d coloured pixels", file, n);
    for (int c = 0; c < 3; c++) rgb[c] = sum[c] / n;
    print_message("%s: mean colour over %d pixels %.0f %.0f %.0f\n", file, n, rgb[0], rgb[1], rgb[2]);
}

static void expect_caption(const char *dir, const char *txt, const char *want)
{
    char rel[512];
    snprintf(rel, sizeof rel, "%s/%s", dir, txt);
    char *c = vkl_test_slurp(tmp, rel);
    if (!c) fail_msg("%s missing", rel);
    size_t n = strlen(c);
    if (n && c[n - 1] == '\n') c[--n] = 0;
    if (strcmp(c, want)) fail_msg("%s: caption '%s', want '%s'", rel, c, want);
    assert_null(strchr(c, '\n'));
    assert_true(n > 0 && c[n - 1] != ' ');
    free(c);
}

static void test_noto(void **state)
{
    (void)state;
    expect_ok("dataset emoji -o noto");
    int n = rows("noto/dataset.tsv");
    print_message("%d images from the Noto font\n", n);
    assert_true(n > 1000);
    assert_true(exists(tmp, "noto/SOURCE.md") && exists(tmp, "noto/u2764_red_heart.png"));
    assert_false(exists(tmp, "noto.tmp"));
    expect_caption("noto", "u2764_red_heart.txt", "red heart");
    expect_caption("noto", "u1f34e_red_apple.txt", "red apple");
    double red[3], green[3];
    mean_colour("noto", "u2764_red_heart.png", red);
    assert_true(red[0] > 1.5 * red[1] && red[0] > 1.5 * red[2]);
    mean_colour("noto", "u1f34f_green_apple.png", green);
    assert_true(green[1] > 1.2 * green[0] && green[1] > 1.2 * green[2]);
    /* skipped codepoints: keycap bases, regional indicators, skin tones */
    char *tsv = vkl_test_slurp(tmp, "noto/dataset.tsv");
    assert_non_null(tsv);
    assert_null(strstr(tsv, "\tU+0023\t"));
    assert_null(strstr(tsv, "\tU+1F1E6\t"));
    assert_null(strstr(tsv, "\tU+1F3FB\t"));
    assert_non_null(strstr(tsv, "u2764_red_heart.png\tU+2764\tred heart\t"));
    free(tsv);
    char *src = vkl_test_slurp(tmp, "noto/SOURCE.md");
    assert_non_null(src);
    assert_non_null(strstr(src, "fonts-noto-color-emoji"));
    assert_non_null(strstr(src, "OFL-1.1"));
    assert_non_null(strstr(src, "vklora dataset emoji -o noto"));
    free(src);
}

/* Every file named in dataset.tsv (and the table itself) has the same bytes in a and b. */
static void expect_same_files(const char *a, const char *b)
{
    char rel[512];
    snprintf(rel, sizeof rel, "%s/dataset.tsv", a);
    char *tsv = vkl_test_slurp(tmp, rel);
    assert_non_null(tsv);
    int files = 0;
    for (char *line = strchr(tsv, '\n') + 1; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char name[300];
        size_t k = strcspn(line, "\t");
        snprintf(name, sizeof name, "%.*s", (int)k, line);
        const char *names[3] = {name, NULL, "dataset.tsv"};
        char txt[300];
        snprintf(txt, sizeof txt, "%.*s.txt", (int)k - 4, line);
        names[1] = txt;
        for (int j = 0; j < 3; j++) {
            if (j == 2 && files) continue;
            char pa[4096], pb[4096];
            snprintf(pa, sizeof pa, "%s/%s/%s", tmp, a, names[j]);
            snprintf(pb, sizeof pb, "%s/%s/%s", tmp, b, names[j]);
            uint8_t *x, *y;
            size_t nx, ny;
            vkl_err e;
            if (vkl_read_file_bytes(pa, 1 << 20, &x, &nx, &e) || vkl_read_file_bytes(pb, 1 << 20, &y, &ny, &e))
                fail_msg("%s", e.msg);
            if (nx != ny || memcmp(x, y, nx)) fail_msg("%s differs between runs", names[j]);
            free(x);
            free(y);
        }
        files++;
    }
    free(tsv);
    print_message("%d images and captions identical\n", files);
}

static void test_rerun_identical(void **state)
{
    (void)state;
    if (!exists(tmp, "noto")) expect_ok("dataset emoji -o noto");
    expect_ok("dataset emoji --size 32 -o again");
    expect_same_files("noto", "again");
}

static void test_existing_refused(void **state)
{
    (void)state;
    if (!exists(tmp, "noto")) expect_ok("dataset emoji -o noto");
    char *out;
    assert_int_equal(run("dataset emoji -o noto", &out), 1);
    if (!strstr(out, "noto exists") || !strstr(out, "--force")) fail_msg("unclear refusal: %s", out);
    free(out);
    assert_true(exists(tmp, "noto/u2764_red_heart.png"));
    expect_ok("dataset emoji --size 16 --force -o noto");
    assert_int_equal(rows("noto/dataset.tsv"), rows("again/dataset.tsv"));
    assert_false(exists(tmp, "noto.tmp"));
}

static void test_gemojione(void **state)
{
    (void)state;
    if (!exists(GEMOJIONE, NULL)) {
        fprintf(stderr, "SKIPPED: %s not installed (Debian ruby-gemojione)\n", GEMOJIONE);
        skip();
    }
    expect_ok("dataset emoji --png-dir " GEMOJIONE " -o gem");
    int n = rows("gem/dataset.tsv");
    print_message("%d images from gemojione\n", n);
    assert_true(n > 500);
    expect_caption("gem", "u2764_red_heart.txt", "red heart");
    double red[3];
    mean_colour("gem", "u2764_red_heart.png", red);
    assert_true(red[0] > 1.5 * red[1] && red[0] > 1.5 * red[2]);
    char *src = vkl_test_slurp(tmp, "gem/SOURCE.md");
    assert_non_null(src);
    assert_non_null(strstr(src, "ruby-gemojione"));
    assert_non_null(strstr(src, "CC-BY-SA-4.0"));
    assert_non_null(strstr(src, "Emoji artwork provided by EmojiOne"));
    free(src);
}

/* A copy of the font with bytes [0, keep) and one 32-bit field patched (at < 0: none). */
static void write_damaged(const char *name, size_t keep, long at, uint32_t value)
{
    uint8_t *d;
    size_t n;
    vkl_err e;
    if (vkl_read_file_bytes(NOTO, 1u << 30, &d, &n, &e)) fail_msg("%s", e.msg);
    if (at >= 0) d[at] = (uint8_t)(value >> 24), d[at + 1] = (uint8_t)(value >> 16), d[at + 2] = (uint8_t)(value >> 8), d[at + 3] = (uint8_t)value;
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(d, 1, keep < n ? keep : n, f), keep < n ? keep : n);
    fclose(f);
    free(d);
}

/* Offset of table tag's record in the font's table directory. */
static long table_record(const char *tag)
{
    uint8_t *d;
    size_t n;
    vkl_err e;
    if (vkl_read_file_bytes(NOTO, 1u << 30, &d, &n, &e)) fail_msg("%s", e.msg);
    int nt = d[4] << 8 | d[5];
    long at = -1;
    for (int i = 0; i < nt && at < 0; i++)
        if (!memcmp(d + 12 + 16 * i, tag, 4)) at = 12 + 16 * i;
    free(d);
    if (at < 0) fail_msg("%s has no %s table", NOTO, tag);
    return at;
}

static void expect_refused(const char *font, const char *out_dir, const char *table)
{
    char args[512], *out;
    snprintf(args, sizeof args, "dataset emoji --font %s -o %s", font, out_dir);
    assert_int_equal(run(args, &out), 1);
    print_message("%s", out);
    if (!strstr(out, font) || !strstr(out, table)) fail_msg("the error should name %s and %s:\n%s", font, table, out);
    free(out);
    char tmp_dir[300];
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp", out_dir);
    assert_false(exists(tmp, out_dir));
    assert_false(exists(tmp, tmp_dir));
}

static void test_damaged_fonts(void **state)
{
    (void)state;
    struct stat st;
    assert_int_equal(stat(NOTO, &st), 0);
    /* cut in the middle of CBDT: the CBDT table runs past the end */
    write_damaged("cut.ttf", (size_t)st.st_size / 2, -1, 0);
    expect_refused("cut.ttf", "cut_out", "CBDT");
    /* the strike's indexSubTableArrayOffset (CBLC + 8) far outside CBLC */
    long rec = table_record("CBLC");
    uint8_t *d;
    size_t n;
    vkl_err e;
    if (vkl_read_file_bytes(NOTO, 1u << 30, &d, &n, &e)) fail_msg("%s", e.msg);
    long cblc = (long)((uint32_t)d[rec + 8] << 24 | (uint32_t)d[rec + 9] << 16 | (uint32_t)d[rec + 10] << 8 | d[rec + 11]);
    free(d);
    write_damaged("lie.ttf", (size_t)st.st_size, cblc + 8, 0x7FFFFF00);
    expect_refused("lie.ttf", "lie_out", "CBLC");
    /* not a font at all */
    write_damaged("tiny.ttf", 7, -1, 0);
    expect_refused("tiny.ttf", "tiny_out", "sfnt header");
}

static void test_usage(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(run("dataset emoji --help", &out), 0);
    assert_non_null(strstr(out, "--png-dir"));
    free(out);
    assert_int_equal(run("dataset emoji --font x --png-dir y -o z", &out), 2);
    free(out);
    assert_int_equal(run("dataset pictures -o z", &out), 2);
    free(out);
}

int main(void)
{
    if (access(NOTO, R_OK) != 0) {
        fprintf(stderr, "SKIPPED: %s not installed (Debian fonts-noto-color-emoji)\n", NOTO);
        return 77;
    }
    tmp = vkl_test_tmpdir();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_noto),           cmocka_unit_test(test_rerun_identical),
        cmocka_unit_test(test_existing_refused), cmocka_unit_test(test_gemojione),
        cmocka_unit_test(test_damaged_fonts),  cmocka_unit_test(test_usage),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    if (rc == 0) vkl_test_rmtree(tmp);
    return rc;
}
