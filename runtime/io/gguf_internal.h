/* Shared between the GGUF reader files; not part of the API. */
#ifndef VKL_GGUF_INTERNAL_H
#define VKL_GGUF_INTERNAL_H

#include "io/gguf.h"

struct vkl_gguf_file {
    char *label;
    const uint8_t *buf;
    size_t size;
    void *map;
    uint32_t version, alignment;
    int nkv, nt;
    vkl_gguf_kv *kv;
    vkl_gguf_tensor *t;
    int *by_name; /* indices of t sorted by name */
    int *kv_by_key; /* indices of kv sorted by key */
};

/* Bytes of a scalar value type in the file (0 for string and array). */
int vkl_gguf__vtype_size(int vtype);
/* n little-endian bytes at p. */
uint64_t vkl_gguf__le(const uint8_t *p, int n);

#endif
