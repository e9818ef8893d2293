/* Building a dataset from an image folder: the recursive walk, kohya's
 * "<repeats>_<words>" folders, caption files, header validation, bucket
 * assignment and the summary counts. */
#include "train/dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/image.h"
#include "io/sha256.h"

void vkl_dataset_opts_default(vkl_dataset_opts *o)
{
    memset(o, 0, sizeof *o);
    o->resolution = 512;
    o->bucket = 1;
    o->bucket_no_upscale = 1;
    o->min_bucket = 256;
    o->max_bucket = 1024;
    o->bucket_step = 64;
    o->batch_size = 1;
}

typedef struct walk {
    vkl_dataset *d;
    const char *root;
    char ext[64]; /* caption extension with its dot */
    dev_t anc_dev[VKL_DATASET_MAX_DEPTH + 1];
    ino_t anc_ino[VKL_DATASET_MAX_DEPTH + 1];
    int capimg;
    int capsub;
} walk;

static char *xstrdup(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *r = (char *)malloc(n);
    if (r) memcpy(r, s, n);
    return r;
}

static char *join(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    char *r = (char *)malloc(na + nb + 2);
    if (!r) return NULL;
    memcpy(r, a, na);
    size_t k = na;
    if (k && r[k - 1] != '/') r[k++] = '/';
    memcpy(r + k, b, nb + 1);
    return r;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* kohya extract_dreambooth_params: int(name.split("_")[0]), words after it.
 * Returns the repeats, or -1 when the name has no numeric prefix. */
static long parse_repeats(const char *name, const char **words)
{
    const char *p = name;
    long n = 0;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > 1000000000L) n = 1000000000L;
    }
    if (*p != '_' && *p) return -1;
    *words = *p ? p + 1 : p;
    return n;
}

static const char *ext_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && dot != name ? dot + 1 : NULL;
}

static int ext_is(const char *ext, const char *const *list)
{
    for (; *list; list++)
        if (strcasecmp(ext, *list) == 0) return 1;
    return 0;
}

static const char *const SUPPORTED[] = {"png", "jpg", "jpeg", "bmp", "gif", "tga", NULL};
static const char *const UNSUPPORTED[] = {"webp", "avif", "jxl", "heic", "heif", "tif", "tiff", NULL};

static int add_subset(walk *w, const char *dir, long repeats, const char *words, vkl_err *e)
{
    vkl_dataset *d = w->d;
    if (d->nsubsets == w->capsub) {
        int c = w->capsub ? 2 * w->capsub : 8;
        vkl_ds_subset *n = (vkl_ds_subset *)realloc(d->subsets, sizeof *n * (size_t)c);
        if (!n) return vkl_fail(e, "out of memory listing folders");
        d->subsets = n;
        w->capsub = c;
    }
    vkl_ds_subset *s = &d->subsets[d->nsubsets];
    memset(s, 0, sizeof *s);
    const char *base = strrchr(dir, '/');
    base = base && base[1] ? base + 1 : dir;
    s->dir = xstrdup(dir);
    s->name = xstrdup(base);
    s->class_tokens = xstrdup(words);
    s->repeats = (int)repeats;
    /* a trailing slash in --images leaves "" as the base name */
    if (s->name && !s->name[0]) {
        free(s->name);
        s->name = xstrdup(dir);
    }
    if (!s->dir || !s->name || !s->class_tokens) return vkl_fail(e, "out of memory listing folders");
    d->nsubsets++;
    return 0;
}

