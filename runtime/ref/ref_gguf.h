/* CPU reference of GGUF block dequantisation (ref_gguf.c), in the order of
 * operations the format's reference code uses; shaders/gguf_dequant.comp
 * matches it bit for bit. */
#ifndef VKL_REF_GGUF_H
#define VKL_REF_GGUF_H

#include <stdint.h>

/* y[0..nelem) from the blocks of ggml type `type` (nelem a whole number of
 * blocks). Returns -1 for an unsupported type. */
int vkl_ref_gguf_dequant(int type, const void *blocks, uint64_t nelem, float *y);

#endif
