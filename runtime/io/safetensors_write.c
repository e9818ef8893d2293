/* Writing safetensors files. The file appears at its path complete or not at
 * all: everything goes to a temporary file in the same directory (so rename
 * stays within one file system), which is synced and then renamed over path. */
#include "safetensors_internal.h"
#include "io/text.h"
#include "io/dir.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    char *name;
    vkl_dtype dt;
    int ndim;
    int64_t shape[VKL_ST_MAX_DIMS];
    uint64_t nbytes;
    const void *data; /* owned copy, or the caller's buffer for add_ref */
    int owned;
} wtensor;

struct vkl_st_writer {
    wtensor *t;
    int n, cap;
    char **mkey, **mval;
    int nmeta, mcap;
};

vkl_st_writer *vkl_st_writer_new(void) { return calloc(1, sizeof(vkl_st_writer)); }

void vkl_st_writer_free(vkl_st_writer *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->t[i].name);
        if (w->t[i].owned) free((void *)w->t[i].data);
    }
    for (int i = 0; i < w->nmeta; i++) {
        free(w->mkey[i]);
        free(w->mval[i]);
    }
    free(w->t);
    free(w->mkey);
    free(w->mval);
    free(w);
}

static int check_text(const char *what, const char *s, vkl_err *e)
{
    if (!s) return vkl_fail(e, "safetensors writer: %s is NULL", what);
    size_t n = strlen(s);
    if (vkl_st__utf8_bad_at(s, n) < n)
        return vkl_fail(e, "safetensors writer: %s '%s' is not valid UTF-8", what, s);
    return 0;
}

static int add(vkl_st_writer *w, const char *name, vkl_dtype dt, int ndim, const int64_t *shape,
               const void *data, int copy, vkl_err *e)
{
    if (check_text("tensor name", name, e)) return -1;
    if (!name[0]) return vkl_fail(e, "safetensors writer: empty tensor name");
    if (!strcmp(name, "__metadata__"))
        return vkl_fail(e, "safetensors writer: '__metadata__' is reserved and cannot name a tensor");
    if ((unsigned)dt >= VKL_DTYPE_COUNT)
        return vkl_fail(e, "safetensors writer: tensor '%s': unknown element type %d", name, (int)dt);
    if (!vkl_dtype_size(dt))
        return vkl_fail(e, "safetensors writer: tensor '%s': %s has no safetensors dtype", name, vkl_dtype_name(dt));
    if (ndim < 0 || ndim > VKL_ST_MAX_DIMS)
        return vkl_fail(e, "safetensors writer: tensor '%s': %d dims (limit %d)", name, ndim, VKL_ST_MAX_DIMS);
    if (ndim > 0 && !shape) return vkl_fail(e, "safetensors writer: tensor '%s': NULL shape", name);
    uint64_t nelem = 1;
    int empty = 0, overflow = 0;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return vkl_fail(e, "safetensors writer: tensor '%s': negative dim %d (%" PRId64 ")", name, i, shape[i]);
        uint64_t d = (uint64_t)shape[i];
        if (!d) empty = 1;
        else if (nelem > UINT64_MAX / d) overflow = 1;
        nelem *= d;
    }
    if (empty) nelem = 0;
    size_t es = vkl_dtype_size(dt);
    if (overflow || nelem > SIZE_MAX / es)
        return vkl_fail(e, "safetensors writer: tensor '%s': size overflows", name);
    uint64_t nbytes = nelem * es;
    if (nbytes && !data) return vkl_fail(e, "safetensors writer: tensor '%s': NULL data", name);
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 64;
        wtensor *t = realloc(w->t, (size_t)cap * sizeof *t);
        if (!t) return vkl_fail(e, "safetensors writer: out of memory");
        w->t = t;
        w->cap = cap;
    }
    wtensor *t = &w->t[w->n];
    memset(t, 0, sizeof *t);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = nbytes;
    t->name = strdup(name);
    if (copy && nbytes) {
        void *p = malloc((size_t)nbytes);
        if (p) memcpy(p, data, (size_t)nbytes);
        t->data = p;
        t->owned = 1;
    } else {
        t->data = data;
    }
    if (!t->name || (nbytes && !t->data)) {
        free(t->name);
        if (t->owned) free((void *)t->data);
        return vkl_fail(e, "safetensors writer: tensor '%s': out of memory", name);
    }
    w->n++;
    return 0;
}

int vkl_st_writer_add(vkl_st_writer *w, const char *name, vkl_dtype dt, int ndim, const int64_t *shape,
                      const void *data, vkl_err *e)
{
    return add(w, name, dt, ndim, shape, data, 1, e);
}

int vkl_st_writer_add_ref(vkl_st_writer *w, const char *name, vkl_dtype dt, int ndim, const int64_t *shape,
                          const void *data, vkl_err *e)
{
    return add(w, name, dt, ndim, shape, data, 0, e);
}

int vkl_st_writer_meta(vkl_st_writer *w, const char *key, const char *value, vkl_err *e)
{
    if (check_text("metadata key", key, e) || check_text("metadata value", value, e)) return -1;
    for (int i = 0; i < w->nmeta; i++)
        if (!strcmp(w->mkey[i], key)) return vkl_fail(e, "safetensors writer: metadata key '%s' set twice", key);
    if (w->nmeta == w->mcap) {
        int cap = w->mcap ? w->mcap * 2 : 16;
        char **k = realloc(w->mkey, (size_t)cap * sizeof *k);
        if (k) w->mkey = k;
        char **v = realloc(w->mval, (size_t)cap * sizeof *v);
        if (v) w->mval = v;
        if (!k || !v) return vkl_fail(e, "safetensors writer: out of memory");
        w->mcap = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return vkl_fail(e, "safetensors writer: out of memory");
    }
    w->mkey[w->nmeta] = k;
    w->mval[w->nmeta] = v;
    w->nmeta++;
    return 0;
}

