/* Device memory: large blocks, each covered by one VkBuffer, sub-allocated
 * with a sorted free list (first fit, coalescing on free). Allocations larger
 * than half a block get a dedicated block. Statistics per heap. */
#include "vkl_internal.h"

#include <stdlib.h>
#include <string.h>

#define SUBALLOC_ALIGN 256u

static int find_type(vkl_ctx *c, uint32_t bits, vkl_mem_kind kind, uint32_t *out)
{
    const VkPhysicalDeviceMemoryProperties *mp = &c->memprops;
    VkMemoryPropertyFlags want[3];
    int nw = 0;
    if (kind == VKL_MEM_DEVICE) {
        want[nw++] = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
        want[nw++] = 0;
    } else {
        want[nw++] = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT | VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
        want[nw++] = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
        want[nw++] = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
    }
    for (int w = 0; w < nw; w++)
        for (uint32_t t = 0; t < mp->memoryTypeCount; t++)
            if ((bits & (1u << t)) && (mp->memoryTypes[t].propertyFlags & want[w]) == want[w]) {
                *out = t;
                return 0;
            }
    return -1;
}

static void block_free(vkl_ctx *c, vkl_block *b)
{
    if (b->mapped) vk.vkUnmapMemory(c->dev, b->mem);
    if (b->buf) vk.vkDestroyBuffer(c->dev, b->buf, NULL);
    if (b->mem) vk.vkFreeMemory(c->dev, b->mem, NULL);
    if (b->heap < 16) c->heap_reserved[b->heap] -= b->size;
    free(b->free);
    free(b);
}

/* Device memory the context's blocks hold, all heaps. */
static uint64_t held_bytes(const vkl_ctx *c)
{
    uint64_t held = 0;
    for (int h = 0; h < 16; h++) held += c->heap_reserved[h];
    return held;
}

static int block_new(vkl_ctx *c, uint64_t size, vkl_mem_kind kind, int dedicated, vkl_block **out, vkl_err *e)
{
    if (size > c->caps.max_alloc)
        return vkl_fail(e, "an allocation of %llu bytes exceeds the device's maxMemoryAllocationSize (%llu bytes)",
                        (unsigned long long)size, (unsigned long long)c->caps.max_alloc);
    uint64_t held = held_bytes(c);
    if (c->caps.memory_budget && held + size > c->caps.memory_budget)
        return vkl_fail(e, "out of device memory: %.2f MiB more does not fit beside the %.2f MiB held "
                           "(device profile budget %.2f MiB)",
                        size / 1048576.0, held / 1048576.0, c->caps.memory_budget / 1048576.0);
    vkl_block *b = calloc(1, sizeof *b);
    if (!b) return vkl_fail(e, "out of host memory");
    b->size = size;
    b->dedicated = dedicated;
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                       VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                              .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = vk.vkCreateBuffer(c->dev, &bci, NULL, &b->buf);
    if (r != VK_SUCCESS) {
        block_free(c, b);
        return vkl_fail(e, "cannot create a buffer of %llu bytes: %s", (unsigned long long)size, vkl_vk_result_str(r));
    }
    VkMemoryRequirements req;
    vk.vkGetBufferMemoryRequirements(c->dev, b->buf, &req);
    if (find_type(c, req.memoryTypeBits, kind, &b->type_index)) {
        block_free(c, b);
        return vkl_fail(e, "device '%s' has no suitable %s memory type", c->caps.name,
                        kind == VKL_MEM_DEVICE ? "device" : "host-visible");
    }
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                                .memoryTypeIndex = b->type_index};
    r = vk.vkAllocateMemory(c->dev, &mai, NULL, &b->mem);
    if (r != VK_SUCCESS) {
        block_free(c, b);
        if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
            return vkl_fail(e, "out of %s memory: %.2f MiB more does not fit beside the %.2f MiB held (%s)",
                            r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? "device" : "host", size / 1048576.0,
                            held / 1048576.0, vkl_vk_result_str(r));
        return vkl_fail(e, "cannot allocate %.1f MiB of %s memory: %s", size / 1048576.0,
                        kind == VKL_MEM_DEVICE ? "device" : "host-visible", vkl_vk_result_str(r));
    }
    b->heap = c->memprops.memoryTypes[b->type_index].heapIndex;
    if (b->heap < 16) c->heap_reserved[b->heap] += size;
    r = vk.vkBindBufferMemory(c->dev, b->buf, b->mem, 0);
    if (r != VK_SUCCESS) {
        block_free(c, b);
        return vkl_fail(e, "vkBindBufferMemory failed: %s", vkl_vk_result_str(r));
    }
    VkMemoryPropertyFlags f = c->memprops.memoryTypes[b->type_index].propertyFlags;
    int may_map = (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) && !(kind == VKL_MEM_DEVICE && c->hide_host_visible);
    if (may_map) {
        r = vk.vkMapMemory(c->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->mapped);
        if (r != VK_SUCCESS) b->mapped = NULL;
        b->coherent = (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) != 0;
    }
    b->cap_free = 8;
    b->free = malloc(sizeof *b->free * b->cap_free);
    if (!b->free) {
        block_free(c, b);
        return vkl_fail(e, "out of host memory");
    }
    b->free[0].off = 0;
    b->free[0].size = size;
    b->nfree = 1;
    *out = b;
    return 0;
}

