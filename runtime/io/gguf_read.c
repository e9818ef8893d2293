/* Reading GGUF files. The whole header is parsed and checked before any
 * entry is handed out: every count against the bytes left (so a lying count
 * cannot make us allocate or loop beyond the file), every string length,
 * every value and block type, the alignment, every tensor's shape, size,
 * offset, alignment and its overlap with the other tensors. */
#include "gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ggml's own name limit (GGML_MAX_NAME, with the NUL) */
#define MAX_TENSOR_NAME 63
/* keys are short identifiers; a longer one is damage */
#define MAX_KEY 65535

/* ---- a bounds-checked cursor */

typedef struct cur {
    const uint8_t *p, *end;
} cur;

static int take(cur *c, int n, uint64_t *v)
{
    if ((size_t)(c->end - c->p) < (size_t)n) return -1;
    *v = vkl_gguf__le(c->p, n);
    c->p += n;
    return 0;
}

static size_t left(const cur *c) { return (size_t)(c->end - c->p); }

/* A string: length then bytes; a NUL-terminated copy is made when copy is set. */
static int take_str(cur *c, const uint8_t **s, uint64_t *len)
{
    if (take(c, 8, len)) return -1;
    if (*len > left(c)) return -2;
    *s = c->p;
    c->p += *len;
    return 0;
}

static char *dup_bytes(const uint8_t *s, uint64_t n)
{
    char *d = malloc((size_t)n + 1);
    if (!d) return NULL;
    memcpy(d, s, (size_t)n);
    d[n] = 0;
    return d;
}

/* ---- metadata */

static int fail_trunc(vkl_err *e, const char *L, const char *what)
{
    return vkl_fail(e, "%s: truncated: the file ends inside %s", L, what);
}

static int parse_scalar(cur *c, int type, vkl_gguf_kv *kv)
{
    uint64_t v;
    if (take(c, vkl_gguf__vtype_size(type), &v)) return -1;
    switch (type) {
    case VKL_GGUF_I8: kv->v.i = (int8_t)v; break;
    case VKL_GGUF_I16: kv->v.i = (int16_t)v; break;
    case VKL_GGUF_I32: kv->v.i = (int32_t)v; break;
    case VKL_GGUF_I64: kv->v.i = (int64_t)v; break;
    case VKL_GGUF_F32: { uint32_t w = (uint32_t)v; float f; memcpy(&f, &w, 4); kv->v.f = f; break; }
    case VKL_GGUF_F64: memcpy(&kv->v.f, &v, 8); break;
    default: kv->v.u = v; break;
    }
    return 0;
}

static int parse_array(vkl_gguf_file *f, cur *c, vkl_gguf_kv *kv, vkl_err *e)
{
    const char *L = f->label;
    uint64_t at, n;
    if (take(c, 4, &at) || take(c, 8, &n)) return fail_trunc(e, L, "an array header");
    if (at >= VKL_GGUF_VTYPE_COUNT)
        return vkl_fail(e, "%s: key '%s': unknown array element type %llu", L, kv->key, (unsigned long long)at);
    if (at == VKL_GGUF_ARRAY) return vkl_fail(e, "%s: key '%s': arrays of arrays are not supported", L, kv->key);
    kv->atype = (int)at;
    kv->n = n;
    kv->raw = c->p;
    if (at != VKL_GGUF_STRING) {
        if (n > left(c) / (uint64_t)vkl_gguf__vtype_size(at))
            return vkl_fail(e, "%s: key '%s': array of %llu %s values goes past the end of the file", L, kv->key,
                            (unsigned long long)n, vkl_gguf_vtype_name(at));
        c->p += n * (uint64_t)vkl_gguf__vtype_size(at);
        if (at == VKL_GGUF_BOOL)
            for (uint64_t i = 0; i < n; i++)
                if (kv->raw[i] > 1) return vkl_fail(e, "%s: key '%s': bool %llu is %u, not 0 or 1", L, kv->key,
                                                    (unsigned long long)i, kv->raw[i]);
        return 0;
    }
    /* each string takes at least its 8-byte length */
    if (n > left(c) / 8)
        return vkl_fail(e, "%s: key '%s': array of %llu strings goes past the end of the file", L, kv->key,
                        (unsigned long long)n);
    kv->strs = calloc((size_t)n + 1, sizeof *kv->strs);
    kv->lens = calloc((size_t)n + 1, sizeof *kv->lens);
    if (!kv->strs || !kv->lens) return vkl_fail(e, "%s: out of memory for key '%s'", L, kv->key);
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *s;
        int r = take_str(c, &s, &kv->lens[i]);
        if (r) return vkl_fail(e, "%s: key '%s': string %llu %s", L, kv->key, (unsigned long long)i,
                               r == -1 ? "is cut off by the end of the file" : "has a length past the end of the file");
        if (!(kv->strs[i] = dup_bytes(s, kv->lens[i]))) return vkl_fail(e, "%s: out of memory", L);
    }
    return 0;
}