static int add_image(walk *w, const char *path, const char *rel, int subset, vkl_err *e)
{
    vkl_dataset *d = w->d;
    vkl_err why = {{0}};
    vkl_image_info info;
    if (vkl_image_info_file(path, &info, &why)) {
        vkl_log(VKL_LOG_WARN, "skipping image %s: %s", path, why.msg);
        d->stats.skipped_broken++;
        return 0;
    }
    /* caption file: <path without extension> + caption extension */
    const char *dot = strrchr(path, '.');
    size_t stem = (size_t)(dot - path);
    char *cpath = (char *)malloc(stem + strlen(w->ext) + 1);
    if (!cpath) return vkl_fail(e, "out of memory");
    memcpy(cpath, path, stem);
    strcpy(cpath + stem, w->ext);
    char *caption = NULL;
    int has_file = 0;
    struct stat st;
    if (stat(cpath, &st) == 0 && S_ISREG(st.st_mode)) {
        int empty;
        if (vkl_caption_read_file(cpath, &caption, &empty, e)) {
            free(cpath);
            return -1;
        }
        if (empty) {
            vkl_log(VKL_LOG_WARN, "caption file %s is empty; using the default caption", cpath);
            free(caption);
            caption = NULL;
        } else {
            has_file = 1;
        }
    }
    free(cpath);
    if (!caption) {
        const char *def = d->opts.default_caption ? d->opts.default_caption
                                                  : d->subsets[subset].class_tokens;
        caption = xstrdup(def);
        if (!caption) return vkl_fail(e, "out of memory");
        d->stats.missing_captions++;
    }
    if (d->nimages == w->capimg) {
        int c = w->capimg ? 2 * w->capimg : 64;
        vkl_ds_image *n = (vkl_ds_image *)realloc(d->images, sizeof *n * (size_t)c);
        if (!n) {
            free(caption);
            return vkl_fail(e, "out of memory listing images");
        }
        d->images = n;
        w->capimg = c;
    }
    vkl_ds_image *im = &d->images[d->nimages];
    memset(im, 0, sizeof *im);
    im->path = xstrdup(path);
    im->rel = xstrdup(rel);
    im->caption = caption;
    im->has_caption_file = has_file;
    im->subset = subset;
    im->width = info.width;
    im->height = info.height;
    d->nimages++;
    if (!im->path || !im->rel) return vkl_fail(e, "out of memory listing images");
    return 0;
}

/* Depth-first walk, entries of each folder in byte order. subset < 0: a
 * disabled ("0_") folder whose images are only counted. */
static int walk_dir(walk *w, const char *dir, const char *rel, int depth, int subset, vkl_err *e)
{
    DIR *dh = opendir(dir);
    if (!dh) return vkl_fail(e, "cannot read folder %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(dh));) {
        if (de->d_name[0] == '.') continue; /* hidden, and . and .. */
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **t = (char **)realloc(names, sizeof *t * cap);
            if (!t) {
                rc = vkl_fail(e, "out of memory reading folder %s", dir);
                break;
            }
            names = t;
        }
        if (!(names[n] = xstrdup(de->d_name))) {
            rc = vkl_fail(e, "out of memory reading folder %s", dir);
            break;
        }
        n++;
    }
    closedir(dh);
    if (rc == 0) qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char *path = join(dir, names[i]);
        char *r = rel[0] ? join(rel, names[i]) : xstrdup(names[i]);
        struct stat st;
        if (!path || !r) {
            rc = vkl_fail(e, "out of memory walking %s", dir);
        } else if (stat(path, &st) != 0) {
            vkl_log(VKL_LOG_WARN, "skipping %s: %s", path, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            int loop = 0;
            for (int k = 0; k <= depth; k++)
                loop |= w->anc_dev[k] == st.st_dev && w->anc_ino[k] == st.st_ino;
            if (loop) {
                vkl_log(VKL_LOG_WARN, "skipping folder %s: it links back to a folder above it",
                        path);
            } else if (depth + 1 > VKL_DATASET_MAX_DEPTH) {
                vkl_log(VKL_LOG_WARN, "skipping folder %s: deeper than %d levels", path,
                        VKL_DATASET_MAX_DEPTH);
            } else {
                w->anc_dev[depth + 1] = st.st_dev;
                w->anc_ino[depth + 1] = st.st_ino;
                const char *words = "";
                long rep = parse_repeats(names[i], &words);
                int sub = subset;
                if (rep == 0) {
                    vkl_log(VKL_LOG_WARN, "skipping folder %s: 0 repeats", path);
                    sub = -1;
                } else if (rep > VKL_DATASET_MAX_REPEATS) {
                    rc = vkl_fail(e, "folder %s asks for %ld repeats, over the limit of %d", path,
                                  rep, VKL_DATASET_MAX_REPEATS);
                } else if (rep > 0 && subset >= 0) {
                    rc = add_subset(w, path, rep, words, e);
                    sub = w->d->nsubsets - 1;
                }
                if (rc == 0) rc = walk_dir(w, path, r, depth + 1, sub, e);
            }
        } else if (S_ISREG(st.st_mode)) {
            const char *ext = ext_of(names[i]);
            if (ext && ext_is(ext, SUPPORTED)) {
                w->d->stats.files_seen++;
                if (subset < 0) w->d->stats.skipped_disabled++;
                else rc = add_image(w, path, r, subset, e);
            } else if (ext && ext_is(ext, UNSUPPORTED)) {
                w->d->stats.files_seen++;
                w->d->stats.skipped_unsupported++;
                vkl_log(VKL_LOG_WARN, "skipping image %s: the .%s format is not supported "
                                      "(convert it to PNG or JPEG)", path, ext);
            }
        }
        free(path);
        free(r);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return rc;
}

