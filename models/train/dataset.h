/* The data side of `vklora train`: an image folder laid out the way people lay
 * it out for kohya's sd-scripts, turned into batches of preprocessed images
 * (or cached latents) and captions, in an order that a seed fixes and a saved
 * iterator state reproduces.
 *
 * Folder layout (kohya's DreamBooth style, read recursively):
 *   images/10_mystyle/a.png + a.txt   -> 10 repeats per epoch, caption from a.txt
 *   images/10_mystyle/b.jpg           -> no caption file: the default caption,
 *                                        else the folder's words ("mystyle")
 *   images/c.png                      -> 1 repeat
 * A folder named "<n>_<words>" sets the repeats of every image below it (the
 * nearest such folder wins); n = 0 disables the folder, as in kohya. Hidden
 * files and folders (leading '.') are skipped. The walk is depth-first with
 * each folder's names in byte order, so a folder gives the same dataset on
 * every machine.
 *
 * Kohya behaviours kept (library/train_util.py, config_util.py):
 *  - caption = first line of the caption file, whitespace-stripped (Python
 *    str.strip); read_caption() in DreamBoothDataset.
 *  - caption processing = BaseDataset.process_caption (dropout, keep tokens,
 *    shuffle, tag dropout, ", " join); tag counts = set_tag_frequency.
 *  - buckets = model_util.make_bucket_resolutions and BucketManager.select_bucket,
 *    crop = trim_and_resize_if_required (centre crop).
 *  - batches are formed inside one bucket; the list of batches and each
 *    bucket's contents are shuffled per epoch (BaseDataset.shuffle_buckets).
 * Randomness differs from kohya on purpose: every draw comes from Philox keyed
 * by the seed and addressed by (purpose, epoch, slot, draw), so the order and
 * the augmentations of any epoch can be recomputed from (seed, epoch) alone. */
#ifndef VKL_TRAIN_DATASET_H
#define VKL_TRAIN_DATASET_H

#include <stdint.h>

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_DATASET_MAX_REPEATS 100000
#define VKL_DATASET_MAX_DEPTH 32

/* ---- options ---- */

typedef struct vkl_caption_opts {
    int shuffle;             /* --shuffle-caption */
    int keep_tokens;         /* --keep-tokens N: leading tags never shuffled or dropped */
    double dropout_rate;     /* --caption-dropout-rate: whole caption -> "" */
    double tag_dropout_rate; /* --caption-tag-dropout-rate: each free tag dropped */
    const char *trigger;     /* --trigger: prepended as the first tag unless present */
} vkl_caption_opts;

typedef struct vkl_dataset_opts {
    const char *images_dir;      /* --images */
    const char *caption_ext;     /* ".txt" when NULL; "caption" and ".caption" both work */
    const char *default_caption; /* for images without a caption file; NULL: folder words */
    int resolution;              /* R: buckets hold at most R*R pixels (512) */
    int bucket;                  /* 1: aspect-ratio buckets; 0: square R x R centre crop */
    int bucket_no_upscale;       /* 1 (default): buckets from the image size, never enlarge */
    int min_bucket, max_bucket;  /* 256, 1024 (ignored with no_upscale, as in kohya) */
    int bucket_step;             /* 64 */
    int batch_size;              /* 1 */
    int flip;                    /* random horizontal flip, p = 0.5 */
    uint64_t seed;
    vkl_caption_opts caption;
} vkl_dataset_opts;

void vkl_dataset_opts_default(vkl_dataset_opts *o);

/* ---- the scanned dataset (read-only after vkl_dataset_open) ---- */

typedef struct vkl_reso {
    int w, h;
} vkl_reso;

typedef struct vkl_ds_subset {
    char *dir;          /* full path of the folder that sets the repeats (or the root) */
    char *name;         /* its base name: the key of ss_tag_frequency / ss_dataset_dirs */
    int repeats;
    char *class_tokens; /* words after "<n>_" ("" for the root) */
    int image_count;
} vkl_ds_subset;

typedef struct vkl_ds_image {
    char *path;    /* full path */
    char *rel;     /* relative to images_dir */
    char *caption; /* raw caption (before processing) */
    int has_caption_file;
    int subset;
    int width, height; /* upright size from the header */
    int bucket;        /* index into buckets */
    vkl_reso resized;  /* size before the centre crop to the bucket */
} vkl_ds_image;

typedef struct vkl_ds_bucket {
    vkl_reso reso;
    int count; /* samples per epoch (images x repeats) */
} vkl_ds_bucket;

