/* GGUF tensors onto the device: the raw blocks are uploaded as they are in
 * the file and dequantised by a compute shader (shaders/gguf_dequant.comp)
 * into a tensor of an ordinary float dtype. */
#ifndef VKL_GGUF_DEVICE_H
#define VKL_GGUF_DEVICE_H

#include "io/gguf.h"
#include "vkl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Appends the dequantisation of `raw` (a persistent i32 tensor holding the
 * blocks' bytes, padded to whole words) of ggml block type `type` into dst,
 * a contiguous persistent f32, f16 or bf16 tensor whose element count is a
 * whole number of blocks that raw holds. Returns dst (NULL on error, recorded
 * in g). Like copy_into, nothing flows back through it. */
vkl_tensor *vkl_gguf_dequant_into(vkl_graph *g, vkl_tensor *raw, int type, vkl_tensor *dst);

/* The raw bytes of n blocks as a new persistent i32 tensor (zero padded). */
vkl_tensor *vkl_gguf_raw_upload(vkl_ctx *c, const void *bytes, uint64_t nbytes, vkl_err *e);

/* A new persistent tensor of dtype dt (f32, f16, bf16) and the given shape
 * (its element count must be t's) holding t's values, dequantised on the device. */
vkl_tensor *vkl_gguf_tensor_load(vkl_ctx *c, const vkl_gguf_tensor *t, vkl_dtype dt, int ndim, const int64_t *shape,
                                 vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
