/* Opening safetensors files (mapped or in memory), looking tensors up and
 * reading them converted to the element type the caller wants. */
#include "safetensors_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static int finish_open(vkl_st_file *f, vkl_st_file **out, vkl_err *e)
{
    if (vkl_st__parse(f, e)) {
        vkl_st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int vkl_st_open_memory(const void *buf, size_t size, const char *label, vkl_st_file **out, vkl_err *e)
{
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && size) return vkl_fail(e, "%s: NULL buffer", label);
    vkl_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label))) {
        free(f);
        return vkl_fail(e, "%s: out of memory", label);
    }
    f->buf = buf;
    f->size = size;
    return finish_open(f, out, e);
}

int vkl_st_open(const char *path, vkl_st_file **out, vkl_err *e)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused below */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return vkl_fail(e, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return vkl_fail(e, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return vkl_fail(e, "%s: file too large to map", path);
    }
    vkl_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(path))) {
        free(f);
        close(fd);
        return vkl_fail(e, "%s: out of memory", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) { /* mmap refuses empty files; the header check reports them */
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int err = errno;
            close(fd);
            vkl_st_close(f);
            return vkl_fail(e, "%s: cannot map %zu bytes: %s", path, (size_t)st.st_size, strerror(err));
        }
        f->map = m;
        f->map_len = f->size;
        f->buf = m;
    }
    close(fd);
    return finish_open(f, out, e);
}

void vkl_st_close(vkl_st_file *f)
{
    if (!f) return;
    vkl_st__free_tables(f);
    if (f->map) munmap(f->map, f->map_len);
    free(f->label);
    free(f);
}

const char *vkl_st_path(const vkl_st_file *f) { return f->label; }
int vkl_st_count(const vkl_st_file *f) { return f->n; }

const vkl_st_tensor *vkl_st_at(const vkl_st_file *f, int i)
{
    return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const vkl_st_tensor *vkl_st_find(const vkl_st_file *f, const char *name)
{
    int lo = 0, hi = f->n;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, f->t[f->by_name[mid]].name);
        if (!c) return &f->t[f->by_name[mid]];
        if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return NULL;
}

int vkl_st_meta_count(const vkl_st_file *f) { return f->nmeta; }
const char *vkl_st_meta_key(const vkl_st_file *f, int i) { return i >= 0 && i < f->nmeta ? f->meta_key[i] : NULL; }
const char *vkl_st_meta_value(const vkl_st_file *f, int i) { return i >= 0 && i < f->nmeta ? f->meta_val[i] : NULL; }

const char *vkl_st_meta_get(const vkl_st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (!strcmp(f->meta_key[i], key)) return f->meta_val[i];
    return NULL;
}

int vkl_st_read(const vkl_st_file *f, const vkl_st_tensor *t, vkl_dtype dt, void *dst, vkl_err *e)
{
    if (!f || !t || t < f->t || t >= f->t + f->n)
        return vkl_fail(e, "%s: vkl_st_read: tensor does not belong to this file", f ? f->label : "?");
    if ((unsigned)dt >= VKL_DTYPE_COUNT || !vkl_dtype_size(dt))
        return vkl_fail(e, "%s: tensor '%s': cannot convert to element type %d", f->label, t->name, (int)dt);
    if (t->nelem == 0) return 0;
    if (t->nelem > SIZE_MAX / 8)
        return vkl_fail(e, "%s: tensor '%s': %llu elements do not fit in memory", f->label, t->name,
                        (unsigned long long)t->nelem);
    size_t n = (size_t)t->nelem, ss = vkl_dtype_size(t->dtype), ds = vkl_dtype_size(dt);
    /* Offsets in a file need not respect element alignment (a header length
     * that is not a multiple of 8 is legal); typed loads must, so misaligned
     * data goes through an aligned bounce buffer. */
    if ((uintptr_t)t->data % ss == 0) {
        if (vkl_convert_host(t->data, t->dtype, dst, dt, n, e)) goto fail;
        return 0;
    }
    uint64_t bounce[1024];
    size_t chunk = sizeof bounce / ss;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        memcpy(bounce, (const uint8_t *)t->data + i * ss, k * ss);
        if (vkl_convert_host(bounce, t->dtype, (uint8_t *)dst + i * ds, dt, k, e)) goto fail;
    }
    return 0;
fail:
    vkl_err_prefix(e, "%s: tensor '%s': ", f->label, t->name);
    return -1;
}

int vkl_st_read_f32(const vkl_st_file *f, const char *name, float *dst, uint64_t nelem, vkl_err *e)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) return vkl_fail(e, "%s: no tensor named '%s'", f->label, name);
    if (t->nelem != nelem)
        return vkl_fail(e, "%s: tensor '%s' has %llu elements, expected %llu", f->label, name,
                        (unsigned long long)t->nelem, (unsigned long long)nelem);
    return vkl_st_read(f, t, VKL_F32, dst, e);
}