typedef struct vkl_ds_stats {
    int files_seen;          /* files with an image extension */
    int used;                /* images in the dataset */
    int skipped_broken;      /* failed header validation */
    int skipped_unsupported; /* WebP and other known-but-unsupported formats */
    int skipped_small;       /* smaller than one bucket step */
    int skipped_disabled;    /* below a "0_" folder */
    int missing_captions;    /* used images without a caption file */
} vkl_ds_stats;

typedef struct vkl_dataset {
    vkl_dataset_opts opts; /* strings duplicated and owned */
    vkl_ds_image *images;
    int nimages;
    vkl_ds_subset *subsets;
    int nsubsets;
    vkl_ds_bucket *buckets; /* sorted by (w, h) as kohya's BucketManager.sort */
    int nbuckets;
    vkl_ds_stats stats;
    double mean_ar_error; /* kohya's mean_img_ar_error */
    int samples_per_epoch;
    int batches_per_epoch;
    char fingerprint[17]; /* hex: images, repeats, buckets and batch size */
} vkl_dataset;

/* Scans, reads captions, validates image headers (a broken image is skipped
 * with a warning naming it and the reason) and assigns buckets. Fails when
 * the folder is missing, a caption is not UTF-8, or no image is usable. */
int vkl_dataset_open(const vkl_dataset_opts *o, vkl_dataset **out, vkl_err *e);
void vkl_dataset_free(vkl_dataset *d);

/* ---- captions (dataset_caption.c) ---- */

/* Reads a caption file as kohya does: UTF-8 (a leading BOM is dropped), the
 * first line (\n, \r\n or \r ends it), Python-stripped. *out is malloc'd.
 * *empty is set when the file has no line at all (kohya refuses such files;
 * the scanner warns and uses the default caption instead). */
int vkl_caption_read_file(const char *path, char **out, int *empty, vkl_err *e);
/* kohya's process_caption for one sample, with draws addressed by
 * (seed, epoch, slot). *out is malloc'd. */
int vkl_caption_process(const vkl_caption_opts *o, const char *caption, uint64_t seed,
                        uint32_t epoch, uint32_t slot, char **out, vkl_err *e);
/* ss_tag_frequency: {"<subset name>": {"<tag, lower-cased>": count}} over the
 * raw captions, one count per image (not per repeat). malloc'd JSON. */
char *vkl_dataset_tag_frequency_json(const vkl_dataset *d);
/* ss_dataset_dirs: {"<subset name>": {"n_repeats": n, "img_count": c}}. */
char *vkl_dataset_dirs_json(const vkl_dataset *d);
/* ss_bucket_info as kohya writes it: {"buckets": {"<i>": {"resolution": [w, h],
 * "count": samples with repeats}}, "mean_img_ar_error": mean |ratio error|
 * over images}, i the index in the (w, h)-sorted list of used buckets;
 * "null" without aspect-ratio buckets. malloc'd JSON, NULL when out of memory. */
char *vkl_dataset_bucket_info_json(const vkl_dataset *d);

/* ---- buckets (dataset_bucket.c) ---- */

/* kohya model_util.make_bucket_resolutions: sorted, malloc'd in *out. */
int vkl_bucket_resolutions(int max_w, int max_h, int min_size, int max_size, int step,
                           vkl_reso **out, int *count, vkl_err *e);
/* kohya BucketManager.select_bucket. With predefined resolutions (no_upscale
 * = 0): the exact size if listed, else the closest aspect ratio (first on
 * ties), resized to cover it. With no_upscale: the image (shrunk to
 * max_area when larger, side rounded to step) cropped down to step multiples.
 * Fails when the image is smaller than one step on a side. */
int vkl_bucket_select(int no_upscale, const vkl_reso *predef, int npredef, long max_area, int step,
                      int image_w, int image_h, vkl_reso *bucket, vkl_reso *resized,
                      double *ar_error, vkl_err *e);

/* ---- order (dataset_order.c) ---- */

/* Random draws of the data pipeline: Philox4x32-10 with key = seed and
 * counter = (draw / 4, slot, epoch, 0x44530000 | purpose); the last word is
 * never 0 or 1, so these never overlap the sampler's normal streams. */
enum {
    VKL_DS_RNG_BATCHES = 1, /* order of the batches in an epoch */
    VKL_DS_RNG_BUCKET = 2,  /* order inside bucket `slot` */
    VKL_DS_RNG_FLIP = 3,    /* flip of sample `slot` */
    VKL_DS_RNG_CAPTION = 4, /* caption processing of sample `slot` */
};
uint32_t vkl_ds_rand_u32(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t slot,
                         uint32_t draw);
