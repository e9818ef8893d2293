/* Writing GGUF (version 3) files. Metadata is serialised as it is added (so
 * a duplicate key is refused at once); tensors are copied and laid out at
 * finish, each at a multiple of the alignment, and the file goes to a
 * temporary name next to the target, is synced, then renamed over it. */
#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct sbuf {
    uint8_t *p;
    size_t n, cap;
} sbuf;

typedef struct wtensor {
    char *name;
    int type, ndim;
    uint64_t ne[VKL_GGUF_MAX_DIMS];
    uint8_t *data;
    uint64_t nbytes;
} wtensor;

struct vkl_gguf_writer {
    sbuf meta;
    int nkv;
    char **keys;
    wtensor *t;
    int nt;
    uint32_t alignment;
};

static const int scalar_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static int put(sbuf *b, const void *src, size_t n)
{
    if (n > SIZE_MAX - b->n) return -1;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return -1;
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

static int put_le(sbuf *b, uint64_t v, int n)
{
    uint8_t x[8];
    for (int i = 0; i < n; i++) x[i] = (uint8_t)(v >> (8 * i));
    return put(b, x, (size_t)n);
}

static int put_str(sbuf *b, const char *s)
{
    size_t n = strlen(s);
    return put_le(b, n, 8) || put(b, s, n);
}

vkl_gguf_writer *vkl_gguf_writer_new(void)
{
    vkl_gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = VKL_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void vkl_gguf_writer_free(vkl_gguf_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->nkv; i++) free(w->keys[i]);
    for (int i = 0; i < w->nt; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->keys);
    free(w->t);
    free(w->meta.p);
    free(w);
}

/* Takes back the entry begun last (its key and bytes) when its value could
 * not be written, so a failed call leaves the writer as it was. */
static int undo_kv(vkl_gguf_writer *w, size_t meta_n, vkl_err *e)
{
    w->meta.n = meta_n;
    free(w->keys[--w->nkv]);
    return vkl_fail(e, "GGUF writer: out of memory");
}

/* Records the key and writes it with the value type; the value follows. */
static int begin_kv(vkl_gguf_writer *w, const char *key, int vtype, vkl_err *e)
{
    if (!key || !key[0]) return vkl_fail(e, "GGUF writer: empty metadata key");
    for (int i = 0; i < w->nkv; i++)
        if (!strcmp(w->keys[i], key)) return vkl_fail(e, "GGUF writer: metadata key '%s' set twice", key);
    char **k = realloc(w->keys, sizeof *k * ((size_t)w->nkv + 1));
    if (!k) return vkl_fail(e, "GGUF writer: out of memory");
    w->keys = k;
    if (!(k[w->nkv] = strdup(key))) return vkl_fail(e, "GGUF writer: out of memory");
    w->nkv++;
    size_t n0 = w->meta.n;
    if (put_str(&w->meta, key) || put_le(&w->meta, (uint64_t)vtype, 4)) return undo_kv(w, n0, e);
    return 0;
}

static int numeric(int t) { return t >= 0 && t < VKL_GGUF_VTYPE_COUNT && scalar_size[t] > 0; }

static int put_scalar(sbuf *b, int vtype, const void *val)
{
    uint64_t v = 0;
    switch (scalar_size[vtype]) {
    case 1: v = *(const uint8_t *)val; break;
    case 2: v = *(const uint16_t *)val; break;
    case 4: v = *(const uint32_t *)val; break;
    default: v = *(const uint64_t *)val; break;
    }
    return put_le(b, v, scalar_size[vtype]);
}

int vkl_gguf_w_scalar(vkl_gguf_writer *w, const char *key, int vtype, const void *val, vkl_err *e)
{
    if (!numeric(vtype)) return vkl_fail(e, "GGUF writer: '%s': value type %d is not a scalar type", key, vtype);
    if (vtype == VKL_GGUF_BOOL && *(const uint8_t *)val > 1)
        return vkl_fail(e, "GGUF writer: '%s': bool must be 0 or 1", key);
    int is_alignment = !strcmp(key, "general.alignment");
    if (is_alignment && (vtype != VKL_GGUF_U32 || !*(const uint32_t *)val ||
                         (*(const uint32_t *)val & (*(const uint32_t *)val - 1))))
        return vkl_fail(e, "GGUF writer: general.alignment must be a u32 power of two");
    size_t n0 = w->meta.n;
    if (begin_kv(w, key, vtype, e)) return -1;
    if (put_scalar(&w->meta, vtype, val)) return undo_kv(w, n0, e);
    if (is_alignment) w->alignment = *(const uint32_t *)val;
    return 0;
}

int vkl_gguf_w_u32(vkl_gguf_writer *w, const char *key, uint32_t v, vkl_err *e)
{
    return vkl_gguf_w_scalar(w, key, VKL_GGUF_U32, &v, e);
}
int vkl_gguf_w_f32(vkl_gguf_writer *w, const char *key, float v, vkl_err *e)
{
    return vkl_gguf_w_scalar(w, key, VKL_GGUF_F32, &v, e);
}
int vkl_gguf_w_bool(vkl_gguf_writer *w, const char *key, int v, vkl_err *e)
{
    uint8_t b = v != 0;
    return vkl_gguf_w_scalar(w, key, VKL_GGUF_BOOL, &b, e);
}

int vkl_gguf_w_str(vkl_gguf_writer *w, const char *key, const char *s, vkl_err *e)
{
    size_t n0 = w->meta.n;
    if (begin_kv(w, key, VKL_GGUF_STRING, e)) return -1;
    return put_str(&w->meta, s) ? undo_kv(w, n0, e) : 0;
}

int vkl_gguf_w_array(vkl_gguf_writer *w, const char *key, int atype, uint64_t n, const void *vals, vkl_err *e)
{
    if (atype != VKL_GGUF_STRING && !numeric(atype))
        return vkl_fail(e, "GGUF writer: '%s': arrays of %s are not written", key, vkl_gguf_vtype_name(atype));
    size_t n0 = w->meta.n;
    if (begin_kv(w, key, VKL_GGUF_ARRAY, e)) return -1;
    int bad = put_le(&w->meta, (uint64_t)atype, 4) || put_le(&w->meta, n, 8);
    for (uint64_t i = 0; i < n && !bad; i++) {
        if (atype == VKL_GGUF_STRING) bad = put_str(&w->meta, ((const char *const *)vals)[i]);
        else bad = put_scalar(&w->meta, atype, (const uint8_t *)vals + i * (uint64_t)scalar_size[atype]);
    }
    return bad ? undo_kv(w, n0, e) : 0;
}

int vkl_gguf_w_tensor(vkl_gguf_writer *w, const char *name, int type, int ndim, const uint64_t *ne, const void *data,
                      uint64_t nbytes, vkl_err *e)
{
    int blk = vkl_gguf_type_block(type);
    if (!blk) return vkl_fail(e, "GGUF writer: tensor '%s': block type %d is not supported", name, type);
    if (!name[0] || strlen(name) > 63) return vkl_fail(e, "GGUF writer: tensor name '%s' is empty or too long", name);
    if (ndim < 1 || ndim > VKL_GGUF_MAX_DIMS) return vkl_fail(e, "GGUF writer: tensor '%s': %d dims", name, ndim);
    for (int i = 0; i < w->nt; i++)
        if (!strcmp(w->t[i].name, name)) return vkl_fail(e, "GGUF writer: tensor '%s' added twice", name);
    uint64_t nelem = 1;
    for (int i = 0; i < ndim; i++) nelem *= ne[i];
    if (ne[0] % (uint64_t)blk)
        return vkl_fail(e, "GGUF writer: tensor '%s': row length %llu is not a multiple of the %s block size %d", name,
                        (unsigned long long)ne[0], vkl_gguf_type_name(type), blk);
    if (nelem / (uint64_t)blk * (uint64_t)vkl_gguf_type_bytes(type) != nbytes)
        return vkl_fail(e, "GGUF writer: tensor '%s': %llu bytes given, its shape in %s needs %llu", name,
                        (unsigned long long)nbytes, vkl_gguf_type_name(type),
                        (unsigned long long)(nelem / (uint64_t)blk * (uint64_t)vkl_gguf_type_bytes(type)));
    wtensor *t = realloc(w->t, sizeof *t * ((size_t)w->nt + 1));
    if (!t) return vkl_fail(e, "GGUF writer: out of memory");
    w->t = t;
    wtensor *x = &t[w->nt];
    memset(x, 0, sizeof *x);
    x->name = strdup(name);
    x->data = malloc(nbytes ? nbytes : 1);
    if (!x->name || !x->data) {
        free(x->name);
        free(x->data);
        return vkl_fail(e, "GGUF writer: out of memory for tensor '%s'", name);
    }
    memcpy(x->data, data, nbytes);
    x->type = type;
    x->ndim = ndim;
    x->nbytes = nbytes;
    for (int i = 0; i < VKL_GGUF_MAX_DIMS; i++) x->ne[i] = i < ndim ? ne[i] : 1;
    w->nt++;
    return 0;
}

static uint64_t align_up(uint64_t x, uint32_t a) { return (x + a - 1) / a * a; }

static int build(const vkl_gguf_writer *w, sbuf *b)
{
    static const uint8_t zeros[256];
    int bad = put(b, "GGUF", 4) || put_le(b, 3, 4) || put_le(b, (uint64_t)w->nt, 8) || put_le(b, (uint64_t)w->nkv, 8) ||
              put(b, w->meta.p, w->meta.n);
    uint64_t off = 0;
    for (int i = 0; i < w->nt && !bad; i++) {
        const wtensor *t = &w->t[i];
        bad = put_str(b, t->name) || put_le(b, (uint64_t)t->ndim, 4);
        for (int d = 0; d < t->ndim && !bad; d++) bad = put_le(b, t->ne[d], 8);
        bad = bad || put_le(b, (uint64_t)t->type, 4) || put_le(b, off, 8);
        off = align_up(off + t->nbytes, w->alignment);
    }
    for (int i = 0; i <= w->nt && !bad; i++) {
        /* padding up to the data section, then after each tensor */
        uint64_t pad = align_up(b->n, w->alignment) - b->n;
        if (i == w->nt && !w->nt) break;
        while (pad && !bad) {
            size_t k = pad < sizeof zeros ? (size_t)pad : sizeof zeros;
            bad = put(b, zeros, k);
            pad -= k;
        }
        if (i < w->nt) bad = bad || put(b, w->t[i].data, w->t[i].nbytes);
    }
    return bad ? -1 : 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int vkl_gguf_writer_finish(vkl_gguf_writer *w, const char *path, vkl_err *e)
{
    sbuf b = {0};
    if (build(w, &b)) {
        free(b.p);
        return vkl_fail(e, "writing %s: out of memory", path);
    }
    size_t len = strlen(path) + 24;
    char *tmp = malloc(len);
    int fd = -1;
    if (tmp) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
            snprintf(tmp, len, "%s.tmp-%d-%ld", path, (int)getpid(), (long)(ts.tv_nsec + attempt) % 1000000);
            fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
            if (fd < 0 && errno != EEXIST) break;
        }
    }
    if (fd < 0) {
        int err = errno;
        free(tmp);
        free(b.p);
        return vkl_fail(e, "writing %s: cannot create a temporary file next to it: %s", path, strerror(err));
    }
    const char *step = "write";
    int ok = write_all(fd, b.p, b.n) == 0;
    if (ok && !(ok = fsync(fd) == 0)) step = "sync";
    int err = errno;
    if (close(fd) && ok) ok = 0, err = errno, step = "close";
    if (ok && !(ok = rename(tmp, path) == 0)) err = errno, step = "rename the temporary file onto";
    if (!ok) unlink(tmp);
    free(tmp);
    free(b.p);
    if (!ok) return vkl_fail(e, "writing %s: cannot %s it: %s (existing file left untouched)", path, step, strerror(err));
    return 0;
}
