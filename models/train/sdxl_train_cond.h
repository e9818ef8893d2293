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

/* n captions -> ctx [n, T, vkl_sd_context_width(m)] and pooled [n,
 * vkl_sd_pooled_width(m)]: each tokenizer's 77-token row (75 tokens at
 * most, kohya's default max_token_length, no emphasis syntax) cut to T =
 * vkl_sd_text_tokens(m), skip = clip skip - 1. cache may be NULL. */
/* Token ids of n captions for encoders trained in the graph: [2][n][T],
 * tokenizer 1's rows then tokenizer 2's (the same rows as above). */
int vkl_sdxl_tokenize_captions(vkl_sd_model *m, char *const *caps, int n, int32_t *ids, vkl_err *e);

int vkl_sdxl_encode_captions(vkl_sd_model *m, vkl_sdxl_text_cache *cache, char *const *caps, int n, int skip,
                             float *ctx, float *pooled, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