static int block_take(vkl_block *b, uint64_t size, uint64_t *off)
{
    for (int i = 0; i < b->nfree; i++) {
        if (b->free[i].size >= size) {
            *off = b->free[i].off;
            b->free[i].off += size;
            b->free[i].size -= size;
            if (!b->free[i].size) {
                memmove(&b->free[i], &b->free[i + 1], sizeof *b->free * (size_t)(b->nfree - i - 1));
                b->nfree--;
            }
            b->used += size;
            return 0;
        }
    }
    return -1;
}

static int block_give(vkl_block *b, uint64_t off, uint64_t size)
{
    int i = 0;
    while (i < b->nfree && b->free[i].off < off) i++;
    int merged_prev = i > 0 && b->free[i - 1].off + b->free[i - 1].size == off;
    int merged_next = i < b->nfree && off + size == b->free[i].off;
    if (merged_prev && merged_next) {
        b->free[i - 1].size += size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], sizeof *b->free * (size_t)(b->nfree - i - 1));
        b->nfree--;
    } else if (merged_prev) {
        b->free[i - 1].size += size;
    } else if (merged_next) {
        b->free[i].off = off;
        b->free[i].size += size;
    } else {
        if (b->nfree == b->cap_free) {
            void *p = realloc(b->free, sizeof *b->free * (size_t)b->cap_free * 2);
            if (!p) return -1; /* leaks the range; never corrupts */
            b->free = p;
            b->cap_free *= 2;
        }
        memmove(&b->free[i + 1], &b->free[i], sizeof *b->free * (size_t)(b->nfree - i));
        b->free[i].off = off;
        b->free[i].size = size;
        b->nfree++;
    }
    b->used -= size;
    return 0;
}

/* A new shared block: the context's block size, or under a memory budget
 * what is left of it (at least the request), so a small budget fills up
 * as a small card would rather than at the first block. */
static uint64_t shared_block_size(const vkl_ctx *c, uint64_t need)
{
    uint64_t bs = c->block_size;
    if (!c->caps.memory_budget) return bs;
    uint64_t held = held_bytes(c);
    uint64_t left = held < c->caps.memory_budget ? c->caps.memory_budget - held : 0;
    left = left / SUBALLOC_ALIGN * SUBALLOC_ALIGN;
    return left < bs ? (left > need ? left : need) : bs;
}

int vkl_buffer_create(vkl_ctx *c, uint64_t bytes, vkl_mem_kind kind, vkl_buffer **out, vkl_err *e)
{
    *out = NULL;
    uint64_t size = (bytes + SUBALLOC_ALIGN - 1) / SUBALLOC_ALIGN * SUBALLOC_ALIGN;
    if (!size) size = SUBALLOC_ALIGN;
    vkl_buffer *buf = calloc(1, sizeof *buf);
    if (!buf) return vkl_fail(e, "out of host memory");
    buf->ctx = c;
    buf->size = bytes;
    buf->kind = kind;
    vkl_block *b = NULL;
    uint64_t off = 0;
    if (size > c->block_size / 2) {
        if (block_new(c, size, kind, 1, &b, e)) {
            free(buf);
            return -1;
        }
        block_take(b, size, &off);
        b->next = c->blocks[kind];
        c->blocks[kind] = b;
    } else {
        for (b = c->blocks[kind]; b; b = b->next)
            if (!b->dedicated && block_take(b, size, &off) == 0) break;
        if (!b) {
            if (block_new(c, shared_block_size(c, size), kind, 0, &b, e)) {
                free(buf);
                return -1;
            }
            block_take(b, size, &off);
            b->next = c->blocks[kind];
            c->blocks[kind] = b;
        }
    }
    buf->block = b;
    buf->offset = off;
    if (b->heap < 16) {
        c->heap_current[b->heap] += size;
        if (c->heap_current[b->heap] > c->heap_peak[b->heap]) c->heap_peak[b->heap] = c->heap_current[b->heap];
    }
    *out = buf;
    return 0;
}

void vkl_buffer_destroy(vkl_buffer *buf)
{
    if (!buf) return;
    vkl_ctx *c = buf->ctx;
    vkl_block *b = buf->block;
    uint64_t size = (buf->size + SUBALLOC_ALIGN - 1) / SUBALLOC_ALIGN * SUBALLOC_ALIGN;
    if (!size) size = SUBALLOC_ALIGN;
    if (b->heap < 16) c->heap_current[b->heap] -= size;
    block_give(b, buf->offset, size);
    if (b->dedicated || b->used == 0) {
        /* dedicated blocks go back at once; an empty shared block too, except the
         * last one of its kind, which stays for the next small allocation */
        int others = 0;
        for (vkl_block *x = c->blocks[buf->kind]; x; x = x->next)
            if (x != b && !x->dedicated) others = 1;
        if (b->dedicated || others) {
            vkl_block **pp = &c->blocks[buf->kind];
            while (*pp != b) pp = &(*pp)->next;
            *pp = b->next;
            block_free(c, b);
        }
    }
    free(buf);
}