static int parse_kv(vkl_gguf_file *f, cur *c, vkl_gguf_kv *kv, int index, vkl_err *e)
{
    const char *L = f->label;
    const uint8_t *s;
    uint64_t len, type;
    int r = take_str(c, &s, &len);
    if (r) return vkl_fail(e, "%s: metadata key %d %s", L, index,
                           r == -1 ? "is cut off by the end of the file" : "has a length past the end of the file");
    if (!len || len > MAX_KEY || memchr(s, 0, (size_t)len))
        return vkl_fail(e, "%s: metadata key %d is empty, too long or contains a NUL byte", L, index);
    if (!(kv->key = dup_bytes(s, len))) return vkl_fail(e, "%s: out of memory", L);
    if (take(c, 4, &type)) return fail_trunc(e, L, "a metadata value type");
    if (type >= VKL_GGUF_VTYPE_COUNT)
        return vkl_fail(e, "%s: key '%s': unknown value type %llu", L, kv->key, (unsigned long long)type);
    kv->type = (int)type;
    if (type == VKL_GGUF_ARRAY) return parse_array(f, c, kv, e);
    if (type == VKL_GGUF_STRING) {
        r = take_str(c, &s, &kv->len);
        if (r) return vkl_fail(e, "%s: key '%s': string value %s", L, kv->key,
                               r == -1 ? "is cut off by the end of the file" : "has a length past the end of the file");
        if (!(kv->s = dup_bytes(s, kv->len))) return vkl_fail(e, "%s: out of memory", L);
        return 0;
    }
    if (parse_scalar(c, kv->type, kv)) return fail_trunc(e, L, "a metadata value");
    if (type == VKL_GGUF_BOOL && kv->v.u > 1)
        return vkl_fail(e, "%s: key '%s': bool value is %llu, not 0 or 1", L, kv->key, (unsigned long long)kv->v.u);
    return 0;
}

/* ---- tensors */

