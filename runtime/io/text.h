/* Whole files into memory, and a growing string: the one reader and the one
 * builder the formats, models and commands share. */
#ifndef VKL_IO_TEXT_H
#define VKL_IO_TEXT_H

#include "vkl_base.h"

#include <stddef.h>
#include <stdint.h>

/* Reads the whole file at path into malloc'd memory with a NUL after its
 * last byte, so text can be parsed as a C string (*size, which may be NULL,
 * does not count it). A regular file over max_bytes is refused before it is
 * read; pipes and other streams are read up to max_bytes and refused past
 * it; a folder is refused. Every failure names path. */
int vkl_read_text_file(const char *path, size_t max_bytes, char **out, size_t *size, vkl_err *e);

/* The file at path (at most max_bytes) parsed as JSON, which must be an
 * object (cJSON.h; the caller deletes it); NULL with "PATH: not a JSON
 * object" or the reader's error. */
struct cJSON *vkl_read_json_object(const char *path, size_t max_bytes, vkl_err *e);

/* The same as vkl_read_text_file, for binary formats. */
int vkl_read_file_bytes(const char *path, size_t max_bytes, uint8_t **out, size_t *size, vkl_err *e);

/* A string that grows as it is appended to. Zero-initialise it; s is NUL
 * terminated once anything was appended (bytes may include NULs: len counts
 * them). A failed allocation sets failed and makes later appends do nothing,
 * so a builder checks once, at the end. */
typedef struct vkl_strbuf {
    char *s;
    size_t len, cap;
    int failed;
} vkl_strbuf;

void vkl_strbuf_putn(vkl_strbuf *b, const void *bytes, size_t n);
void vkl_strbuf_puts(vkl_strbuf *b, const char *s);
void vkl_strbuf_printf(vkl_strbuf *b, const char *fmt, ...) VKL_PRINTF(2, 3);
/* Frees s and zeroes the builder. */
void vkl_strbuf_free(vkl_strbuf *b);

#endif
