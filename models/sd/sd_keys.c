/* Name -> shape lists of checkpoint tensors, sorted for lookup. */
#include "sd/sd_layout.h"

#include <stdlib.h>
#include <string.h>

int vkl_sd_keys_add(vkl_sd_keys *k, const char *prefix, const char *name, int file, int ndim,
                    const int64_t *shape, const vkl_st_tensor *t, vkl_err *e)
{
    if (ndim < 0 || ndim > VKL_ST_MAX_DIMS)
        return vkl_fail(e, "tensor %s: %d dimensions", name, ndim);
    if (k->n == k->cap) {
        int cap = k->cap ? 2 * k->cap : 256;
        vkl_sd_key *v = realloc(k->v, (size_t)cap * sizeof *v);
        if (!v) return vkl_fail(e, "out of memory listing tensors");
        k->v = v;
        k->cap = cap;
    }
    size_t lp = strlen(prefix), ln = strlen(name);
    char *s = malloc(lp + ln + 1);
    if (!s) return vkl_fail(e, "out of memory listing tensors");
    memcpy(s, prefix, lp);
    memcpy(s + lp, name, ln + 1);
    vkl_sd_key *x = &k->v[k->n++];
    memset(x, 0, sizeof *x);
    x->name = s;
    x->file = file;
    x->ndim = ndim;
    for (int i = 0; i < ndim; i++) x->shape[i] = shape[i];
    x->t = t;
    free(k->order);
    k->order = NULL;
    return 0;
}

int vkl_sd_keys_add_file(vkl_sd_keys *k, const vkl_st_file *f, const char *prefix, int file,
                         vkl_err *e)
{
    int n = vkl_st_count(f);
    for (int i = 0; i < n; i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        if (vkl_sd_keys_add(k, prefix, t->name, file, t->ndim, t->shape, t, e)) return -1;
    }
    return 0;
}

static const vkl_sd_keys *sort_keys;
static int cmp_order(const void *a, const void *b)
{
    return strcmp(sort_keys->v[*(const int *)a].name, sort_keys->v[*(const int *)b].name);
}

int vkl_sd_keys_finish(vkl_sd_keys *k, vkl_err *e)
{
    free(k->order);
    k->order = malloc((size_t)(k->n ? k->n : 1) * sizeof *k->order);
    if (!k->order) return vkl_fail(e, "out of memory sorting tensor names");
    for (int i = 0; i < k->n; i++) k->order[i] = i;
    /* qsort has no context argument in C11; the list is only sorted here, once. */
    sort_keys = k;
    qsort(k->order, (size_t)k->n, sizeof *k->order, cmp_order);
    sort_keys = NULL;
    for (int i = 1; i < k->n; i++)
        if (!strcmp(k->v[k->order[i - 1]].name, k->v[k->order[i]].name))
            return vkl_fail(e, "tensor %s appears twice", k->v[k->order[i]].name);
    return 0;
}

int vkl_sd_keys_find(const vkl_sd_keys *k, const char *name)
{
    if (!k->order) return -1;
    int lo = 0, hi = k->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(k->v[k->order[mid]].name, name);
        if (!c) return k->order[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

int vkl_sd_keys_count_prefix(const vkl_sd_keys *k, const char *prefix)
{
    size_t lp = strlen(prefix);
    int n = 0;
    for (int i = 0; i < k->n; i++) n += !strncmp(k->v[i].name, prefix, lp);
    return n;
}

const int64_t *vkl_sd_keys_shape(const vkl_sd_keys *k, const char *name, int *ndim)
{
    int i = vkl_sd_keys_find(k, name);
    if (i < 0) return NULL;
    if (ndim) *ndim = k->v[i].ndim;
    return k->v[i].shape;
}

void vkl_sd_keys_free(vkl_sd_keys *k)
{
    for (int i = 0; i < k->n; i++) free(k->v[i].name);
    free(k->v);
    free(k->order);
    memset(k, 0, sizeof *k);
}
