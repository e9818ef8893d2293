/* vklora runtime: the public interface the model layer uses.
 *
 * Five nouns (see ../shared/DESIGN.md):
 *   context - Vulkan instance + device + queue + allocator + pipeline cache
 *   buffer  - a sub-allocation of device memory
 *   tensor  - dtype + up to 4 dims (row-major, outermost first) + strides, a view into a buffer
 *   graph   - ops appended in order; planned (memory reuse), recorded once, replayed
 *   op      - a function that appends a node (runtime/ops.h)
 */
#ifndef VKL_H
#define VKL_H

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_MAX_DIMS 4

/* ------------------------------------------------------------------ context */

typedef struct vkl_ctx vkl_ctx;

typedef enum { VKL_DEV_OTHER = 0, VKL_DEV_INTEGRATED, VKL_DEV_DISCRETE, VKL_DEV_VIRTUAL, VKL_DEV_CPU } vkl_dev_type;

/* What the device allows, read once at context creation (after the device
 * profile has hidden features / lowered limits). Every other file asks this,
 * never Vulkan. */
typedef struct vkl_caps {
    char name[256];
    char driver[256];
    vkl_dev_type type;
    uint32_t vendor_id, device_id, api_version, driver_version;
    uint8_t uuid[16];
    uint32_t subgroup_size;
    int subgroup_arith;   /* subgroupAdd/Max etc. usable in compute shaders */
    int subgroup_shuffle;
    uint32_t max_shared_memory;
    uint32_t max_wg_invocations;
    uint32_t max_wg_size[3];
    uint32_t max_wg_count[3];
    uint32_t max_push_constants;
    int storage16;        /* storageBuffer16BitAccess */
    int storage8;         /* storageBuffer8BitAccess */
    int fp16;             /* shaderFloat16 arithmetic */
    int int8;             /* shaderInt8 arithmetic */
    int coopmat;          /* VK_KHR_cooperative_matrix present */
    uint64_t max_storage_range;   /* maxStorageBufferRange: the largest binding */
    uint64_t max_alloc;           /* maxMemoryAllocationSize */
    uint64_t memory_budget;       /* 0, or the device memory a context may hold (profile memory=BYTES) */
    uint64_t storage_align;       /* minStorageBufferOffsetAlignment */
    int timestamps;
    float timestamp_period_ns;
    int nheaps;
    struct { uint64_t size; int device_local; int host_visible; } heaps[16];
    int uma;              /* device-local memory is host-visible: uploads are plain copies */
    char profile[64];     /* device profile in force ("default", "portable", ...) */
} vkl_caps;

typedef struct vkl_ctx_opts {
    int device;              /* index in vkl_list_devices order; -1: $VKLORA_DEVICE or best */
    int validation;          /* -1: $VKLORA_VALIDATION; 0 off; 1 validation + sync validation */
    const char *profile;     /* NULL: $VKLORA_PROFILE or "default" */
    int no_pipeline_cache;   /* do not read/write the on-disk pipeline cache */
    const char *cache_dir;   /* NULL: $XDG_CACHE_HOME/vklora or ~/.cache/vklora */
} vkl_ctx_opts;

void vkl_ctx_opts_default(vkl_ctx_opts *o);
/* A device for every context of the process made without an index (an
 * index, "cpu", "gpu" or part of a name, as $VKLORA_DEVICE, which it
 * overrides); origin names it in messages ("--device"). The strings must
 * outlive the contexts. */
void vkl_ctx_default_device(const char *spec, const char *origin);
int vkl_ctx_create(const vkl_ctx_opts *o, vkl_ctx **out, vkl_err *e);
void vkl_ctx_destroy(vkl_ctx *c);
const vkl_caps *vkl_ctx_caps(const vkl_ctx *c);
/* 1 once the device was lost (VK_ERROR_DEVICE_LOST: a driver reset, a hang
 * or the device removed): every later run fails at once with the same
 * message; the context can only be destroyed. Work saved before (training
 * states, written files) is whole: start again from it. */
