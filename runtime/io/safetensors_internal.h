/* Shared between the safetensors reader files; not part of the public API. */
#ifndef VKL_SAFETENSORS_INTERNAL_H
#define VKL_SAFETENSORS_INTERNAL_H

#include "io/safetensors.h"

/* A header this large is not a real checkpoint (real ones stay under a few MB
 * even with kohya's dataset tags); refusing it bounds memory use on hostile input. */
#define VKL_ST_MAX_HEADER (100u * 1000u * 1000u)

struct vkl_st_file {
    char *label;          /* path, or the caller's label for a memory buffer */
    const uint8_t *buf;   /* the whole file */
    size_t size;
    void *map;            /* owned mapping (vkl_st_open), NULL for memory buffers */
    size_t map_len;
    int n;
    vkl_st_tensor *t;     /* ascending data offset */
    int *by_name;         /* indices into t sorted by name, for vkl_st_find */
    int nmeta;
    char **meta_key, **meta_val;
};

/* Parses and validates the header of f->buf/f->size, filling the tensor and
 * metadata tables. On failure the tables may be partly filled: free them with
 * vkl_st__free_tables. */
int vkl_st__parse(vkl_st_file *f, vkl_err *e);
void vkl_st__free_tables(vkl_st_file *f);

/* Offset of the first byte that breaks UTF-8 (overlong forms, surrogates and
 * code points past U+10FFFF count as broken), or n when all n bytes are valid. */
size_t vkl_st__utf8_bad_at(const char *s, size_t n);

/* safetensors' own spelling of a dtype ("F32", "BF16", ...). */
const char *vkl_st__dtype_tag(vkl_dtype t);

#endif
