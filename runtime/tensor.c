/* Tensors: shape/stride bookkeeping, persistent tensors with their own
 * memory, host upload/download with dtype conversion. */
#include "vkl_internal.h"

#include <stdlib.h>
#include <string.h>

int64_t vkl_tensor_nelem(const vkl_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

uint64_t vkl_tensor_nbytes(const vkl_tensor *t)
{
    /* 16-bit types are stored in 32-bit words by some shaders: round up to 4 bytes */
    uint64_t b = vkl_dtype_bytes(t->dtype, (uint64_t)vkl_tensor_nelem(t));
    return (b + 3) & ~3ull;
}

int vkl_tensor_is_contiguous(const vkl_tensor *t)
{
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

int64_t vkl_tensor_span(const vkl_tensor *t)
{
    int64_t s = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] == 0) return 0;
        s += (t->shape[i] - 1) * t->stride[i];
    }
    return s;
}

void vkl_tensor_describe(const vkl_tensor *t, char *buf, size_t n)
{
    size_t k = (size_t)snprintf(buf, n, "%s%s%s[", t->name[0] ? t->name : "", t->name[0] ? " " : "",
                                vkl_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

/* Fills shape/stride for a contiguous tensor; validates dims. */
int vkl_tensor_init_shape(vkl_tensor *t, vkl_dtype dt, int ndim, const int64_t *shape, vkl_err *e)
{
    if (ndim < 1 || ndim > VKL_MAX_DIMS) return vkl_fail(e, "a tensor has 1 to %d dimensions, not %d", VKL_MAX_DIMS, ndim);
    if ((unsigned)dt >= VKL_DTYPE_COUNT) return vkl_fail(e, "unknown element type %d", (int)dt);
    t->dtype = dt;
    t->ndim = ndim;
    int64_t s = 1;
    for (int i = VKL_MAX_DIMS - 1; i >= 0; i--) {
        int64_t d = i < ndim ? shape[i] : 1;
        if (d < 0 || d > (1ll << 40)) return vkl_fail(e, "dimension %d of a tensor is %lld", i, (long long)d);
        t->shape[i] = d;
        t->stride[i] = s;
        s *= d ? d : 1;
    }
    return 0;
}

vkl_tensor *vkl_tensor_new(vkl_ctx *c, vkl_dtype dt, int ndim, const int64_t *shape, vkl_err *e)
{
    vkl_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    if (vkl_tensor_init_shape(t, dt, ndim, shape, e) ||
        vkl_buffer_create(c, vkl_tensor_nbytes(t), VKL_MEM_DEVICE, &t->buf, e)) {
        free(t);
        return NULL;
    }
    t->id = -1;
    return t;
}

void vkl_tensor_free(vkl_tensor *t)
{
    if (!t) return;
    if (!t->graph) vkl_buffer_destroy(t->buf);
    free(t);
}

static int check_host_io(const vkl_tensor *t, vkl_err *e)
{
    if (!t->buf) return vkl_fail(e, "tensor has no memory yet (plan the graph first)");
    if (!vkl_tensor_is_contiguous(t)) return vkl_fail(e, "host copies need a contiguous tensor");
    return 0;
}

int vkl_tensor_upload(vkl_ctx *c, vkl_tensor *t, const void *src, vkl_dtype src_dt, vkl_err *e)
{
    (void)c;
    if (check_host_io(t, e)) return -1;
    size_t n = (size_t)vkl_tensor_nelem(t), bytes = (size_t)vkl_dtype_bytes(t->dtype, n);
    if (src_dt == t->dtype) return vkl_buffer_write(t->buf, t->offset, src, bytes, e);
    void *tmp = malloc(bytes + 4);
    if (!tmp) return vkl_fail(e, "out of host memory converting %zu elements", n);
    int rc = vkl_convert_host(src, src_dt, tmp, t->dtype, n, e);
    if (!rc) rc = vkl_buffer_write(t->buf, t->offset, tmp, bytes, e);
    free(tmp);
    return rc;
}

int vkl_tensor_download(vkl_ctx *c, const vkl_tensor *t, void *dst, vkl_dtype dst_dt, vkl_err *e)
{
    (void)c;
    if (check_host_io(t, e)) return -1;
    size_t n = (size_t)vkl_tensor_nelem(t), bytes = (size_t)vkl_dtype_bytes(t->dtype, n);
    if (dst_dt == t->dtype) return vkl_buffer_read(t->buf, t->offset, dst, bytes, e);
    void *tmp = malloc(bytes + 4);
    if (!tmp) return vkl_fail(e, "out of host memory converting %zu elements", n);
    int rc = vkl_buffer_read(t->buf, t->offset, tmp, bytes, e);
    if (!rc) rc = vkl_convert_host(tmp, t->dtype, dst, dst_dt, n, e);
    free(tmp);
    return rc;
}
