/* Latent cache: VAE encodings of the training images, kept in memory and/or
 * beside each image as <stem>.vklora-latents.safetensors. A disk entry is used
 * only when its key matches the key computed now from the image file's bytes,
 * the geometry, the flip, the preprocessing version and the encoder identity;
 * anything else (edited image, other VAE, damaged file) is recomputed and the
 * entry rewritten atomically. */
#include "train/dataset.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors.h"
#include "io/sha256.h"

/* Bump when the preprocessing changes what an image encodes to. */
#define LATENT_FORMAT "vklora-latents v1"

static const char *const TENSOR[2] = {"latents", "latents_flipped"};
static const char *const KEY[2] = {"key", "key_flipped"};

struct vkl_latent_cache {
    vkl_latent_cache_opts o;
    const vkl_dataset *d;
    float **mem;           /* [image * 2 + flip] */
    uint8_t (*digest)[32]; /* SHA-256 of each image file, computed once */
    char *have_digest;
    int write_warned;
    vkl_latent_cache_stats stats;
};

int vkl_latent_cache_new(const vkl_latent_cache_opts *o, const vkl_dataset *d,
                         vkl_latent_cache **out, vkl_err *e)
{
    *out = NULL;
    if (!o->encode) return vkl_fail(e, "latent cache: no encode function");
    if (!o->vae_id || !o->vae_id[0])
        return vkl_fail(e, "latent cache: no encoder identity (vae_id) to key the cache with");
    if (o->latent_channels < 1 || o->latent_channels > 64 || o->downscale < 1 ||
        o->downscale > 64)
        return vkl_fail(e, "latent cache: %d channels / downscale %d out of range",
                        o->latent_channels, o->downscale);
    for (int b = 0; b < d->nbuckets; b++)
        if (d->buckets[b].reso.w % o->downscale || d->buckets[b].reso.h % o->downscale)
            return vkl_fail(e, "latent cache: bucket %dx%d is not a multiple of the encoder's "
                               "downscale %d",
                            d->buckets[b].reso.w, d->buckets[b].reso.h, o->downscale);
    vkl_latent_cache *c = (vkl_latent_cache *)calloc(1, sizeof *c);
    size_t n = (size_t)d->nimages;
    if (c) {
        c->mem = (float **)calloc(2 * n, sizeof *c->mem);
        c->digest = (uint8_t(*)[32])calloc(n, sizeof *c->digest);
        c->have_digest = (char *)calloc(n, 1);
        size_t idn = strlen(o->vae_id) + 1;
        char *id = (char *)malloc(idn);
        if (id) memcpy(id, o->vae_id, idn);
        c->o = *o;
        c->o.vae_id = id;
        c->d = d;
    }
    if (!c || !c->mem || !c->digest || !c->have_digest || !c->o.vae_id) {
        vkl_latent_cache_free(c);
        return vkl_fail(e, "latent cache: out of memory for %d images", d->nimages);
    }
    *out = c;
    return 0;
}

void vkl_latent_cache_free(vkl_latent_cache *c)
{
    if (!c) return;
    if (c->mem)
        for (int i = 0; i < 2 * c->d->nimages; i++) free(c->mem[i]);
    free(c->mem);
    free(c->digest);
    free(c->have_digest);
    free((char *)c->o.vae_id);
    free(c);
}

vkl_latent_cache_stats vkl_latent_cache_get_stats(const vkl_latent_cache *c) { return c->stats; }

char *vkl_ds_path_beside(const char *image_path, const char *suffix)
{
    const char *slash = strrchr(image_path, '/');
    const char *dot = strrchr(image_path, '.');
    size_t stem = dot && (!slash || dot > slash + 1) ? (size_t)(dot - image_path)
                                                     : strlen(image_path);
    size_t n = strlen(suffix) + 1;
    char *p = (char *)malloc(stem + n);
    if (!p) return NULL;
    memcpy(p, image_path, stem);
    memcpy(p + stem, suffix, n);
    return p;
}

char *vkl_latent_cache_path(const char *image_path)
{
    return vkl_ds_path_beside(image_path, ".vklora-latents.safetensors");
}

static int make_key(vkl_latent_cache *c, int image, int flip, char key[VKL_SHA256_HEX], vkl_err *e)
{
    const vkl_ds_image *im = &c->d->images[image];
    if (!c->have_digest[image]) {
        if (vkl_sha256_file(im->path, c->digest[image], e)) return -1;
        c->have_digest[image] = 1;
    }
    char file_hex[VKL_SHA256_HEX], head[256];
    vkl_sha256_hex(c->digest[image], file_hex);
    const vkl_reso b = c->d->buckets[im->bucket].reso;
    snprintf(head, sizeof head, "%s\nimage %s\nbucket %dx%d resized %dx%d flip %d\nlatent %d/%d\nvae ",
             LATENT_FORMAT, file_hex, b.w, b.h, im->resized.w, im->resized.h, flip,
             c->o.latent_channels, c->o.downscale);
    vkl_sha256_ctx s;
    uint8_t d[VKL_SHA256_BYTES];
    vkl_sha256_init(&s);
    vkl_sha256_update(&s, head, strlen(head));
    vkl_sha256_update(&s, c->o.vae_id, strlen(c->o.vae_id));
    vkl_sha256_final(&s, d);
    vkl_sha256_hex(d, key);
    return 0;
}

