/* SDXL caption states kept beside each image (sdxl_train_cond.h: the disk
 * cache), as kohya's --cache_text_encoder_outputs_to_disk keeps them in
 * <stem>_te_outputs.npz; the key and the data digest follow the latent
 * cache's design (latent_cache.c): a stale or damaged entry is never used. */
#include "train/sdxl_train_cond.h"
#include "train/dataset.h"

#include "io/safetensors.h"
#include "io/sha256.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Bump when what an entry holds changes meaning. */
#define TEXT_FORMAT "vklora-text v1"

static void hash_str(vkl_sha256_ctx *s, const char *v) { vkl_sha256_update(s, v, strlen(v) + 1); }

int vkl_sdxl_text_disk_init(vkl_sdxl_text_disk *d, vkl_sd_model *m, int skip, vkl_err *e)
{
    memset(d, 0, sizeof *d);
    d->skip = skip;
    vkl_sha256_ctx s;
    vkl_sha256_init(&s);
    char head[128];
    /* the storage type changes the encoders' arithmetic, so their outputs */
    snprintf(head, sizeof head, "%s\nfamily %s\nweights %s\n", TEXT_FORMAT, vkl_sd_family_name(m->cfg->family),
             vkl_dtype_name(m->weight_dtype));
    hash_str(&s, head);
    /* OpenCLIP's fused in_proj yields three entries of one tensor, in a row */
    const vkl_st_tensor *last[4] = {0};
    int hashed = 0;
    for (int i = 0; i < vkl_sd_source_count(m->src); i++) {
        const vkl_sd_entry *x = vkl_sd_source_at(m->src, i);
        if (strncmp(x->name, "text_encoder", 12)) continue;
        const vkl_st_tensor *t = vkl_sd_source_tensor(m->src, x);
        if (!t) return vkl_fail(e, "text cache: no tensor for %s", x->name);
        if (t == last[0] || t == last[1] || t == last[2] || t == last[3]) continue;
        memmove(last + 1, last, sizeof last - sizeof *last);
        last[0] = t;
        char shape[160];
        int k = snprintf(shape, sizeof shape, "%s %d", vkl_dtype_name(t->dtype), t->ndim);
        for (int j = 0; j < t->ndim && k < (int)sizeof shape - 24; j++)
            k += snprintf(shape + k, sizeof shape - (size_t)k, " %lld", (long long)t->shape[j]);
        hash_str(&s, t->name);
        hash_str(&s, shape);
        vkl_sha256_update(&s, t->data, (size_t)t->nbytes);
        hashed++;
    }
    if (!hashed) return vkl_fail(e, "text cache: the model's files hold no text-encoder weights");
    uint8_t dg[VKL_SHA256_BYTES];
    vkl_sha256_final(&s, dg);
    vkl_sha256_hex(dg, d->model_id);
    return 0;
}

char *vkl_sdxl_text_disk_path(const char *image_path)
{
    return vkl_ds_path_beside(image_path, ".vklora-text.safetensors");
}

/* The key of caption's entry: format, encoders, skip, shapes, caption and
 * both tokenizers' rows (another vocabulary gives other ids). */
static int make_key(const vkl_sdxl_text_disk *d, vkl_sd_model *m, const char *caption, char key[VKL_SHA256_HEX],
                    vkl_err *e)
{
    int T = vkl_sd_text_tokens(m);
    int32_t *ids = malloc(sizeof(int32_t) * 2 * (size_t)T);
    if (!ids) return vkl_fail(e, "out of host memory");
    char *caps[1] = {(char *)caption};
    if (vkl_sdxl_tokenize_captions(m, caps, 1, ids, e)) {
        free(ids);
        return -1;
    }
    char head[256];
    snprintf(head, sizeof head, "%s\nencoders %s\nskip %d\ntokens %d width %d pooled %d\ncaption ", TEXT_FORMAT,
             d->model_id, d->skip, T, vkl_sd_context_width(m), vkl_sd_pooled_width(m));
    vkl_sha256_ctx s;
    vkl_sha256_init(&s);
    hash_str(&s, head);
    hash_str(&s, caption);
    vkl_sha256_update(&s, ids, sizeof(int32_t) * 2 * (size_t)T);
    free(ids);
    uint8_t dg[VKL_SHA256_BYTES];
    vkl_sha256_final(&s, dg);
    vkl_sha256_hex(dg, key);
    return 0;
}

static void digest_of(const float *v, size_t n, char hex[VKL_SHA256_HEX])
{
    uint8_t dg[VKL_SHA256_BYTES];
    vkl_sha256_buf(v, n * sizeof *v, dg);
    vkl_sha256_hex(dg, hex);
}

/* Reads tensor name of n floats, its shape [d0] or [d0, d1]. */
static int read_tensor(const vkl_st_file *f, const char *name, int nd, int64_t d0, int64_t d1, float *out,
                       vkl_err *e)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) return vkl_fail(e, "tensor %s is missing", name);
    if (t->ndim != nd || t->shape[0] != d0 || (nd == 2 && t->shape[1] != d1))
        return vkl_fail(e, "tensor %s has the wrong shape (want %lld x %lld)", name, (long long)d0,
                        (long long)(nd == 2 ? d1 : 1));
    return vkl_st_read(f, t, VKL_F32, out, e);
}

