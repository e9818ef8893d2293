/* PNG text chunks (tEXt, zTXt, iTXt), read with the same validating chunk
 * walker as the image path, so a corrupt file is reported, not half-read.
 * tEXt and zTXt are Latin-1 and are converted to UTF-8; iTXt is UTF-8 already.
 * Malformed text chunks are skipped (they are ancillary; libpng only warns),
 * but compressed text that inflates past the limit is an error: the
 * PngSuite-style "text bomb" must not become a gigabyte allocation. */
#include "io/image_internal.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct {
    vkl_png_text *t;
    int n, cap;
    size_t total;
    const char *label;
} text_ctx;

static char *latin1_to_utf8(const uint8_t *s, size_t n)
{
    char *o = malloc(2 * n + 1), *p = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < 0x80) {
            *p++ = (char)s[i];
        } else {
            *p++ = (char)(0xc0 | s[i] >> 6);
            *p++ = (char)(0x80 | (s[i] & 0x3f));
        }
    }
    *p = 0;
    return o;
}

/* Inflates a zlib stream into a new NUL-terminated buffer of at most max bytes. */
static int inflate_text(const uint8_t *src, size_t n, size_t max, uint8_t **out, size_t *outlen,
                        const char *label, const char *key, vkl_err *e)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) return vkl_fail(e, "%s: zlib initialisation failed", label);
    size_t cap = n * 4 + 64 < max ? n * 4 + 64 : max, len = 0;
    uint8_t *buf = malloc(cap + 1);
    if (!buf) {
        inflateEnd(&z);
        return vkl_fail(e, "%s: out of memory", label);
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)n;
    int r;
    for (;;) {
        if (len == cap) {
            if (cap >= max) {
                free(buf);
                inflateEnd(&z);
                return vkl_fail(e, "%s: compressed PNG text '%s' inflates to more than %zu bytes "
                                "(a decompression bomb?)", label, key, max);
            }
            size_t ncap = cap * 2 < max ? cap * 2 : max;
            uint8_t *nb = realloc(buf, ncap + 1);
            if (!nb) {
                free(buf);
                inflateEnd(&z);
                return vkl_fail(e, "%s: out of memory", label);
            }
            buf = nb;
            cap = ncap;
        }
        z.next_out = buf + len;
        z.avail_out = (uInt)(cap - len);
        r = inflate(&z, Z_NO_FLUSH);
        len = cap - z.avail_out;
        if (r == Z_STREAM_END) break;
        if (r != Z_OK && !(r == Z_BUF_ERROR && len == cap)) {
            free(buf);
            inflateEnd(&z);
            return 1; /* corrupt or truncated: skip this chunk */
        }
    }
    inflateEnd(&z);
    buf[len] = 0;
    *out = buf;
    *outlen = len;
    return 0;
}

static int add(text_ctx *c, char *key, char *value, vkl_err *e)
{
    if (!key || !value) {
        free(key);
        free(value);
        return vkl_fail(e, "%s: out of memory", c->label);
    }
    c->total += strlen(value);
    if (c->total > VKL_PNG_TEXT_MAX_BYTES) {
        free(key);
        free(value);
        return vkl_fail(e, "%s: PNG text chunks hold more than %u bytes", c->label,
                        VKL_PNG_TEXT_MAX_BYTES);
    }
    if (c->n == c->cap) {
        int ncap = c->cap ? c->cap * 2 : 8;
        vkl_png_text *nt = realloc(c->t, (size_t)ncap * sizeof *nt);
        if (!nt) {
            free(key);
            free(value);
            return vkl_fail(e, "%s: out of memory", c->label);
        }
        c->t = nt;
        c->cap = ncap;
    }
    c->t[c->n].key = key;
    c->t[c->n].value = value;
    c->n++;
    return 0;
}

