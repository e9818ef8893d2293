/* Byte-string -> int32 hash map with its own key storage (internal). Used for
 * the vocabulary (token -> id) and the per-word BPE cache. */
#ifndef VKL_STRMAP_H
#define VKL_STRMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *keys;        /* all keys back to back */
    size_t keys_len, keys_cap;
    uint64_t *slots;   /* (key offset << 24 | key length) + 1; 0 = empty */
    int32_t *vals;
    size_t cap, count; /* cap is a power of two */
} vkl_strmap;

/* Inserts or overwrites (as a Python dict does). Returns -1 when out of memory
 * or the key is longer than 16 MiB. */
int vkl_strmap_put(vkl_strmap *m, const char *k, size_t len, int32_t v);
/* Value of k, or -1 when absent. */
int32_t vkl_strmap_get(const vkl_strmap *m, const char *k, size_t len);
void vkl_strmap_clear(vkl_strmap *m);
void vkl_strmap_free(vkl_strmap *m);

#endif
