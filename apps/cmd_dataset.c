/* `vklora dataset emoji`: a captioned image folder (kohya layout: NAME.png +
 * NAME.txt) of single-codepoint emoji, from the Noto Color Emoji font or the
 * gemojione PNGs that Debian ships, for training vklora's own small model.
 *
 * The output must be reproducible from the packages alone: items are ordered
 * by codepoint, PNGs carry no time or text chunks, and nothing depends on
 * directory listing order. The folder is built as OUTDIR.tmp and moved into
 * place only when complete, so a failure leaves no half-written dataset. */
#include "app.h"
#include "out_folder.h"
#include "args.h"
#include "emoji_image.h"
#include "emoji_names.h"
#include "emoji_source.h"
#include "progress.h"

#include "io/dir.h"
#include "io/font.h"
#include "io/image.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FILE_CAPTION_MAX 80 /* characters of the caption kept in a file name */

typedef struct {
    const char *font, *png_dir, *unicode_data, *cldr, *out;
    int size, force, quiet;
} args;

typedef struct {
    uint32_t cp;
    uint32_t glyph; /* font source */
    char *file;     /* PNG folder source: the file name */
} item;

static int usage(FILE *f, int status)
{
    fprintf(f,
            "usage: vklora dataset emoji [--font FILE | --png-dir DIR] [--unicode-data FILE] [--cldr FILE]\n"
            "                            [--size N] -o OUTDIR [--force]\n"
            "  Writes a captioned image folder of single-codepoint emoji: uHEX_caption.png (NxN 8-bit RGB,\n"
            "  composited over white, centre-cropped, area-averaged down) with its caption in uHEX_caption.txt,\n"
            "  plus dataset.tsv (every image) and SOURCE.md (packages, versions, licences, this command).\n"
            "  --font FILE         a CBDT colour-bitmap font (default, Debian fonts-noto-color-emoji:\n"
            "                      " VKL_EMOJI_NOTO_FONT ")\n"
            "  --png-dir DIR       a folder of PNGs named by hex codepoints, 2764.png, 1F34E.png (Debian\n"
            "                      ruby-gemojione: " VKL_EMOJI_GEMOJIONE_PNG ")\n"
            "  --unicode-data FILE character names (default " VKL_EMOJI_UNICODE_DATA ")\n"
            "  --cldr FILE         CLDR English annotations, whose short names are preferred\n"
            "                      (default " VKL_EMOJI_CLDR_EN "; --cldr none: Unicode names only)\n"
            "  --size N            output side in pixels (default 32)\n"
            "  --force             replace an existing OUTDIR\n");
    return status;
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->unicode_data = VKL_EMOJI_UNICODE_DATA;
    a->cldr = VKL_EMOJI_CLDR_EN;
    a->size = 32;
    a->quiet = vkl_log_get_level() < VKL_LOG_INFO;
    const vkl_arg opts[] = {
        {"--font", NULL, VKL_ARG_STR, VKL_AS_STR(&a->font), .help = "FILE"},
        {"--png-dir", NULL, VKL_ARG_STR, VKL_AS_STR(&a->png_dir), .help = "DIR"},
        {"--unicode-data", NULL, VKL_ARG_STR, VKL_AS_STR(&a->unicode_data), .help = "FILE"},
        {"--cldr", NULL, VKL_ARG_STR, VKL_AS_STR(&a->cldr), .help = "FILE|none"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&a->out), .help = "OUTDIR"},
        {"--size", NULL, VKL_ARG_INT, VKL_AS_INT(&a->size), 1, 4096, .help = "N"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&a->force), .help = " replace OUTDIR"},
        {"--quiet", "-q", VKL_ARG_FLAG, VKL_AS_INT(&a->quiet), .help = " no progress"},
    };
    /* argv[1] is the kind ("emoji") */
    int prc = vkl_args_parse("dataset emoji", opts, (int)(sizeof opts / sizeof *opts), argc - 1, argv + 1, NULL);
    if (prc == VKL_ARGS_HELP) return usage(stdout, 0), -1;
    if (prc) return usage(stderr, prc);
    if (a->font && a->png_dir) {
        fprintf(stderr, "vklora dataset emoji: give --font or --png-dir, not both\n");
        return 2;
    }
    if (!a->font && !a->png_dir) a->font = VKL_EMOJI_NOTO_FONT;
    if (!strcmp(a->cldr, "none")) a->cldr = NULL;
    if (!a->out) {
        fprintf(stderr, "vklora dataset emoji: -o OUTDIR is required\n");
        return usage(stderr, 2);
    }
    return 0;
}