/* ---- header text */

static void put_json_string(vkl_strbuf *b, const char *s)
{
    vkl_strbuf_putn(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            vkl_strbuf_putn(b, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            vkl_strbuf_putn(b, esc, 6);
        } else {
            vkl_strbuf_putn(b, s, 1);
        }
    }
    vkl_strbuf_putn(b, "\"", 1);
}

static int build_header(const vkl_st_writer *w, vkl_strbuf *b)
{
    char num[64];
    vkl_strbuf_puts(b, "{");
    if (w->nmeta) {
        vkl_strbuf_puts(b, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) vkl_strbuf_puts(b, ",");
            put_json_string(b, w->mkey[i]);
            vkl_strbuf_puts(b, ":");
            put_json_string(b, w->mval[i]);
        }
        vkl_strbuf_puts(b, "}");
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        const wtensor *t = &w->t[i];
        if (i || w->nmeta) vkl_strbuf_puts(b, ",");
        put_json_string(b, t->name);
        vkl_strbuf_puts(b, ":{\"dtype\":\"");
        vkl_strbuf_puts(b, vkl_st__dtype_tag(t->dt));
        vkl_strbuf_puts(b, "\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%" PRId64 : "%" PRId64, t->shape[d]);
            vkl_strbuf_puts(b, num);
        }
        snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + t->nbytes);
        vkl_strbuf_puts(b, num);
        off += t->nbytes;
    }
    vkl_strbuf_puts(b, "}");
    /* Pad so the data starts 8-byte aligned in the file: readers that map the
     * file can then use f64/i64 tensors in place. */
    while ((8 + b->len) % 8) vkl_strbuf_puts(b, " ");
    return b->failed ? -1 : 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int check_unique(const vkl_st_writer *w, const char *path, vkl_err *e)
{
    char **names = malloc(((size_t)w->n + 1) * sizeof *names);
    if (!names) return vkl_fail(e, "writing %s: out of memory", path);
    for (int i = 0; i < w->n; i++) names[i] = w->t[i].name;
    qsort(names, (size_t)w->n, sizeof *names, name_cmp);
    int rc = 0;
    for (int i = 1; i < w->n && !rc; i++)
        if (!strcmp(names[i], names[i - 1]))
            rc = vkl_fail(e, "writing %s: tensor '%s': duplicate name (added twice)", path, names[i]);
    free(names);
    return rc;
}

/* ---- file */

static int write_all(int fd, const void *p, uint64_t n)
{
    const uint8_t *c = p;
    while (n) {
        size_t k = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t r = write(fd, c, k);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            if (r == 0) errno = EIO;
            return -1;
        }
        c += r;
        n -= (uint64_t)r;
    }
    return 0;
}

/* Opens path.tmp-XXXXXX exclusively. mkstemp would give mode 0600; open with
 * 0666 lets the umask decide, as for any other file the user creates. */
static int open_temp(const char *path, char **tmp_out)
{
    size_t len = strlen(path) + 16;
    char *tmp = malloc(len);
    if (!tmp) return -1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t seed = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_nsec ^
                    (uint64_t)ts.tv_sec << 20 ^ (uint64_t)(uintptr_t)tmp;
    for (int attempt = 0; attempt < 100; attempt++) {
        uint64_t x = (seed + (uint64_t)attempt) * 0xbf58476d1ce4e5b9ull;
        x ^= x >> 29;
        snprintf(tmp, len, "%s.tmp-%06x", path, (unsigned)(x & 0xffffff));
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd >= 0) {
            *tmp_out = tmp;
            return fd;
        }
        if (errno != EEXIST) break;
    }
    int err = errno;
    free(tmp);
    errno = err;
    return -1;
}

/* Makes the rename itself durable; failure here does not undo a complete file. */
static void sync_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = 0, dir)) : ".";
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int vkl_st_writer_finish(vkl_st_writer *w, const char *path, vkl_err *e)
{
    if (check_unique(w, path, e)) return -1;
    vkl_strbuf h = {0};
    if (build_header(w, &h)) {
        vkl_strbuf_free(&h);
        return vkl_fail(e, "writing %s: out of memory for the header", path);
    }
    char *tmp = NULL;
    int fd = open_temp(path, &tmp);
    if (fd < 0) {
        int err = errno;
        vkl_strbuf_free(&h);
        return vkl_fail(e, "writing %s: cannot create a temporary file next to it: %s", path, strerror(err));
    }
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    const char *step = "write";
    int ok = write_all(fd, len, 8) == 0 && write_all(fd, h.s, h.len) == 0;
    for (int i = 0; ok && i < w->n; i++) ok = write_all(fd, w->t[i].data, w->t[i].nbytes) == 0;
    if (ok && !(ok = fsync(fd) == 0)) step = "sync";
    int err = errno;
    if (close(fd) != 0 && ok) {
        ok = 0;
        err = errno;
        step = "close";
    }
    if (ok && !(ok = vkl_rename_durable(tmp, path) == 0)) {
        err = errno;
        step = "rename the temporary file onto";
    }
    vkl_strbuf_free(&h);
    if (!ok) {
        unlink(tmp);
        free(tmp);
        return vkl_fail(e, "writing %s: cannot %s it: %s (existing file left untouched)", path, step, strerror(err));
    }
    free(tmp);
    sync_dir(path);
    return 0;
}