static int bucket_cmp(const void *a, const void *b)
{
    const vkl_ds_bucket *x = (const vkl_ds_bucket *)a, *y = (const vkl_ds_bucket *)b;
    if (x->reso.w != y->reso.w) return x->reso.w < y->reso.w ? -1 : 1;
    return (x->reso.h > y->reso.h) - (x->reso.h < y->reso.h);
}

static int assign_buckets(vkl_dataset *d, vkl_err *e)
{
    const vkl_dataset_opts *o = &d->opts;
    vkl_reso *predef = NULL, square = {o->resolution, o->resolution};
    int npredef = 0, no_upscale = o->bucket && o->bucket_no_upscale;
    if (o->bucket && !no_upscale) {
        if (vkl_bucket_resolutions(o->resolution, o->resolution, o->min_bucket, o->max_bucket,
                                   o->bucket_step, &predef, &npredef, e))
            return -1;
    } else if (!o->bucket) {
        predef = &square;
        npredef = 1;
    }
    long max_area = (long)o->resolution * o->resolution;
    int step = o->bucket ? o->bucket_step : 1;
    vkl_reso *chosen = (vkl_reso *)malloc(sizeof *chosen * (size_t)(d->nimages ? d->nimages : 1));
    if (!chosen) {
        if (predef != &square) free(predef);
        return vkl_fail(e, "out of memory assigning buckets");
    }
    int kept = 0;
    double ar_sum = 0;
    for (int i = 0; i < d->nimages; i++) {
        vkl_ds_image *im = &d->images[i];
        vkl_err why = {{0}};
        double ar_err = 0;
        if (vkl_bucket_select(no_upscale, predef, npredef, max_area, step, im->width, im->height,
                              &chosen[kept], &im->resized, &ar_err, &why)) {
            vkl_log(VKL_LOG_WARN, "skipping image %s: %s", im->path, why.msg);
            d->stats.skipped_small++;
            free(im->path);
            free(im->rel);
            free(im->caption);
            if (!im->has_caption_file) d->stats.missing_captions--;
            continue;
        }
        ar_sum += ar_err < 0 ? -ar_err : ar_err;
        d->images[kept++] = *im;
    }
    d->nimages = kept;
    if (predef != &square) free(predef);
    d->mean_ar_error = kept ? ar_sum / kept : 0;

    d->buckets = (vkl_ds_bucket *)calloc((size_t)(kept ? kept : 1), sizeof *d->buckets);
    if (!d->buckets) {
        free(chosen);
        return vkl_fail(e, "out of memory assigning buckets");
    }
    for (int i = 0; i < kept; i++) {
        int b = 0;
        while (b < d->nbuckets && (d->buckets[b].reso.w != chosen[i].w || d->buckets[b].reso.h != chosen[i].h))
            b++;
        if (b == d->nbuckets) d->buckets[d->nbuckets++].reso = chosen[i];
    }
    qsort(d->buckets, (size_t)d->nbuckets, sizeof *d->buckets, bucket_cmp);
    for (int i = 0; i < kept; i++) {
        vkl_ds_image *im = &d->images[i];
        int b = 0;
        while (d->buckets[b].reso.w != chosen[i].w || d->buckets[b].reso.h != chosen[i].h) b++;
        im->bucket = b;
        d->buckets[b].count += d->subsets[im->subset].repeats;
        d->subsets[im->subset].image_count++;
    }
    free(chosen);
    return 0;
}

static void make_fingerprint(vkl_dataset *d)
{
    vkl_sha256_ctx s;
    vkl_sha256_init(&s);
    char num[96];
    snprintf(num, sizeof num, "batch %d", d->opts.batch_size);
    vkl_sha256_update(&s, num, strlen(num));
    for (int i = 0; i < d->nimages; i++) {
        const vkl_ds_image *im = &d->images[i];
        const vkl_reso *b = &d->buckets[im->bucket].reso;
        vkl_sha256_update(&s, im->rel, strlen(im->rel) + 1);
        snprintf(num, sizeof num, "%d %dx%d", d->subsets[im->subset].repeats, b->w, b->h);
        vkl_sha256_update(&s, num, strlen(num));
    }
    uint8_t dig[VKL_SHA256_BYTES];
    char hex[VKL_SHA256_HEX];
    vkl_sha256_final(&s, dig);
    vkl_sha256_hex(dig, hex);
    memcpy(d->fingerprint, hex, 16);
    d->fingerprint[16] = 0;
}