/* Reads tensor `name` when it has the expected shape and only finite values. */
static int read_entry(const vkl_st_file *f, const char *name, const int64_t shape[3], float *out,
                      vkl_err *e)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) return vkl_fail(e, "tensor %s is missing", name);
    if (t->ndim != 3 || t->shape[0] != shape[0] || t->shape[1] != shape[1] ||
        t->shape[2] != shape[2])
        return vkl_fail(e, "tensor %s has the wrong shape (want [%lld, %lld, %lld])", name,
                        (long long)shape[0], (long long)shape[1], (long long)shape[2]);
    if (vkl_st_read(f, t, VKL_F32, out, e)) return -1;
    for (uint64_t i = 0; i < t->nelem; i++)
        if (!isfinite(out[i])) return vkl_fail(e, "tensor %s holds a non-finite value", name);
    return 0;
}

int vkl_latent_cache_get(vkl_latent_cache *c, int image, int flip, float *out, vkl_err *e)
{
    const vkl_dataset *d = c->d;
    if (image < 0 || image >= d->nimages)
        return vkl_fail(e, "latent cache: image index %d out of range (%d images)", image,
                        d->nimages);
    flip = flip ? 1 : 0;
    const vkl_ds_image *im = &d->images[image];
    const vkl_reso b = d->buckets[im->bucket].reso;
    const int64_t shape[3] = {c->o.latent_channels, b.h / c->o.downscale, b.w / c->o.downscale};
    const size_t n = (size_t)(shape[0] * shape[1] * shape[2]);
    float **slot = &c->mem[2 * image + flip];
    if (*slot) {
        memcpy(out, *slot, n * sizeof *out);
        c->stats.memory_hits++;
        return 0;
    }
    char key[2][VKL_SHA256_HEX];
    if (make_key(c, image, flip, key[flip], e)) return -1;

    char *path = NULL;
    vkl_st_file *f = NULL;
    float *other = NULL; /* the other flip's entry, kept when still valid */
    int rc = 0, found = 0;
    if (c->o.on_disk) {
        if (!(path = vkl_latent_cache_path(im->path))) return vkl_fail(e, "out of memory");
        struct stat st;
        vkl_err why = {{0}};
        if (stat(path, &st) == 0) {
            if (vkl_st_open(path, &f, &why)) {
                vkl_log(VKL_LOG_WARN, "latent cache %s is unreadable (%s); recomputing", path,
                        why.msg);
                c->stats.corrupt++;
            } else {
                const char *k = vkl_st_meta_get(f, KEY[flip]);
                if (k && strcmp(k, key[flip]) == 0) {
                    if (read_entry(f, TENSOR[flip], shape, out, &why) == 0) {
                        found = 1;
                        c->stats.disk_hits++;
                    } else {
                        vkl_log(VKL_LOG_WARN, "latent cache %s: %s; recomputing", path, why.msg);
                        c->stats.corrupt++;
                    }
                } else {
                    c->stats.stale++;
                }
                const char *ko = vkl_st_meta_get(f, KEY[!flip]);
                if (!found && ko && make_key(c, image, !flip, key[!flip], e) == 0 &&
                    strcmp(ko, key[!flip]) == 0 && (other = (float *)malloc(n * sizeof *other)) &&
                    read_entry(f, TENSOR[!flip], shape, other, &why) != 0) {
                    free(other);
                    other = NULL;
                }
            }
        }
    }
    if (!found) {
        float *chw = NULL;
        int w, h;
        if ((rc = vkl_dataset_load_image(d, image, flip, &chw, &w, &h, e))) goto done;
        rc = c->o.encode(c->o.user, chw, w, h, out, e);
        free(chw);
        if (rc) {
            vkl_err_prefix(e, "encoding %s: ", im->path);
            goto done;
        }
        c->stats.encodes++;
        if (c->o.on_disk) {
            vkl_err why = {{0}};
            vkl_st_writer *wr = vkl_st_writer_new();
            int wrc = wr ? 0 : vkl_fail(&why, "out of memory");
            if (!wrc) wrc = vkl_st_writer_add_ref(wr, TENSOR[flip], VKL_F32, 3, shape, out, &why);
            if (!wrc) wrc = vkl_st_writer_meta(wr, KEY[flip], key[flip], &why);
            if (!wrc && other)
                wrc = vkl_st_writer_add_ref(wr, TENSOR[!flip], VKL_F32, 3, shape, other, &why);
            if (!wrc && other) wrc = vkl_st_writer_meta(wr, KEY[!flip], key[!flip], &why);
            if (!wrc) wrc = vkl_st_writer_meta(wr, "format", LATENT_FORMAT, &why);
            if (!wrc) wrc = vkl_st_writer_meta(wr, "image", im->rel, &why);
            /* the mapping of the old file must be gone before it is replaced */
            vkl_st_close(f);
            f = NULL;
            if (!wrc) wrc = vkl_st_writer_finish(wr, path, &why);
            vkl_st_writer_free(wr);
            if (wrc && !c->write_warned) {
                vkl_log(VKL_LOG_WARN, "cannot write latent cache %s (%s); keeping latents in "
                                      "memory only", path, why.msg);
                c->write_warned = 1;
            }
        }
    }
    if (c->o.in_memory) {
        *slot = (float *)malloc(n * sizeof **slot);
        if (!*slot) {
            rc = vkl_fail(e, "latent cache: out of memory");
            goto done;
        }
        memcpy(*slot, out, n * sizeof *out);
    }
done:
    vkl_st_close(f);
    free(other);
    free(path);
    return rc;
}