/* Uniform in [0, 1) from one draw. */
double vkl_ds_rand_unit(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t slot,
                        uint32_t draw);

typedef struct vkl_ds_sample {
    int image;     /* index into images */
    uint32_t slot; /* position in the epoch: addresses its caption draws */
    int flip;
} vkl_ds_sample;

/* Iterator over batches. Its whole state is (epoch, batch); the epoch's plan
 * is recomputed from the seed when needed. */
typedef struct vkl_ds_iter {
    const vkl_dataset *d;
    uint32_t epoch;
    int batch; /* next batch within the epoch */
    /* plan of `epoch`: batches_per_epoch batches laid end to end */
    vkl_ds_sample *plan;
    int *batch_start; /* batches_per_epoch + 1 offsets into plan */
    int *batch_bucket;
    uint32_t plan_epoch;
    int plan_valid;
} vkl_ds_iter;

int vkl_ds_iter_init(vkl_ds_iter *it, const vkl_dataset *d, vkl_err *e);
void vkl_ds_iter_free(vkl_ds_iter *it);
/* The next batch: samples point into the iterator (valid until the next
 * call); all share one bucket. Moves to the next epoch after the last batch;
 * *epoch_out (may be NULL) tells which epoch the batch belongs to. */
int vkl_ds_iter_next(vkl_ds_iter *it, const vkl_ds_sample **samples, int *count, int *bucket,
                     uint32_t *epoch_out, vkl_err *e);
/* Resume state as a small JSON object
 * {"format":"vklora-data-iter","version":1,"seed":"..","epoch":e,"batch":b,"dataset":"<fingerprint>"}.
 * Restoring refuses a state made with another seed or another dataset. */
char *vkl_ds_iter_save(const vkl_ds_iter *it);
int vkl_ds_iter_restore(vkl_ds_iter *it, const char *json, vkl_err *e);

/* ---- preprocessing (dataset_item.c) ---- */

/* The image of dataset entry `image` at its bucket size: decoded as RGB,
 * resized to its `resized` size (area filter when shrinking, Lanczos-3 when
 * enlarging), centre-cropped to the bucket, optionally mirrored, as planar
 * CHW floats in [-1, 1] (malloc'd, 3*w*h). */
int vkl_dataset_load_image(const vkl_dataset *d, int image, int flip, float **chw, int *w, int *h,
                           vkl_err *e);

/* ---- latent cache (latent_cache.c) ---- */

/* Encodes a CHW [-1, 1] image of w x h into latents_out
 * (channels x h/down x w/down floats). */
typedef int (*vkl_encode_fn)(void *user, const float *chw, int w, int h, float *latents_out,
                             vkl_err *e);

typedef struct vkl_latent_cache_opts {
    vkl_encode_fn encode;
    void *user;
    const char *vae_id;   /* identity of the encoder (for example its file hash) */
    int latent_channels;  /* 4 for SD 1.x/2.x */
    int downscale;        /* 8 */
    int in_memory;        /* keep latents in memory */
    int on_disk;          /* keep <stem>.vklora-latents.safetensors beside each image */
} vkl_latent_cache_opts;

typedef struct vkl_latent_cache_stats {
    int memory_hits, disk_hits, encodes;
    int stale;   /* disk entries whose key did not match (edited image, other VAE) */
    int corrupt; /* unreadable disk entries (warned about) */
} vkl_latent_cache_stats;

typedef struct vkl_latent_cache vkl_latent_cache;

int vkl_latent_cache_new(const vkl_latent_cache_opts *o, const vkl_dataset *d,
                         vkl_latent_cache **out, vkl_err *e);
void vkl_latent_cache_free(vkl_latent_cache *c);
/* Latents of (image, flip) into out (channels * h/down * w/down floats of its
 * bucket): from memory, else a disk entry whose key matches, else encoded now
 * (and stored). The key is SHA-256 over the image file's bytes, the bucket
 * and resized sizes, the flip, the preprocessing version and vae_id. */
int vkl_latent_cache_get(vkl_latent_cache *c, int image, int flip, float *out, vkl_err *e);
/* Path of the disk entry of an image (malloc'd). */
char *vkl_latent_cache_path(const char *image_path);
/* image_path with its extension replaced by suffix (malloc'd): where the
 * caches keep an image's entries. */
char *vkl_ds_path_beside(const char *image_path, const char *suffix);
vkl_latent_cache_stats vkl_latent_cache_get_stats(const vkl_latent_cache *c);

#ifdef __cplusplus
}
#endif

#endif
