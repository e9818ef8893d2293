/* SDXL's conditioning in `vklora train`, as kohya's sdxl_train_network builds
 * it: the caption through both frozen text encoders (penultimate layers
 * concatenated, pooled projected text_encoder_2 output), kept per caption
 * string so a caption seen again is not encoded again; and the six size
 * numbers of each sample (add_time_ids). */
#ifndef VKL_SDXL_TRAIN_COND_H
#define VKL_SDXL_TRAIN_COND_H

#include "sd/sd_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kohya's size conditioning of one sample: [original h, original w, crop
 * top, crop left, target h, target w], original = the image file's size,
 * target = its bucket, crop = BucketManager.get_crop_ltrb(bucket, original)
 * (Stability AI's rule: the offset of the image fitted inside the bucket),
 * the left offset mirrored (bucket w - crop right) for a flipped sample. */
void vkl_sdxl_time_ids(int image_w, int image_h, int bucket_w, int bucket_h, int flip, float ids[6]);

/* Text states and pooled embeddings of captions, remembered per caption up
 * to max_bytes of host memory (0: none kept). */
typedef struct vkl_sdxl_text_cache vkl_sdxl_text_cache;
vkl_sdxl_text_cache *vkl_sdxl_text_cache_new(size_t max_bytes);
void vkl_sdxl_text_cache_free(vkl_sdxl_text_cache *c);
/* Captions encoded since creation, and how many of the requests were hits. */
void vkl_sdxl_text_cache_stats(const vkl_sdxl_text_cache *c, int *encoded, int *hits);
/* The kept states of a caption (ctx rows then pooled), or NULL. */
const float *vkl_sdxl_text_cache_get(const vkl_sdxl_text_cache *c, const char *caption);
/* Keeps a copy of floats values for caption (nothing when there is no room). */
void vkl_sdxl_text_cache_put(vkl_sdxl_text_cache *c, const char *caption, const float *v, size_t floats);

/* ---- the disk cache (sdxl_text_disk.c) ----
 * kohya's cache_text_encoder_outputs_to_disk: each image's caption states
 * beside it as <stem>.vklora-text.safetensors ("context" [T, D], "pooled"
 * [P], f32). An entry is used only when its key, SHA-256 over the format
 * version, the text encoders' identity (their weights' bytes, names, shapes
 * and storage type), the clip skip, the caption and both tokenizers' ids of
 * it, matches the one computed now, and its data still has the SHA-256
 * recorded beside it; anything else is encoded again and rewritten. */
typedef struct vkl_sdxl_text_disk {
    char model_id[65]; /* hex SHA-256 of the text encoders */
    int skip;
    int read, written, stale, corrupt; /* entries used, (re)written, with another key, unreadable */
    int write_warned;
} vkl_sdxl_text_disk;

/* Hashes m's text-encoder weights as stored in its files (about 1.6 GB for
 * SDXL base: seconds, once per run). */
int vkl_sdxl_text_disk_init(vkl_sdxl_text_disk *d, vkl_sd_model *m, int skip, vkl_err *e);
/* The entry of image_path (malloc'd). */
char *vkl_sdxl_text_disk_path(const char *image_path);
/* 0: image's entry for caption read into v (ctx rows then pooled); 1: none
 * usable (absent, stale, or unreadable: warned); -1: error (e). */
int vkl_sdxl_text_disk_read(vkl_sdxl_text_disk *d, vkl_sd_model *m, const char *image_path, const char *caption,
                            float *v, vkl_err *e);
/* Writes the entry atomically; a failure only warns (once): the run goes on. */
void vkl_sdxl_text_disk_write(vkl_sdxl_text_disk *d, vkl_sd_model *m, const char *image_path, const char *caption,
                              const float *v);
/* Before training: every image's entry read (into cache, room permitting)
 * or encoded, group captions at a time, and written. */
int vkl_sdxl_text_disk_prepare(vkl_sdxl_text_disk *d, vkl_sd_model *m, vkl_sdxl_text_cache *cache,
                               char *const *images, char *const *caps, int n, int group, vkl_err *e);
/* Lets vkl_sdxl_encode_captions read entries the memory cache has not kept. */
void vkl_sdxl_text_cache_set_disk(vkl_sdxl_text_cache *c, vkl_sdxl_text_disk *d);

/* n captions -> ctx [n, T, vkl_sd_context_width(m)] and pooled [n,
 * vkl_sd_pooled_width(m)]: each tokenizer's 77-token row (75 tokens at
 * most, kohya's default max_token_length, no emphasis syntax) cut to T =
 * vkl_sd_text_tokens(m), skip = clip skip - 1. cache may be NULL. */
/* Token ids of n captions for encoders trained in the graph: [2][n][T],
 * tokenizer 1's rows then tokenizer 2's (the same rows as above). */
int vkl_sdxl_tokenize_captions(vkl_sd_model *m, char *const *caps, int n, int32_t *ids, vkl_err *e);

/* images (may be NULL): each caption's image, whose disk entry is read
 * when the cache has a disk cache and does not hold the caption. */
int vkl_sdxl_encode_captions(vkl_sd_model *m, vkl_sdxl_text_cache *cache, char *const *caps, char *const *images,
                             int n, int skip, float *ctx, float *pooled, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