int vkl_ctx_lost(const vkl_ctx *c);
/* Validation-layer messages (warnings and errors) seen so far; each is also printed. */
uint64_t vkl_ctx_validation_count(const vkl_ctx *c);
int vkl_ctx_validation_enabled(const vkl_ctx *c);

/* Every Vulkan device in the system, with its caps under the given profile.
 * *out is malloc'd; free() it. */
int vkl_list_devices(const char *profile, vkl_caps **out, int *count, vkl_err *e);
/* The index in caps[n] that a device spec names (an index, "cpu", "gpu" or
 * part of a name, as --device takes it), or -1 with e saying why, origin
 * first ("--device "). */
int vkl_device_match(const vkl_caps *caps, int n, const char *spec, const char *origin, vkl_err *e);
/* Prints caps as text or JSON. */
void vkl_caps_print(const vkl_caps *c, int index, FILE *f);
char *vkl_caps_json(const vkl_caps *c, int index); /* malloc'd */

/* ------------------------------------------------------------------- memory */

typedef enum { VKL_MEM_DEVICE = 0, VKL_MEM_HOST = 1 } vkl_mem_kind;

typedef struct vkl_buffer vkl_buffer;
int vkl_buffer_create(vkl_ctx *c, uint64_t bytes, vkl_mem_kind kind, vkl_buffer **out, vkl_err *e);
void vkl_buffer_destroy(vkl_buffer *b);
uint64_t vkl_buffer_size(const vkl_buffer *b);
/* Host copies; they wait for the device. */
int vkl_buffer_write(vkl_buffer *b, uint64_t offset, const void *src, uint64_t bytes, vkl_err *e);
int vkl_buffer_read(vkl_buffer *b, uint64_t offset, void *dst, uint64_t bytes, vkl_err *e);

typedef struct vkl_mem_stats {
    uint64_t current[16], peak[16];   /* bytes in live sub-allocations, per heap */
    uint64_t reserved[16];            /* bytes of device memory blocks held, per heap */
    uint64_t total_current, total_peak;
    int nheaps;
} vkl_mem_stats;
void vkl_mem_get_stats(const vkl_ctx *c, vkl_mem_stats *s);
void vkl_mem_reset_peak(vkl_ctx *c);

/* ------------------------------------------------------------------- tensor */

typedef struct vkl_graph vkl_graph;
typedef struct vkl_node vkl_node;

typedef struct vkl_tensor {
    vkl_dtype dtype;
    int ndim;
    int64_t shape[VKL_MAX_DIMS];    /* unused trailing dims are 1 */
    int64_t stride[VKL_MAX_DIMS];   /* in elements; 0 means broadcast along that dim */
    vkl_buffer *buf;                /* NULL until the graph is planned (intermediates) */
    uint64_t offset;                /* in bytes within buf */
    /* graph bookkeeping */
    vkl_graph *graph;               /* NULL for persistent tensors */
    struct vkl_tensor *view_of;     /* the tensor whose memory this one shares */
    vkl_node *producer;
    int id;
    int keep;                       /* graph output: own memory, readable after run */
    char name[48];
} vkl_tensor;

int64_t vkl_tensor_nelem(const vkl_tensor *t);
uint64_t vkl_tensor_nbytes(const vkl_tensor *t);     /* contiguous size */
int vkl_tensor_is_contiguous(const vkl_tensor *t);
void vkl_tensor_describe(const vkl_tensor *t, char *buf, size_t n); /* "f32[2,77,768]" */

/* A persistent tensor with its own memory (weights, inputs, outputs kept
 * across runs). Contiguous. Free with vkl_tensor_free. */
vkl_tensor *vkl_tensor_new(vkl_ctx *c, vkl_dtype dt, int ndim, const int64_t *shape, vkl_err *e);
void vkl_tensor_free(vkl_tensor *t);
/* Host <-> device for contiguous tensors. `src_dt`/`dst_dt` may differ from the
 * tensor's dtype: the data is converted on the host (f32 <-> f16/bf16 etc.). */
