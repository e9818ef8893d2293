#include "io/text.h"

#include <cjson/cJSON.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int vkl_read_text_file(const char *path, size_t max_bytes, char **out, size_t *size, vkl_err *e)
{
    *out = NULL;
    if (size) *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) || S_ISDIR(st.st_mode)) {
        fclose(f);
        return vkl_fail(e, "%s: a folder, not a file", path);
    }
    int regular = S_ISREG(st.st_mode);
    if (regular && (uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return vkl_fail(e, "%s: %lld bytes, over the %zu-byte limit of this kind of file", path, (long long)st.st_size,
                        max_bytes);
    }
    /* room for one byte past the size (or the limit): reading it means the
     * file grew, or the stream is too long */
    size_t limit = max_bytes + 2;
    size_t cap = regular ? (size_t)st.st_size + 2 : (limit < 65536 ? limit : 65536), n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fclose(f);
            return vkl_fail(e, "%s: out of host memory", path);
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (n > max_bytes) {
            free(buf);
            fclose(f);
            return vkl_fail(e, "%s: longer than the %zu-byte limit of this kind of file", path, max_bytes);
        }
        if (n < cap - 1) break; /* end of file, or an error */
        size_t grown = cap < limit / 2 ? cap * 2 : limit;
        char *more = realloc(buf, grown);
        if (!more) free(buf);
        buf = more;
        cap = grown;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return vkl_fail(e, "%s: read error", path);
    }
    buf[n] = 0;
    *out = buf;
    if (size) *size = n;
    return 0;
}

int vkl_read_file_bytes(const char *path, size_t max_bytes, uint8_t **out, size_t *size, vkl_err *e)
{
    char *text;
    if (vkl_read_text_file(path, max_bytes, &text, size, e)) {
        *out = NULL;
        return -1;
    }
    *out = (uint8_t *)text;
    return 0;
}

/* Room for n more bytes and the NUL; 0, or -1 with failed set. */
static int reserve(vkl_strbuf *b, size_t n)
{
    if (b->failed) return -1;
    if (n > SIZE_MAX / 2 - b->len) {
        b->failed = 1;
        return -1;
    }
    if (b->len + n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
        b->failed = 1;
        return -1;
    }
    b->s = s;
    b->cap = cap;
    return 0;
}

void vkl_strbuf_putn(vkl_strbuf *b, const void *bytes, size_t n)
{
    if (reserve(b, n)) return;
    if (n) memcpy(b->s + b->len, bytes, n);
    b->len += n;
    b->s[b->len] = 0;
}

void vkl_strbuf_puts(vkl_strbuf *b, const char *s)
{
    vkl_strbuf_putn(b, s, strlen(s));
}

void vkl_strbuf_printf(vkl_strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if (reserve(b, (size_t)n)) return;
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void vkl_strbuf_free(vkl_strbuf *b)
{
    free(b->s);
    memset(b, 0, sizeof *b);
}

cJSON *vkl_read_json_object(const char *path, size_t max_bytes, vkl_err *e)
{
    char *text = NULL;
    if (vkl_read_text_file(path, max_bytes, &text, NULL, e)) return NULL;
    cJSON *j = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        vkl_fail(e, "%s: not a JSON object", path);
        return NULL;
    }
    return j;
}
