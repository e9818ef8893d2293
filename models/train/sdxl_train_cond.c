#include "train/sdxl_train_cond.h"

#include "sd/sdxl_text.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void vkl_sdxl_time_ids(int image_w, int image_h, int bucket_w, int bucket_h, int flip, float ids[6])
{
    /* get_crop_ltrb works in Python floats: the floor divisions are
     * math.floor, the final int() truncates towards zero */
    double bucket_ar = (double)bucket_w / bucket_h, image_ar = (double)image_w / image_h, rw, rh;
    if (bucket_ar > image_ar) {
        rw = bucket_h * image_ar;
        rh = bucket_h;
    } else {
        rw = bucket_w;
        rh = bucket_w / image_ar;
    }
    double left = floor((bucket_w - rw) / 2), top = floor((bucket_h - rh) / 2);
    double crop_left = flip ? bucket_w - (left + rw) : left;
    ids[0] = (float)image_h;
    ids[1] = (float)image_w;
    ids[2] = (float)trunc(top);
    ids[3] = (float)trunc(crop_left);
    ids[4] = (float)bucket_h;
    ids[5] = (float)bucket_w;
}

/* ---- the per-caption cache: open addressing on the caption's FNV-1a hash ---- */

typedef struct {
    char *key;
    float *v; /* ctx row block then pooled */
} entry;

struct vkl_sdxl_text_cache {
    entry *slots;
    size_t cap, used, bytes, max_bytes;
    int encoded, hits;
    vkl_sdxl_text_disk *disk; /* entries beside the images (NULL: none) */
};

static uint64_t hash_of(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

vkl_sdxl_text_cache *vkl_sdxl_text_cache_new(size_t max_bytes)
{
    vkl_sdxl_text_cache *c = calloc(1, sizeof *c);
    if (c) c->max_bytes = max_bytes;
    return c;
}

void vkl_sdxl_text_cache_free(vkl_sdxl_text_cache *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->cap; i++) {
        free(c->slots[i].key);
        free(c->slots[i].v);
    }
    free(c->slots);
    free(c);
}

void vkl_sdxl_text_cache_stats(const vkl_sdxl_text_cache *c, int *encoded, int *hits)
{
    *encoded = c ? c->encoded : 0;
    *hits = c ? c->hits : 0;
}

static entry *find_slot(entry *slots, size_t cap, const char *key)
{
    for (size_t i = hash_of(key) & (cap - 1);; i = (i + 1) & (cap - 1))
        if (!slots[i].key || !strcmp(slots[i].key, key)) return &slots[i];
}

void vkl_sdxl_text_cache_set_disk(vkl_sdxl_text_cache *c, vkl_sdxl_text_disk *d) { c->disk = d; }

const float *vkl_sdxl_text_cache_get(const vkl_sdxl_text_cache *c, const char *key)
{
    if (!c || !c->cap) return NULL;
    const entry *s = find_slot(c->slots, c->cap, key);
    return s->key ? s->v : NULL;
}

/* Keeps a copy of v (floats); a full cache or a failed allocation only
 * means the caption is encoded again next time. */
void vkl_sdxl_text_cache_put(vkl_sdxl_text_cache *c, const char *key, const float *v, size_t floats)
{
    size_t bytes = floats * sizeof(float) + strlen(key) + 1;
    if (!c || c->bytes + bytes > c->max_bytes) return;
    if (2 * (c->used + 1) > c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        entry *s = calloc(cap, sizeof *s);
        if (!s) return;
        for (size_t i = 0; i < c->cap; i++)
            if (c->slots[i].key) *find_slot(s, cap, c->slots[i].key) = c->slots[i];
        free(c->slots);
        c->slots = s;
        c->cap = cap;
    }
    entry *slot = find_slot(c->slots, c->cap, key);
    char *k = strdup(key);
    float *copy = malloc(floats * sizeof(float));
    if (!k || !copy) {
        free(k);
        free(copy);
        return;
    }
    memcpy(copy, v, floats * sizeof(float));
    slot->key = k;
    slot->v = copy;
    c->used++;
    c->bytes += bytes;
}

/* ---- encoding ---- */

static vkl_tensor *upload_i32(vkl_ctx *c, int nd, const int64_t *shape, const int32_t *v, vkl_err *e)
{
    vkl_tensor *t = vkl_tensor_new(c, VKL_I32, nd, shape, e);
    if (t && vkl_tensor_upload(c, t, v, VKL_I32, e)) {
        vkl_tensor_free(t);
        return NULL;
    }
    return t;
}

int vkl_sdxl_tokenize_captions(vkl_sd_model *m, char *const *caps, int n, int32_t *ids, vkl_err *e)
{
    if (!m->tok2) return vkl_fail(e, "the model has no second tokenizer");
    int T = vkl_sd_text_tokens(m);
    int32_t row[VKL_CLIP_CONTEXT];
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < n; i++) {
            if (vkl_clip_encode_padded(k ? m->tok2 : m->tok, caps[i], 0, row, NULL, e)) return -1;
            memcpy(ids + (size_t)T * ((size_t)k * n + i), row, sizeof *row * (size_t)T);
        }
    return 0;
}

