/* The training dataset: scanning the shared caption sets, kohya repeat
 * folders, broken and unsupported images, caption files read as kohya reads
 * them, caption processing (trigger, keep tokens, shuffle, dropouts) and its
 * determinism, tag-frequency metadata, epoch order and iterator save/restore,
 * and the latent cache (hits, edits, another VAE, damaged entries). */
#include "vkl_test.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/image.h"
#include "io/safetensors.h"
#include "train/dataset.h"

#define WESNOTH "data/wesnoth-portraits/test16-128px"
#define EMOJI "data/noto-emoji/test16-128px"

/* ---- helpers ---- */

static void write_text(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
}

static char *read_text(const char *path)
{
    uint8_t *b;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_read_file_bytes(path, 1 << 20, &b, &n, &e), 0);
    char *s = (char *)realloc(b, n + 1);
    s[n] = 0;
    return s;
}

static void link_shared(const char *rel_src, const char *dst)
{
    assert_int_equal(symlink(vkl_test_shared_path(rel_src), dst), 0);
}

static void copy_file(const char *src, const char *dst)
{
    uint8_t *b;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_read_file_bytes(src, 1 << 26, &b, &n, &e), 0);
    write_text(dst, b, n);
    free(b);
}

/* stderr captured into a file while a call runs, to check warnings */
static int saved_stderr = -1;
static char captured_path[512];
static vkl_log_level captured_level;
static void capture_begin(const char *dir)
{
    captured_level = vkl_log_get_level();
    vkl_log_set_level(VKL_LOG_WARN);
    snprintf(captured_path, sizeof captured_path, "%s/stderr.log", dir);
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(captured_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    dup2(fd, 2);
    close(fd);
}
static char *capture_end(void)
{
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    vkl_log_set_level(captured_level);
    char *s = read_text(captured_path);
    unlink(captured_path);
    return s;
}

static vkl_dataset *open_dir(const char *dir, vkl_dataset_opts *o)
{
    vkl_dataset_opts def;
    if (!o) {
        vkl_dataset_opts_default(&def);
        o = &def;
    }
    o->images_dir = dir;
    vkl_dataset *d = NULL;
    vkl_err e = {{0}};
    vkl_log_level lvl = vkl_log_get_level();
    vkl_log_set_level(VKL_LOG_ERROR);
    int rc = vkl_dataset_open(o, &d, &e);
    vkl_log_set_level(lvl);
    if (rc) fail_msg("%s", e.msg);
    return d;
}

/* ---- scanning the shared sets ---- */

static void check_shared_set(const char *rel, const char *first_tag)
{
    VKL_REQUIRE_SHARED(rel);
    vkl_dataset *d = open_dir(vkl_test_shared_path(rel), NULL);
    assert_int_equal(d->nimages, 16);
    assert_int_equal(d->stats.files_seen, 16);
    assert_int_equal(d->stats.missing_captions, 0);
    assert_int_equal(d->samples_per_epoch, 16);
    /* 128x128 images, never upscaled: one 128x128 bucket */
    assert_int_equal(d->nbuckets, 1);
    assert_true(d->buckets[0].reso.w == 128 && d->buckets[0].reso.h == 128);
    for (int i = 0; i < d->nimages; i++) {
        const vkl_ds_image *im = &d->images[i];
        if (i) assert_true(strcmp(d->images[i - 1].rel, im->rel) < 0);
        /* the caption is the file's first line without its newline */
        char txt[1024];
        snprintf(txt, sizeof txt, "%.*s.txt", (int)(strrchr(im->path, '.') - im->path), im->path);
        char *want = read_text(txt);
        want[strcspn(want, "\r\n")] = 0;
        assert_string_equal(im->caption, want);
        assert_true(im->has_caption_file);
        assert_int_equal(strncmp(im->caption, first_tag, strlen(first_tag)), 0);
        free(want);
    }
    char *tf = vkl_dataset_tag_frequency_json(d);
    char want[256];
    snprintf(want, sizeof want, "{\"test16-128px\": {\"%s\": 16, ", first_tag);
    assert_int_equal(strncmp(tf, want, strlen(want)), 0);
    free(tf);
    char *dirs = vkl_dataset_dirs_json(d);
    assert_string_equal(dirs, "{\"test16-128px\": {\"n_repeats\": 1, \"img_count\": 16}}");
    free(dirs);
    vkl_dataset_free(d);
}

static void shared_wesnoth(void **state)
{
    (void)state;
    check_shared_set(WESNOTH, "wesnoth portrait style");
}

static void shared_emoji(void **state)
{
    (void)state;
    check_shared_set(EMOJI, "noto emoji style");
    /* and the emoji tags: every caption ends with "white background" */
    vkl_dataset *d = open_dir(vkl_test_shared_path(EMOJI), NULL);
    char *tf = vkl_dataset_tag_frequency_json(d);
    assert_non_null(strstr(tf, "\"white background\": 16"));
    assert_non_null(strstr(tf, "\"flat vector cartoon icon of banana\": 1"));
    free(tf);
    vkl_dataset_free(d);
}

/* ---- repeat folders, broken and unsupported images ---- */

static void repeats_and_broken(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(WESNOTH);
    VKL_REQUIRE_SHARED(EMOJI);
    VKL_REQUIRE_SHARED("data/image-corpus/png-misc/broken.png");
    char dir[256], p[512], q[512];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    snprintf(p, sizeof p, "%s/3_wesnoth style", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/1_other", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/0_off", dir);
    mkdir(p, 0755);
    static const char *const wes[] = {"drakes_burner", "dwarves_fighter", "elves_archer",
                                      "elves_shaman"};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 2; k++) {
            snprintf(q, sizeof q, WESNOTH "/%s.%s", wes[i], k ? "txt" : "png");
            snprintf(p, sizeof p, "%s/3_wesnoth style/%s.%s", dir, wes[i], k ? "txt" : "png");
            link_shared(q, p);
        }
    link_shared(EMOJI "/u1f349_watermelon.png", strcat(strcpy(p, dir), "/1_other/melon.png"));
    link_shared(EMOJI "/u1f349_watermelon.txt", strcat(strcpy(p, dir), "/1_other/melon.txt"));
    link_shared(EMOJI "/u1f34c_banana.png", strcat(strcpy(p, dir), "/1_other/banana.png"));
    link_shared(EMOJI "/u1f34c_banana.txt", strcat(strcpy(p, dir), "/1_other/banana.txt"));
    /* no caption file: the folder's words become the caption */
    link_shared(EMOJI "/u1f34e_red_apple.png", strcat(strcpy(p, dir), "/1_other/apple.PNG"));
    /* at the root: 1 repeat, and no folder words */
    link_shared(WESNOTH "/orcs_grunt.png", strcat(strcpy(p, dir), "/loose.png"));
    link_shared(WESNOTH "/orcs_grunt.png", strcat(strcpy(p, dir), "/.hidden.png"));
    link_shared(WESNOTH "/orcs_grunt.png", strcat(strcpy(p, dir), "/0_off/off.png"));
    write_text(strcat(strcpy(p, dir), "/fake.webp"), "RIFF\0\0\0\0WEBP", 12);
    write_text(strcat(strcpy(p, dir), "/notes.md"), "not an image", 12);
    /* broken images from the corpus (MANIFEST.tsv: expect = error) */
    copy_file(vkl_test_shared_path("data/image-corpus/png-misc/broken.png"),
              strcat(strcpy(p, dir), "/3_wesnoth style/broken.png"));
    copy_file(vkl_test_shared_path("data/image-corpus/libpng-crashers/badcrc.png"),
              strcat(strcpy(p, dir), "/1_other/badcrc.png"));

    vkl_dataset_opts o;
    vkl_dataset_opts_default(&o);
    o.images_dir = dir;
    vkl_dataset *d = NULL;
    vkl_err e = {{0}};
    capture_begin(dir);
    int rc = vkl_dataset_open(&o, &d, &e);
    char *log = capture_end();
    if (rc) fail_msg("%s", e.msg);
    /* each skipped file is named with its reason; the run went on */
    assert_non_null(strstr(log, "3_wesnoth style/broken.png"));
    assert_non_null(strstr(log, "1_other/badcrc.png"));
    assert_non_null(strstr(log, "fake.webp: the .webp format is not supported"));
    assert_non_null(strstr(log, "0_off: 0 repeats"));
    assert_null(strstr(log, "hidden"));
    free(log);

    assert_int_equal(d->nimages, 8);
    assert_int_equal(d->stats.used, 8);
    assert_int_equal(d->stats.files_seen, 12);
    assert_int_equal(d->stats.skipped_broken, 2);
    assert_int_equal(d->stats.skipped_unsupported, 1);
    assert_int_equal(d->stats.skipped_disabled, 1);
    assert_int_equal(d->stats.missing_captions, 2);
    assert_int_equal(d->samples_per_epoch, 4 * 3 + 3 * 1 + 1);
    assert_int_equal(d->batches_per_epoch, 16);
    /* depth-first, names in byte order */
    static const char *const order[] = {
        "1_other/apple.PNG", "1_other/banana.png", "1_other/melon.png",
        "3_wesnoth style/drakes_burner.png", "3_wesnoth style/dwarves_fighter.png",
        "3_wesnoth style/elves_archer.png", "3_wesnoth style/elves_shaman.png", "loose.png"};
    for (int i = 0; i < 8; i++) assert_string_equal(d->images[i].rel, order[i]);
    assert_string_equal(d->images[0].caption, "other");
    assert_false(d->images[0].has_caption_file);
    assert_string_equal(d->images[7].caption, "");
    assert_int_equal(d->subsets[d->images[3].subset].repeats, 3);
    assert_string_equal(d->subsets[d->images[3].subset].class_tokens, "wesnoth style");
    assert_int_equal(d->subsets[d->images[0].subset].repeats, 1);

    const char *root = strrchr(dir, '/') + 1;
    char want[512];
    char *dirs = vkl_dataset_dirs_json(d);
    snprintf(want, sizeof want,
             "{\"%s\": {\"n_repeats\": 1, \"img_count\": 1}, \"1_other\": {\"n_repeats\": 1, "
             "\"img_count\": 3}, \"3_wesnoth style\": {\"n_repeats\": 3, \"img_count\": 4}}",
             root);
    assert_string_equal(dirs, want);
    free(dirs);
    /* kohya counts tags per image (not per repeat), lower-cased; the folder
     * words of apple.PNG count too; the root's empty caption has no tags */
    char *tf = vkl_dataset_tag_frequency_json(d);
    snprintf(want, sizeof want, "{\"%s\": {}, \"1_other\": {\"other\": 1, \"noto emoji style\": 2, ",
             root);
    assert_int_equal(strncmp(tf, want, strlen(want)), 0);
    assert_non_null(strstr(tf, "\"3_wesnoth style\": {\"wesnoth portrait style\": 4, "));
    free(tf);

    /* the same folder with a default caption and another caption extension */
    vkl_dataset_free(d);
    o.default_caption = "a default";
    o.caption_ext = "caption";
    write_text(strcat(strcpy(p, dir), "/loose.caption"), "  from .caption  \n", 18);
    d = open_dir(dir, &o);
    assert_string_equal(d->images[0].caption, "a default");
    assert_string_equal(d->images[3].caption, "a default"); /* .txt no longer read */
    assert_string_equal(d->images[7].caption, "from .caption");
    assert_int_equal(d->stats.missing_captions, 7);
    vkl_dataset_free(d);

    /* a folder with nothing usable is an error that gives the counts */
    snprintf(p, sizeof p, "%s/nothing", dir);
    mkdir(p, 0755);
    copy_file(vkl_test_shared_path("data/image-corpus/png-misc/broken.png"),
              strcat(strcpy(q, p), "/broken.png"));
    o.images_dir = p;
    vkl_log_set_level(VKL_LOG_ERROR);
    assert_int_equal(vkl_dataset_open(&o, &d, &e), -1);
    vkl_log_set_level(VKL_LOG_INFO);
    assert_non_null(strstr(e.msg, "no usable images"));
    assert_non_null(strstr(e.msg, "1 image files: 1 broken"));
    o.images_dir = "/nonexistent/images";
    assert_int_equal(vkl_dataset_open(&o, &d, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/images"));
    vkl_test_rmtree(dir);
}

/* ---- caption files ---- */

static void caption_files(void **state)
{
    (void)state;
    char dir[256], p[512];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    snprintf(p, sizeof p, "%s/c.txt", dir);
    static const struct { const char *bytes; size_t n; const char *want; int empty; } cases[] = {
        {"one, two\n", 9, "one, two", 0},
        {"\xEF\xBB\xBF" "bom first\r\n", 14, "bom first", 0},
        {"  first line \r\nsecond line\n", 28, "first line", 0},
        {"old mac\rsecond", 14, "old mac", 0},
        {"\nblank first line\n", 18, "", 0},
        /* Python strips Unicode whitespace too: U+3000 and U+00A0 */
        {"\xE3\x80\x80wide space\xC2\xA0", 15, "wide space", 0},
        {"no newline at all", 17, "no newline at all", 0},
        {"", 0, "", 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        write_text(p, cases[k].bytes, cases[k].n);
        char *cap;
        int empty;
        vkl_err e = {{0}};
        assert_int_equal(vkl_caption_read_file(p, &cap, &empty, &e), 0);
        assert_string_equal(cap, cases[k].want);
        assert_int_equal(empty, cases[k].empty);
        free(cap);
    }
    write_text(p, "caf\xE9\n", 5); /* Latin-1, not UTF-8 */
    char *cap;
    int empty;
    vkl_err e = {{0}};
    assert_int_equal(vkl_caption_read_file(p, &cap, &empty, &e), -1);
    assert_non_null(strstr(e.msg, "c.txt"));
    assert_non_null(strstr(e.msg, "UTF-8"));
    vkl_test_rmtree(dir);
}

/* ---- caption processing ---- */

static char *proc(const vkl_caption_opts *o, const char *cap, uint32_t epoch, uint32_t slot)
{
    char *out;
    vkl_err e = {{0}};
    if (vkl_caption_process(o, cap, 42, epoch, slot, &out, &e)) fail_msg("%s", e.msg);
    return out;
}

static void caption_processing(void **state)
{
    (void)state;
    vkl_caption_opts o = {0};
    char *s;
    /* nothing asked: the caption as is (spacing untouched) */
    s = proc(&o, "a,b ,  c", 0, 0);
    assert_string_equal(s, "a,b ,  c");
    free(s);
    /* trigger prepended as the first tag, unless already a word of the caption */
    o.trigger = "mystyle";
    s = proc(&o, "a cat, sitting", 0, 0);
    assert_string_equal(s, "mystyle, a cat, sitting");
    free(s);
    s = proc(&o, "a cat in mystyle style", 0, 0);
    assert_string_equal(s, "a cat in mystyle style");
    free(s);
    s = proc(&o, "a cat in mystyles", 0, 0);
    assert_string_equal(s, "mystyle, a cat in mystyles");
    free(s);
    s = proc(&o, "", 0, 0);
    assert_string_equal(s, "mystyle");
    free(s);

    /* shuffle keeps the trigger and the first keep_tokens tags in place,
     * strips each tag and joins with ", " (kohya keeps empty tags) */
    o.shuffle = 1;
    o.keep_tokens = 1;
    const char *cap = " first,b , c,d,e,f,g,h ";
    int moved = 0, same_as_before = 0;
    char *prev = NULL;
    for (uint32_t slot = 0; slot < 50; slot++) {
        s = proc(&o, cap, 3, slot);
        assert_int_equal(strncmp(s, "mystyle, first, ", 16), 0);
        /* a permutation of b..h */
        char sorted[8] = {0};
        const char *t = s + 16;
        for (int k = 0; k < 7; k++, t += 3) sorted[t[0] - 'b'] = 1;
        for (int k = 0; k < 7; k++) assert_true(sorted[k]);
        assert_int_equal(strlen(s), 16 + 7 * 3 - 2);
        moved += strcmp(s, "mystyle, first, b, c, d, e, f, g, h") != 0;
        /* (seed, epoch, slot) fixes the result */
        char *again = proc(&o, cap, 3, slot);
        assert_string_equal(s, again);
        free(again);
        if (prev) same_as_before += strcmp(prev, s) == 0;
        free(prev);
        prev = s;
    }
    free(prev);
    assert_true(moved >= 48);         /* 7! orders: an unshuffled result is rare */
    assert_true(same_as_before <= 2); /* slots differ */
    /* another epoch changes it */
    char *a = proc(&o, cap, 3, 7), *b = proc(&o, cap, 4, 7);
    assert_string_not_equal(a, b);
    free(a);
    free(b);
    o.trigger = NULL;
    o.keep_tokens = 3;
    s = proc(&o, "a,,b", 0, 0);
    assert_string_equal(s, "a, , b");
    free(s);

    /* tag dropout 1: only the kept tags remain; 0.5: about half the others */
    o.shuffle = 0;
    o.keep_tokens = 2;
    o.tag_dropout_rate = 1;
    s = proc(&o, "k1, k2, x, y, z", 0, 0);
    assert_string_equal(s, "k1, k2");
    free(s);
    o.tag_dropout_rate = 0.5;
    int kept = 0;
    for (uint32_t slot = 0; slot < 1000; slot++) {
        s = proc(&o, "k1, k2, x, y, z, w", 1, slot);
        assert_int_equal(strncmp(s, "k1, k2", 6), 0);
        for (const char *t = s; (t = strchr(t, ',')); t++) kept++;
        kept--; /* the comma after k1 */
        free(s);
    }
    assert_true(kept > 1800 && kept < 2200); /* 4000 free tags, p = 0.5, sd ~32 */

    /* caption dropout: the whole caption (trigger included) becomes "" */
    o.tag_dropout_rate = 0;
    o.trigger = "mystyle";
    o.dropout_rate = 1;
    s = proc(&o, "a, b", 0, 0);
    assert_string_equal(s, "");
    free(s);
    o.dropout_rate = 0.3;
    int dropped = 0;
    for (uint32_t slot = 0; slot < 2000; slot++) {
        s = proc(&o, "a, b", 9, slot);
        dropped += s[0] == 0;
        free(s);
    }
    assert_true(dropped > 520 && dropped < 680); /* 600 expected, sd ~20 */

    o.keep_tokens = -1;
    vkl_err e = {{0}};
    assert_int_equal(vkl_caption_process(&o, "a", 1, 0, 0, &s, &e), -1);
    assert_non_null(strstr(e.msg, "keep tokens"));
}

/* ---- epoch order and resumption ---- */

typedef struct {
    int image[64];
    int n;
    int bucket;
    uint32_t epoch;
    int flip[64];
} batch_rec;

static void next_batch(vkl_ds_iter *it, batch_rec *r)
{
    const vkl_ds_sample *s;
    vkl_err e = {{0}};
    assert_int_equal(vkl_ds_iter_next(it, &s, &r->n, &r->bucket, &r->epoch, &e), 0);
    for (int i = 0; i < r->n; i++) {
        r->image[i] = s[i].image;
        r->flip[i] = s[i].flip;
    }
}

static void write_png(const char *path, int w, int h, int seed)
{
    vkl_image im;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_alloc(&im, w, h, 3, VKL_PIX_U8, &e), 0);
    uint8_t *p = vkl_image_u8(&im);
    for (int i = 0; i < w * h * 3; i++) p[i] = (uint8_t)(i * 13 + seed * 101);
    assert_int_equal(vkl_png_write(path, &im, NULL, 0, &e), 0);
    vkl_image_free(&im);
}

/* ss_bucket_info: kohya's index (the used buckets sorted by (w, h)), counts
 * with repeats, and the mean |bucket ratio - image ratio| over images. */
static void bucket_info_json(void **state)
{
    (void)state;
    char dir[256], p[512];
    snprintf(dir, sizeof dir, "%s/bi", vkl_test_tmpdir());
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/3_x", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/a.png", dir);
    write_png(p, 200, 130, 1); /* never upscaled: 200x130 -> bucket 192x128 */
    snprintf(p, sizeof p, "%s/b.png", dir);
    write_png(p, 128, 128, 2);
    snprintf(p, sizeof p, "%s/3_x/c.png", dir);
    write_png(p, 128, 128, 3);
    vkl_dataset_opts o;
    vkl_dataset_opts_default(&o);
    vkl_dataset *d = open_dir(dir, &o);
    char *bi = vkl_dataset_bucket_info_json(d);
    const char *head = "{\"buckets\": {\"0\": {\"resolution\": [128, 128], \"count\": 4}, "
                       "\"1\": {\"resolution\": [192, 128], \"count\": 1}}, \"mean_img_ar_error\": ";
    assert_int_equal(strncmp(bi, head, strlen(head)), 0);
    char *end;
    double mean = strtod(bi + strlen(head), &end);
    assert_string_equal(end, "}");
    assert_true(mean == fabs(192.0 / 128.0 - 200.0 / 130.0) / 3);
    free(bi);
    vkl_dataset_free(d);
    o.bucket = 0; /* one square size: kohya writes no bucket info */
    d = open_dir(dir, &o);
    bi = vkl_dataset_bucket_info_json(d);
    assert_string_equal(bi, "null");
    free(bi);
    vkl_dataset_free(d);
}

static void epoch_order(void **state)
{
    (void)state;
    char dir[256], p[512];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    snprintf(p, sizeof p, "%s/2_x", dir);
    mkdir(p, 0755);
    /* 5 square and 3 wide images; 2 repeats for those in 2_x */
    for (int i = 0; i < 8; i++) {
        snprintf(p, sizeof p, "%s/%s%d.png", dir, i % 2 ? "2_x/" : "", i);
        write_png(p, i < 5 ? 128 : 256, 128, i);
    }
    vkl_dataset_opts o;
    vkl_dataset_opts_default(&o);
    o.batch_size = 3;
    o.seed = 1234;
    o.flip = 1;
    vkl_dataset *d = open_dir(dir, &o);
    int reps[8];
    for (int i = 0; i < 8; i++) reps[i] = d->subsets[d->images[i].subset].repeats;
    assert_int_equal(d->nbuckets, 2);
    assert_int_equal(d->samples_per_epoch, 12);
    /* squares: 0,2,4 (x1) + 1,3 (x2) = 7 -> 3 batches; wide: 6 (x1) + 5,7 (x2) = 5 -> 2 */
    assert_int_equal(d->batches_per_epoch, 5);

    vkl_ds_iter it, it2;
    vkl_err e = {{0}};
    assert_int_equal(vkl_ds_iter_init(&it, d, &e), 0);
    batch_rec run[15];
    int flips = 0;
    for (int k = 0; k < 15; k++) {
        next_batch(&it, &run[k]);
        assert_int_equal(run[k].epoch, (uint32_t)(k / 5));
        for (int i = 0; i < run[k].n; i++) {
            /* one bucket per batch */
            assert_int_equal(d->images[run[k].image[i]].bucket, run[k].bucket);
            flips += run[k].flip[i];
        }
    }
    assert_true(flips > 8 && flips < 28); /* 36 samples, p = 0.5 */
    for (int ep = 0; ep < 3; ep++) {
        int seen[8] = {0}, total = 0, short_batches = 0;
        for (int k = ep * 5; k < ep * 5 + 5; k++) {
            for (int i = 0; i < run[k].n; i++) seen[run[k].image[i]]++;
            total += run[k].n;
            short_batches += run[k].n < 3;
        }
        assert_int_equal(total, 12);
        assert_int_equal(short_batches, 2); /* 7 = 3+3+1 and 5 = 3+2 */
        for (int i = 0; i < 8; i++) assert_int_equal(seen[i], reps[i]);
    }
    /* epochs are ordered differently */
    int differ = 0;
    for (int k = 0; k < 5; k++)
        differ += run[k].n != run[k + 5].n || memcmp(run[k].image, run[k + 5].image, sizeof(int) * 3);
    assert_true(differ > 0);

    /* the same seed replays the same sequence from a fresh iterator */
    assert_int_equal(vkl_ds_iter_init(&it2, d, &e), 0);
    for (int k = 0; k < 15; k++) {
        batch_rec r;
        next_batch(&it2, &r);
        assert_int_equal(r.n, run[k].n);
        assert_memory_equal(r.image, run[k].image, sizeof(int) * (size_t)r.n);
        assert_memory_equal(r.flip, run[k].flip, sizeof(int) * (size_t)r.n);
    }
    vkl_ds_iter_free(&it2);

    /* save after 7 batches (mid-epoch 1), restore into a new iterator, same tail */
    vkl_ds_iter_free(&it);
    assert_int_equal(vkl_ds_iter_init(&it, d, &e), 0);
    batch_rec r;
    for (int k = 0; k < 7; k++) next_batch(&it, &r);
    char *saved = vkl_ds_iter_save(&it);
    assert_non_null(strstr(saved, "\"epoch\": 1, \"batch\": 2"));
    assert_int_equal(vkl_ds_iter_init(&it2, d, &e), 0);
    assert_int_equal(vkl_ds_iter_restore(&it2, saved, &e), 0);
    for (int k = 7; k < 15; k++) {
        next_batch(&it2, &r);
        assert_int_equal(r.epoch, run[k].epoch);
        assert_int_equal(r.n, run[k].n);
        assert_memory_equal(r.image, run[k].image, sizeof(int) * (size_t)r.n);
        assert_memory_equal(r.flip, run[k].flip, sizeof(int) * (size_t)r.n);
    }
    vkl_ds_iter_free(&it2);
    vkl_ds_iter_free(&it);
    vkl_dataset_free(d);

    /* another seed: refused; another dataset: refused; junk: refused */
    o.seed = 99;
    d = open_dir(dir, &o);
    assert_int_equal(vkl_ds_iter_init(&it, d, &e), 0);
    assert_int_equal(vkl_ds_iter_restore(&it, saved, &e), -1);
    assert_non_null(strstr(e.msg, "seed 1234"));
    vkl_ds_iter_free(&it);
    vkl_dataset_free(d);
    o.seed = 1234;
    o.batch_size = 2;
    d = open_dir(dir, &o);
    assert_int_equal(vkl_ds_iter_init(&it, d, &e), 0);
    assert_int_equal(vkl_ds_iter_restore(&it, saved, &e), -1);
    assert_non_null(strstr(e.msg, "another dataset"));
    assert_int_equal(vkl_ds_iter_restore(&it, "{\"format\": 3", &e), -1);
    assert_int_equal(vkl_ds_iter_restore(&it, "{\"format\": \"vklora-data-iter\", \"version\": 1, "
                                              "\"seed\": \"1234\", \"epoch\": -1, \"batch\": 0, "
                                              "\"dataset\": \"x\"}", &e), -1);
    vkl_ds_iter_free(&it);
    vkl_dataset_free(d);
    free(saved);
    vkl_test_rmtree(dir);
}

/* ---- latent cache ---- */

typedef struct {
    int calls;
} fake_vae;

/* 8x8 mean pooling of the three channels plus their mean: a stand-in encoder
 * whose output is a known function of the pixels */
static int fake_encode(void *user, const float *chw, int w, int h, float *out, vkl_err *e)
{
    (void)e;
    ((fake_vae *)user)->calls++;
    int lw = w / 8, lh = h / 8;
    for (int c = 0; c < 4; c++)
        for (int y = 0; y < lh; y++)
            for (int x = 0; x < lw; x++) {
                double s = 0;
                for (int cc = 0; cc < 3; cc++)
                    if (c == 3 || cc == c)
                        for (int dy = 0; dy < 8; dy++)
                            for (int dx = 0; dx < 8; dx++)
                                s += chw[(size_t)cc * w * h + (size_t)(y * 8 + dy) * w + x * 8 + dx];
                out[(size_t)c * lw * lh + (size_t)y * lw + x] = (float)(s / (c == 3 ? 192 : 64));
            }
    return 0;
}

static void latent_cache(void **state)
{
    (void)state;
    char dir[256], p[512];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/img%d.png", dir, i);
        write_png(p, 128 + 64 * i, 128, i);
    }
    vkl_dataset *d = open_dir(dir, NULL);
    assert_int_equal(d->nimages, 3);
    fake_vae vae = {0};
    vkl_latent_cache_opts lo = {fake_encode, &vae, "vae-A", 4, 8, 1, 1};
    vkl_latent_cache *c;
    vkl_err e = {{0}};
    float lat[4 * 16 * 32], ref[4 * 16 * 32];
    /* first run: everything encoded and written beside the images */
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
    for (int i = 0; i < 3; i++)
        for (int f = 0; f < 2; f++) assert_int_equal(vkl_latent_cache_get(c, i, f, lat, &e), 0);
    assert_int_equal(vae.calls, 6);
    assert_int_equal(vkl_latent_cache_get(c, 1, 1, lat, &e), 0); /* memory hit */
    assert_int_equal(vae.calls, 6);
    vkl_latent_cache_stats st = vkl_latent_cache_get_stats(c);
    assert_int_equal(st.encodes, 6);
    assert_int_equal(st.memory_hits, 1);
    vkl_latent_cache_free(c);
    /* the cache holds what the encoder gives for the preprocessed image */
    {
        float *chw;
        int w, h;
        assert_int_equal(vkl_dataset_load_image(d, 1, 1, &chw, &w, &h, &e), 0);
        assert_true(w == 192 && h == 128);
        fake_vae v2 = {0};
        fake_encode(&v2, chw, w, h, ref, &e);
        free(chw);
        assert_memory_equal(lat, ref, sizeof(float) * 4 * 16 * 24);
    }
    char *cp = vkl_latent_cache_path(d->images[1].path);
    snprintf(p, sizeof p, "%s/img1.vklora-latents.safetensors", dir);
    assert_string_equal(cp, p);
    vkl_st_file *sf;
    assert_int_equal(vkl_st_open(cp, &sf, &e), 0);
    assert_non_null(vkl_st_find(sf, "latents"));
    assert_non_null(vkl_st_find(sf, "latents_flipped"));
    assert_int_equal(vkl_st_find(sf, "latents")->shape[2], 24);
    vkl_st_close(sf);

    /* second run, same VAE: all from disk, no encode */
    vae.calls = 0;
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
    for (int i = 0; i < 3; i++)
        for (int f = 0; f < 2; f++) assert_int_equal(vkl_latent_cache_get(c, i, f, lat, &e), 0);
    assert_int_equal(vae.calls, 0);
    assert_int_equal(vkl_latent_cache_get_stats(c).disk_hits, 6);
    assert_int_equal(vkl_latent_cache_get(c, 1, 1, lat, &e), 0);
    assert_memory_equal(lat, ref, sizeof(float) * 4 * 16 * 24);
    vkl_latent_cache_free(c);

    /* edit img0 (same size, other pixels): only its two entries are recomputed */
    snprintf(p, sizeof p, "%s/img0.png", dir);
    write_png(p, 128, 128, 77);
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
    for (int i = 0; i < 3; i++)
        for (int f = 0; f < 2; f++) assert_int_equal(vkl_latent_cache_get(c, i, f, lat, &e), 0);
    assert_int_equal(vae.calls, 2);
    st = vkl_latent_cache_get_stats(c);
    assert_int_equal(st.stale, 2);
    assert_int_equal(st.disk_hits, 4);
    vkl_latent_cache_free(c);

    /* another VAE: everything recomputed */
    vae.calls = 0;
    lo.vae_id = "vae-B";
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
    for (int i = 0; i < 3; i++)
        for (int f = 0; f < 2; f++) assert_int_equal(vkl_latent_cache_get(c, i, f, lat, &e), 0);
    assert_int_equal(vae.calls, 6);
    assert_int_equal(vkl_latent_cache_get_stats(c).stale, 6);
    vkl_latent_cache_free(c);

    /* a damaged entry: warned about, recomputed, rewritten whole */
    uint8_t *bytes;
    size_t n;
    assert_int_equal(vkl_read_file_bytes(cp, 1 << 24, &bytes, &n, &e), 0);
    write_text(cp, bytes, n / 2);
    free(bytes);
    vae.calls = 0;
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
    capture_begin(dir);
    int rc = vkl_latent_cache_get(c, 1, 0, lat, &e);
    char *log = capture_end();
    assert_int_equal(rc, 0);
    assert_non_null(strstr(log, "img1.vklora-latents.safetensors"));
    assert_non_null(strstr(log, "recomputing"));
    free(log);
    assert_int_equal(vae.calls, 1);
    assert_int_equal(vkl_latent_cache_get_stats(c).corrupt, 1);
    vkl_latent_cache_free(c);
    assert_int_equal(vkl_st_open(cp, &sf, &e), 0);
    vkl_st_close(sf);

    /* a well-formed file whose tensor holds NaN under a matching key: not trusted */
    {
        assert_int_equal(vkl_st_open(cp, &sf, &e), 0);
        char key[80];
        snprintf(key, sizeof key, "%s", vkl_st_meta_get(sf, "key"));
        vkl_st_close(sf);
        float bad[4 * 16 * 24];
        for (int i = 0; i < 4 * 16 * 24; i++) bad[i] = NAN;
        vkl_st_writer *w = vkl_st_writer_new();
        const int64_t shape[3] = {4, 16, 24};
        assert_int_equal(vkl_st_writer_add(w, "latents", VKL_F32, 3, shape, bad, &e), 0);
        assert_int_equal(vkl_st_writer_meta(w, "key", key, &e), 0);
        assert_int_equal(vkl_st_writer_finish(w, cp, &e), 0);
        vkl_st_writer_free(w);
        vae.calls = 0;
        assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
        vkl_log_set_level(VKL_LOG_ERROR);
        assert_int_equal(vkl_latent_cache_get(c, 1, 0, lat, &e), 0);
        vkl_log_set_level(VKL_LOG_INFO);
        assert_int_equal(vae.calls, 1);
        assert_int_equal(vkl_latent_cache_get_stats(c).corrupt, 1);
        for (int i = 0; i < 4 * 16 * 24; i++) assert_true(isfinite(lat[i]));
        vkl_latent_cache_free(c);
    }
    free(cp);

    /* memory only: nothing written */
    vkl_dataset_free(d);
    char dir2[256];
    snprintf(dir2, sizeof dir2, "%s", vkl_test_tmpdir());
    snprintf(p, sizeof p, "%s/solo.png", dir2);
    write_png(p, 64, 64, 5);
    d = open_dir(dir2, NULL);
    lo.on_disk = 0;
    vae.calls = 0;
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), 0);
    assert_int_equal(vkl_latent_cache_get(c, 0, 0, lat, &e), 0);
    assert_int_equal(vkl_latent_cache_get(c, 0, 0, lat, &e), 0);
    assert_int_equal(vae.calls, 1);
    vkl_latent_cache_free(c);
    snprintf(p, sizeof p, "%s/solo.vklora-latents.safetensors", dir2);
    struct stat sst;
    assert_int_equal(stat(p, &sst), -1);
    lo.vae_id = "";
    assert_int_equal(vkl_latent_cache_new(&lo, d, &c, &e), -1);
    assert_non_null(strstr(e.msg, "vae_id"));
    vkl_dataset_free(d);
    vkl_test_rmtree(dir2);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(shared_wesnoth),     cmocka_unit_test(shared_emoji),
        cmocka_unit_test(repeats_and_broken), cmocka_unit_test(caption_files),
        cmocka_unit_test(caption_processing), cmocka_unit_test(bucket_info_json), cmocka_unit_test(epoch_order),
        cmocka_unit_test(latent_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