static int cmp_item(const void *x, const void *y)
{
    const item *a = x, *b = y;
    if (a->cp != b->cp) return a->cp < b->cp ? -1 : 1;
    /* the same codepoint twice (2764.png and 2764-FE0F.png): the plain name first */
    size_t la = a->file ? strlen(a->file) : 0, lb = b->file ? strlen(b->file) : 0;
    if (la != lb) return la < lb ? -1 : 1;
    return a->file && b->file ? strcmp(a->file, b->file) : 0;
}

static int wanted(const vkl_emoji_names *names, uint32_t cp)
{
    return !vkl_emoji_skipped(cp) && vkl_emoji_caption(names, cp, NULL);
}

/* The codepoint of a file name like "2764.png" or "2764-FE0F.png"; 0 for a
 * sequence of several codepoints or a name that is not hex. */
static uint32_t file_codepoint(const char *name)
{
    size_t n = strlen(name);
    if (n < 5 || strcmp(name + n - 4, ".png")) return 0;
    uint32_t found = 0;
    for (const char *p = name; p < name + n - 4;) {
        char *end;
        if (!isxdigit((unsigned char)*p)) return 0;
        unsigned long cp = strtoul(p, &end, 16);
        if (end - p > 6 || cp > 0x10FFFF || (*end != '-' && end != name + n - 4)) return 0;
        p = *end == '-' ? end + 1 : end;
        if (cp == 0xFE0F) continue;
        if (found) return 0;
        found = (uint32_t)cp;
    }
    return found;
}