static int on_chunk(void *vctx, const char type[4], const uint8_t *d, uint32_t len, vkl_err *e)
{
    text_ctx *c = vctx;
    int is_t = !memcmp(type, "tEXt", 4), is_z = !memcmp(type, "zTXt", 4),
        is_i = !memcmp(type, "iTXt", 4);
    if (!is_t && !is_z && !is_i) return 0;
    const uint8_t *nul = memchr(d, 0, len);
    if (!nul || nul == d || nul - d > 79) return 0; /* malformed keyword: skip */
    size_t klen = (size_t)(nul - d);
    const uint8_t *rest = nul + 1;
    size_t rlen = len - klen - 1;
    char *key = latin1_to_utf8(d, klen);
    if (!key) return vkl_fail(e, "%s: out of memory", c->label);
    size_t room = VKL_PNG_TEXT_MAX_BYTES - c->total;
    if (room > VKL_PNG_TEXT_CHUNK_MAX_BYTES) room = VKL_PNG_TEXT_CHUNK_MAX_BYTES;
    if (is_t) return add(c, key, latin1_to_utf8(rest, rlen), e);
    if (is_z) {
        if (rlen < 1 || rest[0] != 0) return free(key), 0;
        uint8_t *v;
        size_t vlen;
        int r = inflate_text(rest + 1, rlen - 1, room, &v, &vlen, c->label, key, e);
        if (r) {
            free(key);
            return r < 0 ? -1 : 0;
        }
        char *u = latin1_to_utf8(v, vlen);
        free(v);
        return add(c, key, u, e);
    }
    /* iTXt: compression flag, method, language\0, translated keyword\0, text */
    if (rlen < 2) return free(key), 0;
    int comp = rest[0], method = rest[1];
    const uint8_t *p = rest + 2, *end = rest + rlen;
    for (int field = 0; field < 2; field++) {
        const uint8_t *z = memchr(p, 0, (size_t)(end - p));
        if (!z) return free(key), 0;
        p = z + 1;
    }
    size_t tlen = (size_t)(end - p);
    if (comp == 0) {
        char *v = malloc(tlen + 1);
        if (v) {
            memcpy(v, p, tlen);
            v[tlen] = 0;
        }
        return add(c, key, v, e);
    }
    if (comp != 1 || method != 0) return free(key), 0;
    uint8_t *v;
    size_t vlen;
    int r = inflate_text(p, tlen, room, &v, &vlen, c->label, key, e);
    if (r) {
        free(key);
        return r < 0 ? -1 : 0;
    }
    return add(c, key, (char *)v, e);
}

int vkl_png_read_texts_memory(const void *buf, size_t size, const char *label, vkl_png_text **out,
                              int *count, vkl_err *e)
{
    *out = NULL;
    *count = 0;
    text_ctx c = {0};
    c.label = label ? label : "(memory)";
    vkl_png_header h;
    if (vkl_png_walk(buf, size, c.label, &h, on_chunk, &c, e)) {
        vkl_png_texts_free(c.t, c.n);
        return -1;
    }
    *out = c.t;
    *count = c.n;
    return 0;
}

int vkl_png_read_texts_file(const char *path, vkl_png_text **out, int *count, vkl_err *e)
{
    *out = NULL;
    *count = 0;
    uint8_t *buf;
    size_t n;
    if (vkl_read_file_bytes(path, VKL_IMAGE_MAX_FILE_BYTES, &buf, &n, e)) return -1;
    int rc = vkl_png_read_texts_memory(buf, n, path, out, count, e);
    free(buf);
    return rc;
}

void vkl_png_texts_free(vkl_png_text *t, int count)
{
    for (int i = 0; i < count; i++) {
        free(t[i].key);
        free(t[i].value);
    }
    free(t);
}

const char *vkl_png_text_get(const vkl_png_text *t, int count, const char *key)
{
    for (int i = 0; i < count; i++)
        if (!strcmp(t[i].key, key)) return t[i].value;
    return NULL;
}