int vkl_tensor_upload(vkl_ctx *c, vkl_tensor *t, const void *src, vkl_dtype src_dt, vkl_err *e);
int vkl_tensor_download(vkl_ctx *c, const vkl_tensor *t, void *dst, vkl_dtype dst_dt, vkl_err *e);

/* -------------------------------------------------------------------- graph */

vkl_graph *vkl_graph_new(vkl_ctx *c);
void vkl_graph_free(vkl_graph *g);
vkl_ctx *vkl_graph_ctx(vkl_graph *g);
/* Ops append nodes; a failing op (bad shapes...) records the first error in the
 * graph and returns NULL; later ops given NULL return NULL. */
int vkl_graph_failed(const vkl_graph *g);
const char *vkl_graph_error(const vkl_graph *g);
/* Marks t as a graph output: it gets memory of its own that stays readable
 * (for a view: the memory it looks into). */
void vkl_graph_keep(vkl_graph *g, vkl_tensor *t);
/* Liveness analysis, memory assignment with reuse of dead intermediates,
 * pipeline creation and command-buffer recording. Called once. */
int vkl_graph_plan(vkl_graph *g, vkl_err *e);
/* Submits the recorded command buffer and waits. Can be called many times. */
int vkl_graph_run(vkl_graph *g, vkl_err *e);
/* Bytes of the intermediate arena after planning, and what it would take without reuse. */
uint64_t vkl_graph_arena_bytes(const vkl_graph *g);
uint64_t vkl_graph_unplanned_bytes(const vkl_graph *g);
int vkl_graph_node_count(const vkl_graph *g);
int vkl_graph_dispatch_count(const vkl_graph *g);
/* Per-node GPU time of the last run (needs timestamps and profiling enabled
 * before planning). */
void vkl_graph_enable_profiling(vkl_graph *g);
void vkl_graph_print_profile(const vkl_graph *g, FILE *f);
double vkl_graph_last_gpu_ms(const vkl_graph *g);

/* Autograd: appends the backward pass of `loss` to the graph. seed is the
 * gradient of loss (NULL: ones, e.g. for a scalar loss). For each wrt[i] (a
 * persistent tensor such as an adapter weight, or a graph tensor), grads[i]
 * receives its gradient (f32, wrt's shape), or NULL when the loss does not
 * depend on it. Only what leads from wrt to loss is differentiated: frozen
 * weights pass gradients to activations but get none themselves. */
int vkl_graph_backward(vkl_graph *g, vkl_tensor *loss, vkl_tensor *seed, vkl_tensor *const *wrt, int nwrt,
                       vkl_tensor **grads, vkl_err *e);

/* Gradient checkpointing: ops appended between begin and end form a segment
 * whose activations are not kept for the backward pass; vkl_graph_backward
 * recomputes the segment from its inputs just before differentiating it.
 * Segments do not nest. */
void vkl_graph_segment_begin(vkl_graph *g);
void vkl_graph_segment_end(vkl_graph *g);

/* A graph-owned tensor with no data yet (used by ops for their outputs). */
vkl_tensor *vkl_graph_tensor(vkl_graph *g, vkl_dtype dt, int ndim, const int64_t *shape);
/* A view of t with another shape (t must be contiguous) / a strided view. */
vkl_tensor *vkl_reshape(vkl_graph *g, vkl_tensor *t, int ndim, const int64_t *shape);
vkl_tensor *vkl_permute(vkl_graph *g, vkl_tensor *t, const int *perm);
/* A strided view of t's memory starting `offset` elements after t's first
 * element; checked to stay inside t's span. */
vkl_tensor *vkl_view(vkl_graph *g, vkl_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                     int64_t offset);
/* Records the first error of the graph (printf style); returns NULL, so a
 * builder can `return vkl_graph_set_error(g, ...)`. */
void *vkl_graph_set_error(vkl_graph *g, const char *fmt, ...) VKL_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif

#endif