int vkl_sdxl_text_disk_read(vkl_sdxl_text_disk *d, vkl_sd_model *m, const char *image_path, const char *caption,
                            float *v, vkl_err *e)
{
    char key[VKL_SHA256_HEX];
    if (make_key(d, m, caption, key, e)) return -1;
    char *path = vkl_sdxl_text_disk_path(image_path);
    if (!path) return vkl_fail(e, "out of host memory");
    struct stat st;
    if (stat(path, &st)) {
        free(path);
        return 1;
    }
    int T = vkl_sd_text_tokens(m), D = vkl_sd_context_width(m), P = vkl_sd_pooled_width(m);
    size_t per = (size_t)T * D;
    vkl_st_file *f = NULL;
    vkl_err why = {{0}};
    int rc = 1;
    if (vkl_st_open(path, &f, &why) == 0) {
        const char *k = vkl_st_meta_get(f, "key"), *want = vkl_st_meta_get(f, "digest");
        if (!k || strcmp(k, key)) {
            d->stale++;
            goto done;
        }
        char got[VKL_SHA256_HEX];
        if (!read_tensor(f, "context", 2, T, D, v, &why) && !read_tensor(f, "pooled", 1, P, 0, v + per, &why)) {
            digest_of(v, per + (size_t)P, got);
            if (want && !strcmp(want, got)) {
                d->read++;
                rc = 0;
                goto done;
            }
            vkl_fail(&why, "its data does not have the SHA-256 recorded with it");
        }
    }
    d->corrupt++;
    vkl_log(VKL_LOG_WARN, "text cache %s is unreadable (%s); encoding the caption again", path, why.msg);
done:
    vkl_st_close(f);
    free(path);
    return rc;
}

void vkl_sdxl_text_disk_write(vkl_sdxl_text_disk *d, vkl_sd_model *m, const char *image_path, const char *caption,
                              const float *v)
{
    vkl_err why = {{0}};
    char key[VKL_SHA256_HEX], digest[VKL_SHA256_HEX];
    int T = vkl_sd_text_tokens(m), D = vkl_sd_context_width(m), P = vkl_sd_pooled_width(m);
    size_t per = (size_t)T * D;
    char *path = vkl_sdxl_text_disk_path(image_path);
    vkl_st_writer *w = vkl_st_writer_new();
    int rc = !path || !w ? vkl_fail(&why, "out of host memory") : make_key(d, m, caption, key, &why);
    digest_of(v, per + (size_t)P, digest);
    if (!rc) rc = vkl_st_writer_add_ref(w, "context", VKL_F32, 2, (int64_t[]){T, D}, v, &why);
    if (!rc) rc = vkl_st_writer_add_ref(w, "pooled", VKL_F32, 1, (int64_t[]){P}, v + per, &why);
    if (!rc) rc = vkl_st_writer_meta(w, "format", TEXT_FORMAT, &why);
    if (!rc) rc = vkl_st_writer_meta(w, "key", key, &why);
    if (!rc) rc = vkl_st_writer_meta(w, "digest", digest, &why);
    if (!rc) rc = vkl_st_writer_meta(w, "caption", caption, &why);
    if (!rc) rc = vkl_st_writer_finish(w, path, &why);
    vkl_st_writer_free(w);
    if (rc) {
        if (!d->write_warned++) /* the first failure says why; the rest are encoded each run */
            vkl_log(VKL_LOG_WARN, "cannot write text cache %s (%s); keeping caption states in memory only",
                    path ? path : image_path, why.msg);
    } else {
        d->written++;
    }
    free(path);
}

int vkl_sdxl_text_disk_prepare(vkl_sdxl_text_disk *d, vkl_sd_model *m, vkl_sdxl_text_cache *cache,
                               char *const *images, char *const *caps, int n, int group, vkl_err *e)
{
    size_t per = (size_t)vkl_sd_text_tokens(m) * vkl_sd_context_width(m), P = (size_t)vkl_sd_pooled_width(m);
    if (group < 1) group = 1;
    if (group > 64) group = 64;
    float *v = malloc(sizeof(float) * (per + P));
    float *ctx = malloc(sizeof(float) * per * (size_t)group), *pooled = malloc(sizeof(float) * (P ? P : 1) * group);
    int *todo = malloc(sizeof(int) * (size_t)(n ? n : 1));
    int ntodo = 0, rc = -1;
    if (!v || !ctx || !pooled || !todo) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        int r = vkl_sdxl_text_disk_read(d, m, images[i], caps[i], v, e);
        if (r < 0) goto done;
        if (r == 0) vkl_sdxl_text_cache_put(cache, caps[i], v, per + P);
        else todo[ntodo++] = i;
    }
    for (int k = 0; k < ntodo; k += group) {
        int g = ntodo - k < group ? ntodo - k : group;
        char *gcaps[64];
        for (int j = 0; j < g; j++) gcaps[j] = caps[todo[k + j]];
        if (vkl_sdxl_encode_captions(m, cache, gcaps, NULL, g, d->skip, ctx, pooled, e)) goto done;
        for (int j = 0; j < g; j++) {
            memcpy(v, ctx + per * j, sizeof(float) * per);
            memcpy(v + per, pooled + P * j, sizeof(float) * P);
            vkl_sdxl_text_disk_write(d, m, images[todo[k + j]], gcaps[j], v);
        }
    }
    rc = 0;
done:
    free(v);
    free(ctx);
    free(pooled);
    free(todo);
    return rc;
}