static int parse_tensor_info(vkl_gguf_file *f, cur *c, vkl_gguf_tensor *t, int index, vkl_err *e)
{
    const char *L = f->label;
    const uint8_t *s;
    uint64_t len, nd, type;
    int r = take_str(c, &s, &len);
    if (r) return vkl_fail(e, "%s: tensor %d: name %s", L, index,
                           r == -1 ? "is cut off by the end of the file" : "has a length past the end of the file");
    if (!len || len > MAX_TENSOR_NAME || memchr(s, 0, (size_t)len))
        return vkl_fail(e, "%s: tensor %d: name is empty, longer than %d bytes or contains a NUL byte", L, index,
                        MAX_TENSOR_NAME);
    if (!(t->name = dup_bytes(s, len))) return vkl_fail(e, "%s: out of memory", L);
    if (take(c, 4, &nd)) return fail_trunc(e, L, "a tensor's dimension count");
    if (nd < 1 || nd > VKL_GGUF_MAX_DIMS)
        return vkl_fail(e, "%s: tensor '%s': %llu dims (1 to %d allowed)", L, t->name, (unsigned long long)nd,
                        VKL_GGUF_MAX_DIMS);
    t->ndim = (int)nd;
    t->nelem = 1;
    int overflow = 0;
    for (int i = 0; i < VKL_GGUF_MAX_DIMS; i++) t->ne[i] = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (take(c, 8, &t->ne[i])) return fail_trunc(e, L, "a tensor's shape");
        if (t->ne[i] > (uint64_t)INT64_MAX)
            return vkl_fail(e, "%s: tensor '%s': dim %d is %llu, out of range", L, t->name, i,
                            (unsigned long long)t->ne[i]);
        if (t->ne[i] && t->nelem > UINT64_MAX / t->ne[i]) overflow = 1;
        t->nelem *= t->ne[i];
    }
    if (take(c, 4, &type) || take(c, 8, &t->offset)) return fail_trunc(e, L, "a tensor's type and offset");
    /* an empty dimension makes an empty tensor however large the others are */
    int empty = 0;
    for (int i = 0; i < t->ndim; i++) empty |= !t->ne[i];
    if (empty) t->nelem = 0;
    else if (overflow) return vkl_fail(e, "%s: tensor '%s': element count overflows 64 bits", L, t->name);
    t->type = type > 1000 ? -1 : (int)type;
    int blk = vkl_gguf_type_block(t->type), bytes = vkl_gguf_type_bytes(t->type);
    if (!blk)
        return vkl_fail(e, "%s: tensor '%s': block type %llu is unknown or not supported (supported: F32 F16 BF16 "
                           "Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K)", L, t->name, (unsigned long long)type);
    if (t->ne[0] % (uint64_t)blk)
        return vkl_fail(e, "%s: tensor '%s': row length %llu is not a multiple of the %s block size %d", L, t->name,
                        (unsigned long long)t->ne[0], vkl_gguf_type_name(t->type), blk);
    uint64_t blocks = t->nelem / (uint64_t)blk;
    if (blocks > UINT64_MAX / (uint64_t)bytes)
        return vkl_fail(e, "%s: tensor '%s': byte size overflows 64 bits", L, t->name);
    t->nbytes = blocks * (uint64_t)bytes;
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const vkl_gguf_tensor *x = *(vkl_gguf_tensor *const *)a, *y = *(vkl_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static const vkl_gguf_file *sort_file;
static int cmp_name(const void *a, const void *b)
{
    return strcmp(sort_file->t[*(const int *)a].name, sort_file->t[*(const int *)b].name);
}
static int cmp_key(const void *a, const void *b)
{
    return strcmp(sort_file->kv[*(const int *)a].key, sort_file->kv[*(const int *)b].key);
}

/* Places the tensors in the data section: alignment, bounds, no overlap, unique names. */
static int place_tensors(vkl_gguf_file *f, uint64_t data_start, vkl_err *e)
{
    const char *L = f->label;
    uint64_t data_size = f->size - data_start;
    for (int i = 0; i < f->nt; i++) {
        vkl_gguf_tensor *t = &f->t[i];
        if (t->offset % f->alignment)
            return vkl_fail(e, "%s: tensor '%s': offset %llu is not a multiple of the alignment %u", L, t->name,
                            (unsigned long long)t->offset, f->alignment);
        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return vkl_fail(e, "%s: tensor '%s': data [%llu, +%llu bytes) goes past the end of the file (%llu data "
                               "bytes; truncated?)", L, t->name, (unsigned long long)t->offset,
                            (unsigned long long)t->nbytes, (unsigned long long)data_size);
        t->data = f->buf + data_start + t->offset;
    }
    vkl_gguf_tensor **o = malloc(sizeof *o * ((size_t)f->nt + 1));
    if (!o) return vkl_fail(e, "%s: out of memory", L);
    for (int i = 0; i < f->nt; i++) o[i] = &f->t[i];
    qsort(o, (size_t)f->nt, sizeof *o, cmp_offset);
    for (int i = 1; i < f->nt; i++) {
        if (o[i]->offset < o[i - 1]->offset + o[i - 1]->nbytes) {
            int rc = vkl_fail(e, "%s: tensors '%s' and '%s' overlap (data at %llu and %llu, the first is %llu bytes)",
                              L, o[i - 1]->name, o[i]->name, (unsigned long long)o[i - 1]->offset,
                              (unsigned long long)o[i]->offset, (unsigned long long)o[i - 1]->nbytes);
            free(o);
            return rc;
        }
    }
    free(o);
    if (!(f->by_name = malloc(sizeof(int) * ((size_t)f->nt + 1)))) return vkl_fail(e, "%s: out of memory", L);
    for (int i = 0; i < f->nt; i++) f->by_name[i] = i;
    sort_file = f;
    qsort(f->by_name, (size_t)f->nt, sizeof(int), cmp_name);
    for (int i = 1; i < f->nt; i++)
        if (!strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name))
            return vkl_fail(e, "%s: tensor name '%s' appears twice", L, f->t[f->by_name[i]].name);
    return 0;
}