void vkl_mem_destroy_all(vkl_ctx *c)
{
    for (int k = 0; k < 2; k++) {
        while (c->blocks[k]) {
            vkl_block *n = c->blocks[k]->next;
            block_free(c, c->blocks[k]);
            c->blocks[k] = n;
        }
    }
}

uint64_t vkl_buffer_size(const vkl_buffer *b) { return b->size; }
VkBuffer vkl_buffer_vk(const vkl_buffer *b) { return b->block->buf; }
uint64_t vkl_buffer_vk_offset(const vkl_buffer *b) { return b->offset; }
void *vkl_buffer_mapped(const vkl_buffer *b)
{
    return b->block->mapped && b->block->coherent ? (char *)b->block->mapped + b->offset : NULL;
}

void vkl_mem_get_stats(const vkl_ctx *c, vkl_mem_stats *s)
{
    memset(s, 0, sizeof *s);
    s->nheaps = c->caps.nheaps;
    for (int h = 0; h < 16; h++) {
        s->current[h] = c->heap_current[h];
        s->peak[h] = c->heap_peak[h];
        s->reserved[h] = c->heap_reserved[h];
        s->total_current += c->heap_current[h];
        s->total_peak += c->heap_peak[h];
    }
}

void vkl_mem_reset_peak(vkl_ctx *c)
{
    for (int h = 0; h < 16; h++) c->heap_peak[h] = c->heap_current[h];
}

/* ---- host <-> device copies. Mapped coherent memory is copied directly
 * (after waiting for the queue); otherwise through a host-visible staging
 * buffer and vkCmdCopyBuffer in chunks. */

#define STAGING_BYTES (16ull << 20)

static int staging(vkl_ctx *c, vkl_err *e)
{
    if (c->staging) return 0;
    return vkl_buffer_create(c, STAGING_BYTES, VKL_MEM_HOST, &c->staging, e);
}

static int copy_chunk(vkl_ctx *c, const vkl_buffer *src, uint64_t so, const vkl_buffer *dst, uint64_t d_o,
                      uint64_t n, vkl_err *e)
{
    VkCommandBuffer cb;
    if (vkl_oneshot_begin(c, &cb, e)) return -1;
    VkBufferCopy r = {.srcOffset = src->offset + so, .dstOffset = dst->offset + d_o, .size = n};
    vk.vkCmdCopyBuffer(cb, src->block->buf, dst->block->buf, 1, &r);
    return vkl_oneshot_submit(c, cb, e);
}

int vkl_buffer_write(vkl_buffer *b, uint64_t offset, const void *src, uint64_t bytes, vkl_err *e)
{
    vkl_ctx *c = b->ctx;
    if (offset + bytes > b->size)
        return vkl_fail(e, "write of %llu bytes at %llu past the end of a %llu-byte buffer", (unsigned long long)bytes,
                        (unsigned long long)offset, (unsigned long long)b->size);
    void *m = vkl_buffer_mapped(b);
    if (m) {
        memcpy((char *)m + offset, src, bytes);
        return 0;
    }
    if (staging(c, e)) return -1;
    void *sm = vkl_buffer_mapped(c->staging);
    for (uint64_t done = 0; done < bytes;) {
        uint64_t n = bytes - done < STAGING_BYTES ? bytes - done : STAGING_BYTES;
        memcpy(sm, (const char *)src + done, n);
        if (copy_chunk(c, c->staging, 0, b, offset + done, n, e)) return -1;
        done += n;
    }
    return 0;
}

int vkl_buffer_read(vkl_buffer *b, uint64_t offset, void *dst, uint64_t bytes, vkl_err *e)
{
    vkl_ctx *c = b->ctx;
    if (offset + bytes > b->size)
        return vkl_fail(e, "read of %llu bytes at %llu past the end of a %llu-byte buffer", (unsigned long long)bytes,
                        (unsigned long long)offset, (unsigned long long)b->size);
    void *m = vkl_buffer_mapped(b);
    if (m) {
        memcpy(dst, (char *)m + offset, bytes);
        return 0;
    }
    if (staging(c, e)) return -1;
    void *sm = vkl_buffer_mapped(c->staging);
    for (uint64_t done = 0; done < bytes;) {
        uint64_t n = bytes - done < STAGING_BYTES ? bytes - done : STAGING_BYTES;
        if (copy_chunk(c, b, offset + done, c->staging, 0, n, e)) return -1;
        memcpy((char *)dst + done, sm, n);
        done += n;
    }
    return 0;
}
