/* Runtime internals shared by the runtime's own files (never by models/). */
#ifndef VKL_INTERNAL_H
#define VKL_INTERNAL_H

#include <stdatomic.h>

#include "vk_loader.h"
#include "vkl.h"
#include "shader_ids.h"
#include "tuning.h"

#define VKL_CHECK_VK(call, e, what)                                                                \
    do {                                                                                           \
        VkResult vkl_r_ = (call);                                                                  \
        if (vkl_r_ != VK_SUCCESS)                                                                  \
            return vkl_fail((e), "%s failed: %s", (what), vkl_vk_result_str(vkl_r_));              \
    } while (0)

/* ---- memory: blocks of device memory, each with one VkBuffer over all of it,
 * sub-allocated by a sorted free list. */
typedef struct vkl_block {
    VkDeviceMemory mem;
    VkBuffer buf;
    uint64_t size;
    uint32_t type_index, heap;
    void *mapped;          /* non-NULL when host-visible and mapping is allowed */
    int coherent;
    int dedicated;
    struct { uint64_t off, size; } *free;
    int nfree, cap_free;
    uint64_t used;
    struct vkl_block *next;
} vkl_block;

struct vkl_buffer {
    vkl_ctx *ctx;
    vkl_block *block;
    uint64_t offset, size;  /* offset within block */
    vkl_mem_kind kind;
};

typedef struct vkl_pipeline {
    char key[160];
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipe;
    int nbind;
    struct vkl_pipeline *next;
} vkl_pipeline;

struct vkl_ctx {
    VkInstance inst;
    VkDebugUtilsMessengerEXT messenger;
    VkPhysicalDevice phys;
    VkDevice dev;
    VkQueue queue;
    uint32_t queue_family;
    VkCommandPool cmd_pool;
    VkFence fence;
    VkPipelineCache pcache;
    char pcache_path[1024];
    vkl_tuning tuning;         /* per-device choices of the op builders (tuning.h) */
    int pcache_cold;           /* no usable cache was found: the first pipeline says shaders compile */
    vkl_caps caps;
    VkPhysicalDeviceMemoryProperties memprops;
    int hide_host_visible;     /* profile "staging": never map device memory */
    uint64_t block_size;
    vkl_block *blocks[2];      /* per vkl_mem_kind */
    uint64_t heap_current[16], heap_peak[16], heap_reserved[16];
    vkl_pipeline *pipelines;
    atomic_uint_fast64_t validation_count;
    int validation;
    vkl_buffer *staging;       /* reused for uploads/downloads on non-UMA devices */
    int lost;                  /* the device was lost: nothing more is submitted (submit.c) */
    long submits;              /* submissions so far */
    long fault_lost_at;        /* VKLORA_FAULT_DEVICE_LOST_AT=N: submission N reports a lost device (tests) */
};

/* Device selection and caps (context.c, caps.c). */
int vkl_caps_read(VkPhysicalDevice pd, const char *profile, vkl_caps *c, uint64_t *hidden_flags,
                  vkl_err *e);
int vkl_profile_apply(const char *profile, vkl_caps *c, int *hide_host_visible, vkl_err *e);

/* Memory (memory.c). */
void vkl_mem_destroy_all(vkl_ctx *c);
VkBuffer vkl_buffer_vk(const vkl_buffer *b);
uint64_t vkl_buffer_vk_offset(const vkl_buffer *b);
void *vkl_buffer_mapped(const vkl_buffer *b); /* NULL when not host-mappable */

/* One-shot command buffers (submit.c). */
int vkl_oneshot_begin(vkl_ctx *c, VkCommandBuffer *cb, vkl_err *e);
int vkl_oneshot_submit(vkl_ctx *c, VkCommandBuffer cb, vkl_err *e);
/* Submits cb on the queue and waits for it. */
int vkl_submit_wait(vkl_ctx *c, VkCommandBuffer cb, vkl_err *e);
/* Barrier: everything before (any stage, any write) -> everything after. */
void vkl_cmd_full_barrier(VkCommandBuffer cb);