static int check_opts(const vkl_dataset_opts *o, vkl_err *e)
{
    if (!o->images_dir || !o->images_dir[0]) return vkl_fail(e, "no image folder given (--images)");
    /* buckets are kohya's, in steps of at least 8 from 64 up; a plain square
     * crop may be as small as a VAE trained on icons wants */
    int lo = o->bucket ? 64 : 8;
    if (o->resolution < lo || o->resolution > 8192)
        return vkl_fail(e, "resolution %d is out of range (%d..8192)", o->resolution, lo);
    if (o->bucket && (o->bucket_step < 8 || o->bucket_step > 1024))
        return vkl_fail(e, "bucket step %d is out of range (8..1024)", o->bucket_step);
    if (o->batch_size < 1 || o->batch_size > 4096)
        return vkl_fail(e, "batch size %d is out of range (1..4096)", o->batch_size);
    if (o->caption_ext && (strlen(o->caption_ext) > 32 || strchr(o->caption_ext, '/')))
        return vkl_fail(e, "caption extension \"%s\" is not a file extension", o->caption_ext);
    return 0;
}

int vkl_dataset_open(const vkl_dataset_opts *o, vkl_dataset **out, vkl_err *e)
{
    *out = NULL;
    if (check_opts(o, e)) return -1;
    struct stat st;
    if (stat(o->images_dir, &st) != 0)
        return vkl_fail(e, "image folder %s: %s", o->images_dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return vkl_fail(e, "image folder %s is not a folder", o->images_dir);
    vkl_dataset *d = (vkl_dataset *)calloc(1, sizeof *d);
    if (!d) return vkl_fail(e, "out of memory");
    d->opts = *o;
    d->opts.images_dir = xstrdup(o->images_dir);
    d->opts.caption_ext = xstrdup(o->caption_ext ? o->caption_ext : ".txt");
    d->opts.default_caption = xstrdup(o->default_caption);
    d->opts.caption.trigger = xstrdup(o->caption.trigger);
    walk w = {0};
    w.d = d;
    w.root = d->opts.images_dir;
    snprintf(w.ext, sizeof w.ext, "%s%s", d->opts.caption_ext[0] == '.' ? "" : ".",
             d->opts.caption_ext);
    w.anc_dev[0] = st.st_dev;
    w.anc_ino[0] = st.st_ino;
    int rc = (!d->opts.images_dir || !d->opts.caption_ext ||
              (o->default_caption && !d->opts.default_caption) ||
              (o->caption.trigger && !d->opts.caption.trigger))
                 ? vkl_fail(e, "out of memory")
                 : 0;
    if (rc == 0) rc = add_subset(&w, d->opts.images_dir, 1, "", e);
    if (rc == 0) rc = walk_dir(&w, d->opts.images_dir, "", 0, 0, e);
    if (rc == 0) rc = assign_buckets(d, e);
    if (rc == 0 && d->nimages == 0)
        rc = vkl_fail(e, "no usable images in %s (%d image files: %d broken, %d in unsupported "
                         "formats, %d too small, %d in 0-repeat folders)",
                      o->images_dir, d->stats.files_seen, d->stats.skipped_broken,
                      d->stats.skipped_unsupported, d->stats.skipped_small,
                      d->stats.skipped_disabled);
    if (rc) {
        vkl_dataset_free(d);
        return -1;
    }
    d->stats.used = d->nimages;
    for (int b = 0; b < d->nbuckets; b++) {
        d->samples_per_epoch += d->buckets[b].count;
        d->batches_per_epoch += (d->buckets[b].count + o->batch_size - 1) / o->batch_size;
    }
    make_fingerprint(d);
    vkl_log(VKL_LOG_INFO,
            "dataset %s: %d images (%d without caption file), %d samples per epoch in %d buckets, "
            "%d batches; skipped %d broken, %d unsupported, %d too small, %d disabled",
            o->images_dir, d->nimages, d->stats.missing_captions, d->samples_per_epoch,
            d->nbuckets, d->batches_per_epoch, d->stats.skipped_broken,
            d->stats.skipped_unsupported, d->stats.skipped_small, d->stats.skipped_disabled);
    *out = d;
    return 0;
}

void vkl_dataset_free(vkl_dataset *d)
{
    if (!d) return;
    for (int i = 0; i < d->nimages; i++) {
        free(d->images[i].path);
        free(d->images[i].rel);
        free(d->images[i].caption);
    }
    free(d->images);
    for (int i = 0; i < d->nsubsets; i++) {
        free(d->subsets[i].dir);
        free(d->subsets[i].name);
        free(d->subsets[i].class_tokens);
    }
    free(d->subsets);
    free(d->buckets);
    free((char *)d->opts.images_dir);
    free((char *)d->opts.caption_ext);
    free((char *)d->opts.default_caption);
    free((char *)d->opts.caption.trigger);
    free(d);
}