/* Both encoders on n captions (no cache). */
static int encode(vkl_sd_model *m, char *const *caps, int n, int skip, float *ctx, float *pooled, vkl_err *e)
{
    int T = vkl_sd_text_tokens(m);
    int32_t *ids1 = malloc(sizeof(int32_t) * 2 * (size_t)n * T), *ids2 = ids1 ? ids1 + (size_t)n * T : NULL;
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)n);
    vkl_tensor *t1 = NULL, *t2 = NULL, *tr = NULL;
    vkl_graph *g = NULL;
    int rc = -1;
    if (!ids1 || !rows) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    if (vkl_sdxl_tokenize_captions(m, caps, n, ids1, e)) goto done;
    vkl_clip_pool_rows(&m->cfg->te[1], ids2, n, T, rows);
    if (vkl_sd_model_acquire(m, VKL_SD_PART_TE, e)) goto done;
    t1 = upload_i32(m->ctx, 2, (int64_t[]){n, T}, ids1, e);
    t2 = t1 ? upload_i32(m->ctx, 2, (int64_t[]){n, T}, ids2, e) : NULL;
    tr = t2 ? upload_i32(m->ctx, 1, (int64_t[]){n}, rows, e) : NULL;
    if (!tr) goto done;
    g = vkl_graph_new(m->ctx);
    vkl_tensor *pt = NULL;
    vkl_tensor *y = vkl_sdxl_text_forward(g, &m->te, &m->te2, t1, t2, tr, skip, &pt);
    vkl_graph_keep(g, y);
    vkl_graph_keep(g, pt);
    if (vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(m->ctx, y, ctx, VKL_F32, e) ||
        vkl_tensor_download(m->ctx, pt, pooled, VKL_F32, e)) {
        vkl_err_prefix(e, "text encoders: ");
        goto done;
    }
    rc = 0;
done:
    vkl_graph_free(g);
    vkl_tensor_free(t1);
    vkl_tensor_free(t2);
    vkl_tensor_free(tr);
    free(ids1);
    free(rows);
    return rc;
}

int vkl_sdxl_encode_captions(vkl_sd_model *m, vkl_sdxl_text_cache *cache, char *const *caps, char *const *images,
                             int n, int skip, float *ctx, float *pooled, vkl_err *e)
{
    if (!m->tok2 || m->cfg->n_text_encoders < 2) return vkl_fail(e, "the model has no second text encoder");
    size_t per = (size_t)vkl_sd_text_tokens(m) * vkl_sd_context_width(m), P = (size_t)vkl_sd_pooled_width(m);
    /* the captions neither in memory nor on disk, each once, encoded together */
    char **miss = malloc(sizeof(char *) * (size_t)n);
    float *mctx = malloc(sizeof(float) * per * (size_t)n), *mpool = malloc(sizeof(float) * (P ? P : 1) * (size_t)n);
    float *both = malloc(sizeof(float) * (per + P));
    char *done_row = calloc((size_t)n, 1); /* rows filled from disk entries */
    int nmiss = 0, rc = -1;
    if (!miss || !mctx || !mpool || !both || !done_row) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        if (vkl_sdxl_text_cache_get(cache, caps[i])) continue;
        if (cache && cache->disk && images && images[i]) {
            int r = vkl_sdxl_text_disk_read(cache->disk, m, images[i], caps[i], both, e);
            if (r < 0) goto done;
            if (r == 0) {
                memcpy(ctx + per * i, both, sizeof(float) * per);
                memcpy(pooled + P * i, both + per, sizeof(float) * P);
                vkl_sdxl_text_cache_put(cache, caps[i], both, per + P);
                done_row[i] = 1;
                continue;
            }
        }
        int seen = 0;
        for (int j = 0; j < nmiss && !seen; j++) seen = !strcmp(miss[j], caps[i]);
        if (!seen) miss[nmiss++] = caps[i];
    }
    if (nmiss && encode(m, miss, nmiss, skip, mctx, mpool, e)) goto done;
    for (int i = 0; i < n; i++) {
        if (done_row[i]) continue;
        int j = 0;
        while (j < nmiss && strcmp(miss[j], caps[i])) j++;
        const float *hit = j < nmiss ? NULL : vkl_sdxl_text_cache_get(cache, caps[i]);
        if (hit) {
            memcpy(ctx + per * i, hit, sizeof(float) * per);
            memcpy(pooled + P * i, hit + per, sizeof(float) * P);
            cache->hits++;
            continue;
        }
        memcpy(ctx + per * i, mctx + per * j, sizeof(float) * per);
        memcpy(pooled + P * i, mpool + P * j, sizeof(float) * P);
    }
    for (int j = 0; j < nmiss && cache; j++) {
        memcpy(both, mctx + per * j, sizeof(float) * per);
        memcpy(both + per, mpool + P * j, sizeof(float) * P);
        vkl_sdxl_text_cache_put(cache, miss[j], both, per + P);
        cache->encoded++;
    }
    rc = 0;
done:
    free(miss);
    free(mctx);
    free(mpool);
    free(both);
    free(done_row);
    return rc;
}