/* Pipelines (pipeline.c): compute pipeline for shader variant `name` with
 * nbind storage buffers at bindings 0..nbind-1, 128 bytes of push constants
 * and specialization constants 0..nspec-1. Created once, cached in ctx. */
int vkl_pipeline_get(vkl_ctx *c, vkl_kernel k, int nbind, const uint32_t *spec, int nspec,
                     vkl_pipeline **out, vkl_err *e);
void vkl_pipelines_destroy(vkl_ctx *c);
int vkl_pcache_load(vkl_ctx *c, vkl_err *e);
void vkl_pcache_save(vkl_ctx *c);

/* ---- graph internals (graph.c) */

#define VKL_NODE_MAX_SRC 8
#define VKL_PARAMS_BYTES 256
#define VKL_PUSH_BYTES 128
#define VKL_MAX_BIND 8

typedef int (*vkl_emit_fn)(vkl_graph *g, vkl_node *n, vkl_err *e);
/* Backward rule: given dy (the gradient of n->dst), appends nodes computing the
 * gradient of each input i with need[i] set into dsrc[i] (NULL where not
 * needed). Returns 0, or -1 after recording an error in the graph. */
typedef int (*vkl_backward_fn)(vkl_graph *g, vkl_node *n, vkl_tensor *dy, const int *need, vkl_tensor **dsrc);

struct vkl_node {
    char op[32];
    vkl_tensor *src[VKL_NODE_MAX_SRC];
    int nsrc;
    vkl_tensor *dst;
    vkl_emit_fn emit;
    vkl_backward_fn backward; /* NULL: the op has no gradient (an error if one is needed) */
    union { uint8_t bytes[VKL_PARAMS_BYTES]; double align_; int64_t i64[VKL_PARAMS_BYTES / 8]; } params;
    int first_dispatch, ndispatch;
    int index;
    int segment; /* gradient-checkpoint segment (0: none) */
};

/* A storage-buffer binding: a window of at most maxStorageBufferRange bytes. */
typedef struct vkl_bind {
    const vkl_buffer *buf;
    uint64_t offset;   /* within buf */
    uint64_t range;
} vkl_bind;

vkl_node *vkl_graph_node_at(vkl_graph *g, int i);
int vkl_graph_in_segment(const vkl_graph *g);
vkl_tensor *vkl_graph_replay_node(vkl_graph *g, const vkl_node *n, vkl_tensor *const *src);
int vkl_graph_tensor_count(const vkl_graph *g);
/* Appends a node producing dst from src[0..nsrc-1]; params copied. */
vkl_node *vkl_graph_add_node(vkl_graph *g, const char *op, vkl_tensor *dst, vkl_tensor *const *src,
                             int nsrc, vkl_emit_fn emit, const void *params, size_t params_size);
/* During emit: one dispatch of shader variant k (shader_ids.h). */
int vkl_emit_dispatch(vkl_graph *g, vkl_kernel k, const uint32_t *spec, int nspec,
                      const vkl_bind *binds, int nbind, const void *push, size_t push_size,
                      uint32_t gx, uint32_t gy, uint32_t gz, vkl_err *e);
/* During emit: binds elements [first, first+count) of t's memory (element
 * units of t's dtype, relative to t's offset; count may be the tensor's span)
 * as a window; *elem_off is what the shader adds to element indices relative
 * to `first`. Fails with a message naming the limit when it does not fit. */
int vkl_bind_span(vkl_graph *g, const vkl_tensor *t, int64_t first, int64_t count, vkl_bind *b,
                  uint32_t *elem_off, vkl_err *e);
int vkl_tensor_init_shape(vkl_tensor *t, vkl_dtype dt, int ndim, const int64_t *shape, vkl_err *e);
/* Number of elements from t's first element to its last, +1 (strides >= 0). */
int64_t vkl_tensor_span(const vkl_tensor *t);
uint64_t vkl_ctx_max_binding(const vkl_ctx *c);
/* Splits a 1-D range of `total` elements into windows of at most `max` elements,
 * a multiple of `multiple`. */
int64_t vkl_window_elems(const vkl_ctx *c, vkl_dtype dt, int64_t multiple);

#endif