static int collect_font(const vkl_font *font, const char *path, const vkl_emoji_names *names, item **out, size_t *n,
                        vkl_err *e)
{
    vkl_font_char *chars;
    size_t nc;
    if (vkl_font_chars(font, &chars, &nc, e)) return -1;
    item *items = calloc(nc ? nc : 1, sizeof *items);
    if (!items) {
        free(chars);
        return vkl_fail(e, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < nc; i++) {
        if (!wanted(names, chars[i].codepoint)) continue;
        vkl_font_bitmap b;
        if (vkl_font_bitmap_png(font, chars[i].glyph, &b, e)) {
            free(chars);
            free(items);
            return -1;
        }
        if (b.size) items[k++] = (item){chars[i].codepoint, chars[i].glyph, NULL};
    }
    free(chars);
    if (!k) {
        free(items);
        return vkl_fail(e, "%s: no single-codepoint emoji with a colour bitmap and a name", path);
    }
    *out = items;
    *n = k;
    return 0;
}

static int collect_dir(const char *dir, const vkl_emoji_names *names, item **out, size_t *n, vkl_err *e)
{
    DIR *d = opendir(dir);
    if (!d) return vkl_fail(e, "cannot list %s: %s", dir, strerror(errno));
    item *items = NULL;
    size_t k = 0, cap = 0;
    struct dirent *x;
    int rc = 0;
    while (!rc && (x = readdir(d))) {
        uint32_t cp = file_codepoint(x->d_name);
        if (!cp || !wanted(names, cp)) continue;
        if (k == cap) {
            cap = cap ? cap * 2 : 1024;
            item *b = realloc(items, cap * sizeof *b);
            if (!b) rc = vkl_fail(e, "out of memory");
            else items = b;
        }
        if (!rc && !(items[k].file = strdup(x->d_name))) rc = vkl_fail(e, "out of memory");
        if (!rc) items[k].cp = cp, items[k].glyph = 0, k++;
    }
    closedir(d);
    if (!rc && !k) rc = vkl_fail(e, "%s: no PNG named by a single codepoint with a name (like 2764.png)", dir);
    if (rc) {
        for (size_t i = 0; i < k; i++) free(items[i].file);
        free(items);
        return -1;
    }
    qsort(items, k, sizeof *items, cmp_item);
    size_t u = 0; /* keep the first of each codepoint */
    for (size_t i = 0; i < k; i++) {
        if (u && items[u - 1].cp == items[i].cp) free(items[i].file);
        else items[u++] = items[i];
    }
    *out = items;
    *n = u;
    return 0;
}

/* "u2764_red_heart": ASCII letters and digits of the caption, spaces as
 * single underscores, everything else dropped. */
static void file_stem(uint32_t cp, const char *caption, char *out, size_t n)
{
    int k = snprintf(out, n, "u%04x", (unsigned)cp);
    size_t at = (size_t)k, kept = 0;
    int gap = 1;
    for (const char *p = caption; *p && at + 2 < n && kept < FILE_CAPTION_MAX; p++) {
        unsigned char c = (unsigned char)*p;
        if (c < 0x80 && isalnum(c)) {
            out[at++] = gap ? '_' : (char)c;
            if (gap) out[at++] = (char)c;
            gap = 0;
            kept++;
        } else if (c == ' ') {
            gap = 1;
        }
    }
    out[at] = 0;
}

static int write_bytes(const char *path, const void *data, size_t n, vkl_err *e)
{
    FILE *f = fopen(path, "wb");
    if (!f) return vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
    size_t k = fwrite(data, 1, n, f);
    if (fclose(f) != 0 || k != n) return vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* One flush of the finished folder before it is moved into place: a sync per
 * file (what vkl_png_write does for a lone image) costs seconds on a busy
 * disk for a thousand small files, and only the folder as a whole matters. */
static int sync_dir(const char *dir, vkl_err *e)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return vkl_fail(e, "cannot open %s: %s", dir, strerror(errno));
    int rc = syncfs(fd) ? vkl_fail(e, "cannot flush %s to disk: %s", dir, strerror(errno)) : 0;
    close(fd);
    return rc;
}

/* The command line as given, quoted where a shell would need it. */
static void command_line(int argc, char **argv, char *out, size_t n)
{
    size_t at = (size_t)snprintf(out, n, "vklora");
    for (int i = 0; i < argc && at + 1 < n; i++) {
        const char *s = argv[i];
        int plain = *s != 0;
        for (const char *p = s; *p; p++)
            if (!isalnum((unsigned char)*p) && !strchr("-_./=:+,@%", *p)) plain = 0;
        if (plain) {
            at += (size_t)snprintf(out + at, n - at, " %s", s);
        } else {
            at += (size_t)snprintf(out + at, n - at, " '");
            for (const char *p = s; *p && at + 5 < n; p++)
                at += (size_t)(*p == '\'' ? snprintf(out + at, n - at, "'\\''") : snprintf(out + at, n - at, "%c", *p));
            if (at + 1 < n) at += (size_t)snprintf(out + at, n - at, "'");
        }
    }
}

/* Writes every item into dir (an empty folder). */
static int write_items(const args *a, const vkl_font *font, const vkl_emoji_names *names, const item *items, size_t n,
                       const char *dir, vkl_err *e)
{
    size_t dl = strlen(dir);
    char *path = malloc(dl + 256), *label = malloc(strlen(a->font ? a->font : a->png_dir) + 64);
    char *tsv_path = malloc(dl + 32);
    if (!path || !label || !tsv_path) {
        free(path);
        free(label);
        free(tsv_path);
        return vkl_fail(e, "out of memory");
    }
    snprintf(tsv_path, dl + 32, "%s/dataset.tsv", dir);
    FILE *tsv = fopen(tsv_path, "w");
    int rc = tsv ? 0 : vkl_fail(e, "cannot write %s: %s", tsv_path, strerror(errno));
    if (tsv) fprintf(tsv, "file\tcodepoint\tcaption\tsource\tcaption_source\n");
    const char *font_base = a->font ? strrchr(a->font, '/') : NULL;
    font_base = font_base ? font_base + 1 : a->font;
    vkl_progress bar;
    vkl_progress_begin(&bar, "emoji", (int)n, a->quiet);
    for (size_t i = 0; i < n && !rc; i++) {
        const item *it = &items[i];
        uint8_t *file_bytes = NULL;
        const uint8_t *png;
        size_t png_size;
        if (font) {
            vkl_font_bitmap b;
            snprintf(label, strlen(a->font) + 64, "%s glyph %u (U+%04X)", a->font, (unsigned)it->glyph, (unsigned)it->cp);
            rc = vkl_font_bitmap_png(font, it->glyph, &b, e);
            png = b.png;
            png_size = b.size;
        } else {
            snprintf(label, strlen(a->png_dir) + 64, "%s/%s", a->png_dir, it->file);
            rc = vkl_read_file_bytes(label, VKL_IMAGE_MAX_FILE_BYTES, &file_bytes, &png_size, e);
            png = file_bytes;
        }
        vkl_image im = {0};
        if (!rc) rc = vkl_emoji_image(png, png_size, label, a->size, &im, e);
        free(file_bytes);
        if (rc) break;
        vkl_caption_source from;
        const char *caption = vkl_emoji_caption(names, it->cp, &from);
        char stem[160];
        file_stem(it->cp, caption, stem, sizeof stem);
        snprintf(path, dl + 256, "%s/%s.png", dir, stem);
        uint8_t *encoded;
        size_t encoded_size;
        rc = vkl_png_encode(&im, NULL, 0, path, &encoded, &encoded_size, e);
        vkl_image_free(&im);
        if (!rc) {
            rc = write_bytes(path, encoded, encoded_size, e);
            free(encoded);
        }
        if (!rc) {
            snprintf(path, dl + 256, "%s/%s.txt", dir, stem);
            char line[1024];
            int len = snprintf(line, sizeof line, "%s\n", caption);
            rc = write_bytes(path, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1, e);
        }
        if (!rc) {
            fprintf(tsv, "%s.png\tU+%04X\t%s\t", stem, (unsigned)it->cp, caption);
            if (font) fprintf(tsv, "%s#glyph%u", font_base, (unsigned)it->glyph);
            else fprintf(tsv, "%s", it->file);
            fprintf(tsv, "\t%s\n", from == VKL_CAPTION_CLDR ? "cldr" : "unicode");
        }
        vkl_progress_update(&bar, (int)(i + 1), NULL);
    }
    vkl_progress_end(&bar);
    if (tsv && fclose(tsv) != 0 && !rc) rc = vkl_fail(e, "cannot write %s: %s", tsv_path, strerror(errno));
    free(path);
    free(label);
    free(tsv_path);
    return rc;
}

static int run_emoji(const args *a, const char *command, vkl_err *e)
{
    if (vkl_app_out_file_check(a->out, a->force, e)) return -1;
    double t0 = vkl_progress_now();
    vkl_emoji_names names;
    if (vkl_emoji_names_load(&names, a->unicode_data, a->cldr, e)) return -1;
    vkl_font *font = NULL;
    item *items = NULL;
    size_t n = 0;
    int rc = 0;
    if (a->font) {
        rc = vkl_font_open(a->font, &font, e);
        if (!rc && !vkl_font_has_color_bitmaps(font))
            rc = vkl_fail(e, "%s: the font has no colour bitmaps (CBLC/CBDT tables)", a->font);
        if (!rc) rc = collect_font(font, a->font, &names, &items, &n, e);
    } else {
        rc = collect_dir(a->png_dir, &names, &items, &n, e);
    }
    size_t tl = strlen(a->out) + 8;
    char *tmp = malloc(tl), *src_path = malloc(tl + 16);
    if (!rc && (!tmp || !src_path)) rc = vkl_fail(e, "out of memory");
    if (!rc) {
        snprintf(tmp, tl, "%s.tmp", a->out);
        rc = vkl_dir_remove(tmp, e); /* a previous run that was killed */
        if (!rc && mkdir(tmp, 0755) != 0) rc = vkl_fail(e, "cannot create %s: %s", tmp, strerror(errno));
        if (!rc) {
            vkl_log(VKL_LOG_INFO, "%zu emoji from %s -> %s (%dx%d)", n, a->font ? a->font : a->png_dir, a->out, a->size,
                    a->size);
            rc = write_items(a, font, &names, items, n, tmp, e);
            vkl_emoji_provenance p = {font != NULL, a->font ? a->font : a->png_dir, a->unicode_data, a->cldr, command,
                                      (int)n, a->size};
            snprintf(src_path, tl + 16, "%s/SOURCE.md", tmp);
            if (!rc) rc = vkl_emoji_write_source(src_path, &p, e);
            if (!rc) rc = sync_dir(tmp, e);
            if (!rc) rc = vkl_dir_install(tmp, a->out, a->force, e);
            if (rc) {
                vkl_err ignored;
                vkl_dir_remove(tmp, &ignored);
            }
        }
    }
    if (!rc) vkl_log(VKL_LOG_INFO, "wrote %zu images to %s in %.1f s", n, a->out, vkl_progress_now() - t0);
    for (size_t i = 0; i < n; i++) free(items[i].file);
    free(items);
    free(tmp);
    free(src_path);
    vkl_font_close(font);
    vkl_emoji_names_free(&names);
    return rc;
}

int vkl_cmd_dataset(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
        return usage(argc < 2 ? stderr : stdout, argc < 2 ? 2 : 0);
    if (strcmp(argv[1], "emoji")) {
        fprintf(stderr, "vklora dataset: unknown kind '%s' (known: emoji)\n", argv[1]);
        return usage(stderr, 2);
    }
    args a;
    int st = parse(argc, argv, &a);
    if (st) return st < 0 ? 0 : st;
    char command[8192];
    command_line(argc, argv, command, sizeof command);
    vkl_err e;
    if (run_emoji(&a, command, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    return 0;
}
