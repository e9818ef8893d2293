#include "dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int vkl_dist_active(const vkl_dist *d) { return d && d->size > 1; }
int vkl_dist_is_root(const vkl_dist *d) { return !d || d->rank == 0; }

int vkl_dist_sum_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e)
{
    return vkl_dist_active(d) && n ? d->sum_f64(d, buf, n, e) : 0;
}

int vkl_dist_max_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e)
{
    return vkl_dist_active(d) && n ? d->max_f64(d, buf, n, e) : 0;
}

int vkl_dist_bcast(vkl_dist *d, void *buf, size_t bytes, int root, vkl_err *e)
{
    return vkl_dist_active(d) && bytes ? d->bcast(d, buf, bytes, root, e) : 0;
}

int vkl_dist_any(vkl_dist *d, int flag, int *any, vkl_err *e)
{
    double v = flag ? 1.0 : 0.0;
    if (vkl_dist_max_f64(d, &v, 1, e)) return -1;
    *any = v != 0.0;
    return 0;
}

int vkl_dist_check_same(vkl_dist *d, const double *v, size_t n, const char *what, vkl_err *e)
{
    if (!vkl_dist_active(d) || !n) return 0;
    /* max of v and of -v in one call: the minimum is -max(-v) */
    double *mm = malloc(sizeof *mm * 2 * n);
    if (!mm) return vkl_fail(e, "out of host memory");
    for (size_t i = 0; i < n; i++) {
        /* NaN compares unequal to itself: agree on "not a number" as a value */
        mm[i] = isnan(v[i]) ? INFINITY : v[i];
        mm[n + i] = -mm[i];
    }
    int rc = vkl_dist_max_f64(d, mm, 2 * n, e);
    for (size_t i = 0; !rc && i < n; i++)
        if (mm[i] != -mm[n + i])
            rc = vkl_fail(e, "the ranks disagree on %s (value %zu: from %g to %g); their states have diverged", what, i,
                          -mm[n + i], mm[i]);
    free(mm);
    return rc;
}

/* Sums the bucket across ranks and writes each piece back to its tensor. */
static int flush(vkl_dist *d, vkl_ctx *c, vkl_tensor *const *t, int from, int to, float *bucket, size_t n, vkl_err *e)
{
    double t0 = now_s();
    if (d->sum_f32(d, bucket, n, e)) return -1;
    d->comm_seconds += now_s() - t0;
    d->comm_bytes += (uint64_t)n * sizeof(float);
    for (int i = from; i < to; i++) {
        if (vkl_tensor_upload(c, t[i], bucket, VKL_F32, e)) return -1;
        bucket += vkl_tensor_nelem(t[i]);
    }
    return 0;
}

int vkl_dist_sum_tensors(vkl_dist *d, vkl_ctx *c, vkl_tensor *const *t, int n, float scale, size_t bucket_bytes,
                         vkl_err *e)
{
    if (!vkl_dist_active(d)) return 0;
    double t0 = now_s();
    size_t cap = (bucket_bytes ? bucket_bytes : VKL_DIST_BUCKET_BYTES) / sizeof(float);
    for (int i = 0; i < n; i++) {
        if (t[i]->dtype != VKL_F32) return vkl_fail(e, "gradient sum across ranks: tensor %d is not f32", i);
        if ((size_t)vkl_tensor_nelem(t[i]) > cap) cap = (size_t)vkl_tensor_nelem(t[i]);
    }
    float *bucket = malloc(sizeof(float) * (cap ? cap : 1));
    if (!bucket) return vkl_fail(e, "out of host memory (a gradient bucket of %zu floats)", cap);
    int rc = 0, from = 0;
    size_t used = 0;
    for (int i = 0; i < n && !rc; i++) {
        size_t k = (size_t)vkl_tensor_nelem(t[i]);
        if (used + k > cap) {
            rc = flush(d, c, t, from, i, bucket, used, e);
            from = i;
            used = 0;
        }
        /* scale 0: a rank with nothing to add (its own gradient may be 0/0) */
        if (!rc && scale == 0.0f) memset(bucket + used, 0, sizeof(float) * k);
        else if (!rc) rc = vkl_tensor_download(c, t[i], bucket + used, VKL_F32, e);
        if (!rc && scale != 1.0f && scale != 0.0f)
            for (size_t j = 0; j < k; j++) bucket[used + j] *= scale;
        used += k;
    }
    if (!rc && used) rc = flush(d, c, t, from, n, bucket, used, e);
    free(bucket);
    d->sync_seconds += now_s() - t0;
    if (rc) vkl_err_prefix(e, "gradient sum across %d ranks: ", d->size);
    return rc;
}
