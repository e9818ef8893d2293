/* Epoch order and the resumable batch iterator. kohya forms batches inside a
 * bucket and shuffles both the batches and each bucket's contents every epoch
 * (BaseDataset.make_buckets / shuffle_buckets); here every shuffle is a pure
 * function of (seed, epoch), so the iterator's state is two integers. */
#include "train/dataset.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

uint32_t vkl_ds_rand_u32(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t slot,
                         uint32_t draw)
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {draw >> 2, slot, epoch, 0x44530000u | (purpose & 0xFFFF)};
    uint32_t out[4];
    vkl_philox4x32_10(ctr, key, out);
    return out[draw & 3];
}

double vkl_ds_rand_unit(uint64_t seed, uint32_t purpose, uint32_t epoch, uint32_t slot,
                        uint32_t draw)
{
    return vkl_ds_rand_u32(seed, purpose, epoch, slot, draw) * (1.0 / 4294967296.0);
}

/* Fisher-Yates from the end, as Python's random.shuffle walks. */
static void shuffle_ints(int *v, int n, uint64_t seed, uint32_t purpose, uint32_t epoch,
                         uint32_t slot)
{
    for (int i = n - 1; i > 0; i--) {
        uint32_t r = vkl_ds_rand_u32(seed, purpose, epoch, slot, (uint32_t)i);
        int j = (int)(((uint64_t)r * (uint64_t)(i + 1)) >> 32);
        int t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}

int vkl_ds_iter_init(vkl_ds_iter *it, const vkl_dataset *d, vkl_err *e)
{
    memset(it, 0, sizeof *it);
    it->d = d;
    it->plan = (vkl_ds_sample *)malloc(sizeof *it->plan * (size_t)d->samples_per_epoch);
    it->batch_start = (int *)malloc(sizeof(int) * (size_t)(d->batches_per_epoch + 1));
    it->batch_bucket = (int *)malloc(sizeof(int) * (size_t)(d->batches_per_epoch + 1));
    if (!it->plan || !it->batch_start || !it->batch_bucket) {
        vkl_ds_iter_free(it);
        return vkl_fail(e, "out of memory for the order of %d samples", d->samples_per_epoch);
    }
    return 0;
}

void vkl_ds_iter_free(vkl_ds_iter *it)
{
    free(it->plan);
    free(it->batch_start);
    free(it->batch_bucket);
    it->plan = NULL;
    it->batch_start = it->batch_bucket = NULL;
    it->plan_valid = 0;
}

static int make_plan(vkl_ds_iter *it, uint32_t epoch, vkl_err *e)
{
    const vkl_dataset *d = it->d;
    const int bs = d->opts.batch_size;
    const uint64_t seed = d->opts.seed;
    /* each bucket's samples, images repeated consecutively as kohya adds them */
    int *first = (int *)malloc(sizeof(int) * (size_t)(d->nbuckets + 1));
    int *members = (int *)malloc(sizeof(int) * (size_t)d->samples_per_epoch);
    int *fill = (int *)calloc((size_t)d->nbuckets, sizeof(int));
    int *batches = (int *)malloc(sizeof(int) * (size_t)d->batches_per_epoch);
    int *bfirst = (int *)malloc(sizeof(int) * (size_t)(d->nbuckets + 1));
    int rc = 0;
    if (!first || !members || !fill || !batches || !bfirst) {
        rc = vkl_fail(e, "out of memory ordering epoch %u", epoch);
        goto done;
    }
    first[0] = 0;
    bfirst[0] = 0;
    for (int b = 0; b < d->nbuckets; b++) {
        first[b + 1] = first[b] + d->buckets[b].count;
        bfirst[b + 1] = bfirst[b] + (d->buckets[b].count + bs - 1) / bs;
    }
    for (int i = 0; i < d->nimages; i++) {
        int b = d->images[i].bucket;
        for (int r = 0; r < d->subsets[d->images[i].subset].repeats; r++)
            members[first[b] + fill[b]++] = i;
    }
    for (int b = 0; b < d->nbuckets; b++)
        shuffle_ints(members + first[b], d->buckets[b].count, seed, VKL_DS_RNG_BUCKET, epoch,
                     (uint32_t)b);
    /* batch k of the epoch before shuffling = (bucket, batch within bucket) */
    for (int k = 0; k < d->batches_per_epoch; k++) batches[k] = k;
    shuffle_ints(batches, d->batches_per_epoch, seed, VKL_DS_RNG_BATCHES, epoch, 0);
    int at = 0;
    for (int k = 0; k < d->batches_per_epoch; k++) {
        int b = 0;
        while (bfirst[b + 1] <= batches[k]) b++;
        int lo = first[b] + (batches[k] - bfirst[b]) * bs;
        int hi = lo + bs < first[b + 1] ? lo + bs : first[b + 1];
        it->batch_start[k] = at;
        it->batch_bucket[k] = b;
        for (int j = lo; j < hi; j++, at++) {
            vkl_ds_sample *s = &it->plan[at];
            s->image = members[j];
            s->slot = (uint32_t)at;
            s->flip = d->opts.flip &&
                      vkl_ds_rand_unit(seed, VKL_DS_RNG_FLIP, epoch, (uint32_t)at, 0) < 0.5;
        }
    }
    it->batch_start[d->batches_per_epoch] = at;
    it->plan_epoch = epoch;
    it->plan_valid = 1;
done:
    free(first);
    free(members);
    free(fill);
    free(batches);
    free(bfirst);
    return rc;
}

int vkl_ds_iter_next(vkl_ds_iter *it, const vkl_ds_sample **samples, int *count, int *bucket,
                     uint32_t *epoch_out, vkl_err *e)
{
    if (it->batch >= it->d->batches_per_epoch) {
        if (it->epoch == UINT32_MAX) return vkl_fail(e, "epoch counter overflow");
        it->epoch++;
        it->batch = 0;
    }
    if (!it->plan_valid || it->plan_epoch != it->epoch)
        if (make_plan(it, it->epoch, e)) return -1;
    int k = it->batch++;
    *samples = it->plan + it->batch_start[k];
    *count = it->batch_start[k + 1] - it->batch_start[k];
    if (bucket) *bucket = it->batch_bucket[k];
    if (epoch_out) *epoch_out = it->epoch;
    return 0;
}

char *vkl_ds_iter_save(const vkl_ds_iter *it)
{
    char buf[256];
    snprintf(buf, sizeof buf,
             "{\"format\": \"vklora-data-iter\", \"version\": 1, \"seed\": \"%" PRIu64
             "\", \"epoch\": %u, \"batch\": %d, \"dataset\": \"%s\"}",
             it->d->opts.seed, it->epoch, it->batch, it->d->fingerprint);
    size_t n = strlen(buf) + 1;
    char *r = (char *)malloc(n);
    if (r) memcpy(r, buf, n);
    return r;
}

int vkl_ds_iter_restore(vkl_ds_iter *it, const char *json, vkl_err *e)
{
    cJSON *j = cJSON_Parse(json);
    if (!j) return vkl_fail(e, "data iterator state is not JSON");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(j, "format");
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(j, "version");
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(j, "seed");
    const cJSON *ep = cJSON_GetObjectItemCaseSensitive(j, "epoch");
    const cJSON *ba = cJSON_GetObjectItemCaseSensitive(j, "batch");
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(j, "dataset");
    int rc = 0;
    char want_seed[32];
    snprintf(want_seed, sizeof want_seed, "%" PRIu64, it->d->opts.seed);
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "vklora-data-iter") != 0 ||
        !cJSON_IsNumber(ver) || ver->valuedouble != 1)
        rc = vkl_fail(e, "data iterator state: not a vklora-data-iter version 1 object");
    else if (!cJSON_IsString(seed) || !cJSON_IsNumber(ep) || !cJSON_IsNumber(ba) ||
             !cJSON_IsString(ds))
        rc = vkl_fail(e, "data iterator state: seed, epoch, batch or dataset missing");
    else if (strcmp(seed->valuestring, want_seed) != 0)
        rc = vkl_fail(e, "data iterator state was saved with seed %s, this run has seed %s",
                      seed->valuestring, want_seed);
    else if (strcmp(ds->valuestring, it->d->fingerprint) != 0)
        rc = vkl_fail(e, "data iterator state belongs to another dataset (fingerprint %s, this "
                         "folder gives %s): images, repeats, buckets or batch size changed",
                      ds->valuestring, it->d->fingerprint);
    else if (!(ep->valuedouble >= 0 && ep->valuedouble <= UINT32_MAX) ||
             ep->valuedouble != (double)(uint32_t)ep->valuedouble ||
             !(ba->valuedouble >= 0 && ba->valuedouble <= it->d->batches_per_epoch) ||
             ba->valuedouble != (double)(int)ba->valuedouble)
        rc = vkl_fail(e, "data iterator state: epoch %g or batch %g out of range (%d batches "
                         "per epoch)",
                      ep->valuedouble, ba->valuedouble, it->d->batches_per_epoch);
    if (rc == 0) {
        it->epoch = (uint32_t)ep->valuedouble;
        it->batch = (int)ba->valuedouble;
    }
    cJSON_Delete(j);
    return rc;
}