static int parse(vkl_gguf_file *f, vkl_err *e)
{
    const char *L = f->label;
    cur c = {f->buf, f->buf + f->size};
    uint64_t version, nt, nkv;
    if (f->size < 4 || memcmp(f->buf, "GGUF", 4))
        return vkl_fail(e, "%s: not a GGUF file (no \"GGUF\" magic at the start)", L);
    c.p += 4;
    if (take(&c, 4, &version) || take(&c, 8, &nt) || take(&c, 8, &nkv)) return fail_trunc(e, L, "the file header");
    if (version != 2 && version != 3)
        return vkl_fail(e, "%s: GGUF version %llu is not supported (2 and 3 are)", L, (unsigned long long)version);
    f->version = (uint32_t)version;
    /* smallest entries: key length + type + 1-byte value; a tensor
     * info is at least 8 + 1 + 4 + 8 + 4 + 8 bytes */
    if (nkv > left(&c) / 13)
        return vkl_fail(e, "%s: %llu metadata entries cannot fit in the file (truncated or a lying count)", L,
                        (unsigned long long)nkv);
    if (nt > left(&c) / 33)
        return vkl_fail(e, "%s: %llu tensors cannot fit in the file (truncated or a lying count)", L,
                        (unsigned long long)nt);
    f->kv = calloc((size_t)nkv + 1, sizeof *f->kv);
    f->t = calloc((size_t)nt + 1, sizeof *f->t);
    if (!f->kv || !f->t) return vkl_fail(e, "%s: out of memory", L);
    for (uint64_t i = 0; i < nkv; i++) {
        f->nkv = (int)i + 1;
        if (parse_kv(f, &c, &f->kv[i], (int)i, e)) return -1;
    }
    if (!(f->kv_by_key = malloc(sizeof(int) * ((size_t)nkv + 1)))) return vkl_fail(e, "%s: out of memory", L);
    for (int i = 0; i < f->nkv; i++) f->kv_by_key[i] = i;
    sort_file = f;
    qsort(f->kv_by_key, (size_t)f->nkv, sizeof(int), cmp_key);
    for (int i = 1; i < f->nkv; i++)
        if (!strcmp(f->kv[f->kv_by_key[i]].key, f->kv[f->kv_by_key[i - 1]].key))
            return vkl_fail(e, "%s: metadata key '%s' appears twice", L, f->kv[f->kv_by_key[i]].key);
    f->alignment = VKL_GGUF_DEFAULT_ALIGNMENT;
    const vkl_gguf_kv *al = vkl_gguf_kv_find(f, "general.alignment");
    if (al) {
        if (al->type != VKL_GGUF_U32)
            return vkl_fail(e, "%s: general.alignment is a %s, not a u32", L, vkl_gguf_vtype_name(al->type));
        if (!al->v.u || (al->v.u & (al->v.u - 1)))
            return vkl_fail(e, "%s: general.alignment %llu is not a power of two", L, (unsigned long long)al->v.u);
        f->alignment = (uint32_t)al->v.u;
    }
    for (uint64_t i = 0; i < nt; i++) {
        f->nt = (int)i + 1;
        if (parse_tensor_info(f, &c, &f->t[i], (int)i, e)) return -1;
    }
    uint64_t pos = (uint64_t)(c.p - f->buf);
    uint64_t data_start = (pos + f->alignment - 1) / f->alignment * f->alignment;
    if (data_start > f->size) {
        if (!nt) data_start = f->size; /* a metadata-only file may end unpadded */
        else return fail_trunc(e, L, "the padding before the tensor data");
    }
    return place_tensors(f, data_start, e);
}

/* ---- open / close */

void vkl_gguf_close(vkl_gguf_file *f)
{
    if (!f) return;
    for (int i = 0; i < f->nkv; i++) {
        vkl_gguf_kv *kv = &f->kv[i];
        free((char *)kv->key);
        free((char *)kv->s);
        if (kv->strs)
            for (uint64_t j = 0; j < kv->n; j++) free((char *)kv->strs[j]);
        free(kv->strs);
        free(kv->lens);
    }
    for (int i = 0; i < f->nt; i++) free((char *)f->t[i].name);
    free(f->kv);
    free(f->t);
    free(f->by_name);
    free(f->kv_by_key);
    if (f->map) munmap(f->map, f->size);
    free(f->label);
    free(f);
}

static int finish_open(vkl_gguf_file *f, vkl_gguf_file **out, vkl_err *e)
{
    if (parse(f, e)) {
        vkl_gguf_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int vkl_gguf_open_memory(const void *buf, size_t size, const char *label, vkl_gguf_file **out, vkl_err *e)
{
    *out = NULL;
    if (!label) label = "<memory>";
    if (!buf && size) return vkl_fail(e, "%s: NULL buffer", label);
    vkl_gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(label))) {
        free(f);
        return vkl_fail(e, "%s: out of memory", label);
    }
    f->buf = buf ? buf : (const uint8_t *)"";
    f->size = size;
    return finish_open(f, out, e);
}

int vkl_gguf_open(const char *path, vkl_gguf_file **out, vkl_err *e)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return vkl_fail(e, "%s: not a regular file", path);
    }
    vkl_gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->label = strdup(path))) {
        free(f);
        close(fd);
        return vkl_fail(e, "%s: out of memory", path);
    }
    f->size = (size_t)st.st_size;
    f->buf = (const uint8_t *)"";
    if (f->size) {
        void *m = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int err = errno;
            close(fd);
            vkl_gguf_close(f);
            return vkl_fail(e, "%s: cannot map %zu bytes: %s", path, (size_t)st.st_size, strerror(err));
        }
        f->map = m;
        f->buf = m;
    }
    close(fd);
    return finish_open(f, out, e);
}
