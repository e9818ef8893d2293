/* Open addressing with linear probing; keys live in one growing buffer so a
 * 49k-entry vocabulary is three allocations, not 49k. */
#include <stdlib.h>
#include <string.h>

#include "strmap.h"

static uint64_t hash_bytes(const char *k, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static int slot_is(const vkl_strmap *m, uint64_t s, const char *k, size_t len)
{
    s -= 1;
    return (s & 0xFFFFFF) == len && (len == 0 || memcmp(m->keys + (s >> 24), k, len) == 0); /* "" may precede any key buffer */
}

static size_t find(const vkl_strmap *m, const char *k, size_t len)
{
    size_t i = hash_bytes(k, len) & (m->cap - 1);
    while (m->slots[i] && !slot_is(m, m->slots[i], k, len))
        i = (i + 1) & (m->cap - 1);
    return i;
}

static int grow(vkl_strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *slots = calloc(cap, sizeof *slots);
    int32_t *vals = malloc(cap * sizeof *vals);
    if (!slots || !vals) {
        free(slots);
        free(vals);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i])
            continue;
        uint64_t s = m->slots[i] - 1;
        size_t j = hash_bytes(m->keys + (s >> 24), s & 0xFFFFFF) & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
        vals[j] = m->vals[i];
    }
    free(m->slots);
    free(m->vals);
    m->slots = slots;
    m->vals = vals;
    m->cap = cap;
    return 0;
}

int vkl_strmap_put(vkl_strmap *m, const char *k, size_t len, int32_t v)
{
    if (len > 0xFFFFFF)
        return -1;
    if ((m->count + 1) * 2 > m->cap && grow(m))
        return -1;
    size_t i = find(m, k, len);
    if (m->slots[i]) {
        m->vals[i] = v;
        return 0;
    }
    if (m->keys_len + len > m->keys_cap) {
        size_t cap = m->keys_cap ? m->keys_cap : 4096;
        while (cap < m->keys_len + len)
            cap *= 2;
        char *keys = realloc(m->keys, cap);
        if (!keys)
            return -1;
        m->keys = keys;
        m->keys_cap = cap;
    }
    if (len)
        memcpy(m->keys + m->keys_len, k, len);
    m->slots[i] = (((uint64_t)m->keys_len << 24) | len) + 1;
    m->vals[i] = v;
    m->keys_len += len;
    m->count++;
    return 0;
}

int32_t vkl_strmap_get(const vkl_strmap *m, const char *k, size_t len)
{
    if (!m->cap)
        return -1;
    size_t i = find(m, k, len);
    return m->slots[i] ? m->vals[i] : -1;
}

void vkl_strmap_clear(vkl_strmap *m)
{
    if (m->slots)
        memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->keys_len = 0;
    m->count = 0;
}

void vkl_strmap_free(vkl_strmap *m)
{
    free(m->keys);
    free(m->slots);
    free(m->vals);
    memset(m, 0, sizeof *m);
}
