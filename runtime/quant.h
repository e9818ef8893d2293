/* Block-quantised weights: frozen base weights kept quantised on the device
 * and dequantised in registers inside the shaders that read them.
 *
 * A quantised weight is an ordinary tensor whose dtype is a block format
 * (VKL_NF4; further formats such as GGUF's Q8_0 / Q4_K follow the same
 * scheme). Its shape is the logical matrix's ([out, in] for a linear layer);
 * the elements are taken row-major, flattened, in blocks of `block` elements
 * (the last block may be partial). Its memory holds, in this order:
 *
 *   codes   packed codes of every element (format-specific bit layout),
 *           code_bytes bytes, then zero padding up to scale_offset
 *   scales  one f32 per block at scale_offset (a multiple of 16 bytes)
 *
 * so one storage binding holds a whole weight, and a shader finds element
 * i's code from i alone and its scale at scales[i / block]. Host conversions
 * (vkl_convert_host, vkl_tensor_upload/download with an f32 side) quantise and
 * dequantise; vkl_dtype_bytes gives the size of this layout.
 *
 * Ops that read quantised tensors: the matmul family (vkl_matmul, vkl_linear,
 * vkl_linear_lora) as its right operand B, in any permutation of the whole
 * 2-D weight, so that a linear layer's forward (x W^T) and its gradient with
 * respect to the input (dy W) both read the packed weight; conv2d (NF4 and
 * NF4_DQ only) as its whole kernel [O, C, kh, kw], in the forward, the
 * LoRA-fused forward and the input gradient; the embedding gather (NF4 and
 * NF4_DQ) as its table. No op writes one,
 * and no gradient is computed for one (they are frozen).
 *
 * NF4 (QLoRA's 4-bit NormalFloat, as bitsandbytes 0.44 quantize_4bit with
 * quant_type "nf4"): block 64, scale = absmax of the block (f32); code =
 * number of the 15 decision midpoints (bitsandbytes' f32 constants) strictly
 * below x * (1 / absmax) (a value on a midpoint takes the lower code);
 * element 2j in the high nibble and 2j+1 in the low nibble of byte j, an odd
 * count's last low nibble 7 (the code of 0); value = level[code] * absmax.
 * An all-zero block has absmax 0 and codes 7 (exact zeros; bitsandbytes'
 * 1/0 would make them NaN before the decision tree).
 *
 * Double quantisation (QLoRA's): the absmax values less their mean (f32
 * "offset") quantised blockwise, block 256, to 8 bits against bitsandbytes'
 * signed dynamic map, nearest value by its binary search. vkl_nf4_pack with
 * double_quant keeps the NF4 layout and stores the dequantised absmax
 * (table[q] * absmax2 + offset) as f32 scales.
 *
 * VKL_NF4_DQ keeps the double-quantised scales themselves on the device
 * (about 0.516 bytes a weight against NF4's 0.5625 and f16's 2), every part
 * starting on a multiple of 16 bytes:
 *
 *   codes    the NF4 codes as above (code_bytes)
 *   map      at scale_offset: bitsandbytes' 256-entry signed dynamic map (f32),
 *            then the f32 offset (the mean absmax), then 12 zero bytes
 *   absmax2  at absmax2_offset: one f32 per 256 blocks (nblocks2)
 *   qcodes   at qcode_offset: one u8 per 64-block (nblocks), zero padding up
 *            to a multiple of 16 bytes
 *
 * A shader forms block b's scale as map[q[b]] * absmax2[b / 256] + offset
 * (one multiply and one add, never fused: `precise`) and the element as
 * level[code] * scale, the same f32 operations as vkl_nf4_double_dequant and
 * vkl_nf4_dequantize, so host and device values agree bit for bit.
 *
 * GGUF block types (VKL_Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K:
 * llama.cpp's, numbered in io/gguf.h): the memory is the file's blocks in
 * order, nothing else (code_bytes = total_bytes, no separate scales), so the
 * element count must be a whole number of blocks and a matrix's rows whole
 * blocks (GGUF's own rule). Read by the matmul family as its B operand
 * (shaders/gguf_blocks.glsl, the formulas of gguf_dequant.comp and
 * ref/ref_gguf.c, bit for bit); the embedding gather does not read them. */
#ifndef VKL_QUANT_H
#define VKL_QUANT_H

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_NF4_BLOCK 64
#define VKL_NF4_DQ_BLOCK 256
/* NF4_DQ: f32 values from the map's start to absmax2 (map, offset, padding) */
#define VKL_NF4_DQ_MAP_WORDS 260

typedef struct vkl_quant_layout {
    int block;              /* elements per scale */
    uint64_t nblocks;       /* scales */
    uint64_t code_bytes;    /* packed codes */
    uint64_t scale_offset;  /* byte offset of the scales (multiple of 16); NF4_DQ: of the map */
    uint64_t total_bytes;   /* the whole tensor's memory */
    /* NF4_DQ only (0 otherwise) */
    uint64_t nblocks2;       /* absmax2 values (blocks of 256 scales) */
    uint64_t absmax2_offset; /* byte offset of absmax2 */
    uint64_t qcode_offset;   /* byte offset of the u8 scale codes */
} vkl_quant_layout;

/* 1 for block-quantised dtypes. */
int vkl_dtype_is_quant(vkl_dtype t);
/* The memory layout of n elements of the quantised dtype t (-1 if t is not one). */
int vkl_quant_layout_of(vkl_dtype t, uint64_t n, vkl_quant_layout *l);

/* GGUF block dtypes (quant_gguf.c): 1 for VKL_Q4_0 .. VKL_Q6_K; the ggml
 * type number of one (-1 otherwise); the dtype a ggml type is kept in on the
 * device (its block dtype, or f32 / f16 / bf16 for F32, F16, BF16; -1 for
 * any other type); its layout; host conversion from and to f32. */
int vkl_dtype_is_gguf(vkl_dtype t);
int vkl_dtype_gguf_type(vkl_dtype t);
int vkl_gguf_dtype(int type, vkl_dtype *out);
int vkl_gguf_layout_of(vkl_dtype t, uint64_t n, vkl_quant_layout *l);
int vkl_gguf_convert_host(const void *src, vkl_dtype st, void *dst, vkl_dtype dt, size_t n, vkl_err *e);

/* The 16 NF4 levels (QLoRA appendix E, bitsandbytes' constants) and the 15
 * decision midpoints between them. */
extern const float vkl_nf4_levels[16];
extern const float vkl_nf4_midpoints[15];
/* The code of a value already divided by its block's absmax. */
uint8_t vkl_nf4_code(float xn);

/* n values -> packed codes (ceil(n/2) bytes) and ceil(n/64) absmax values.
 * Fails, naming the element, on a NaN or infinite value. */
int vkl_nf4_quantize(const float *x, uint64_t n, uint8_t *packed, float *absmax, vkl_err *e);
/* The inverse: level[code] * absmax[block], one f32 multiply. */
void vkl_nf4_dequantize(const uint8_t *packed, const float *absmax, uint64_t n, float *y);

/* bitsandbytes' signed dynamic 8-bit map (create_dynamic_map(signed=True)),
 * 256 increasing values in [-1, 1]. */
void vkl_dynamic8_table(float table[256]);
/* Double quantisation of nb absmax values: offset = mean (summed in double,
 * rounded to f32), q[i] the
 * 8-bit code of (absmax[i] - offset) in blocks of 256 with absmax2 (one per
 * block, ceil(nb/256) values) = the block's max |absmax - offset|. */
void vkl_nf4_double_quant(const float *absmax, uint64_t nb, float *offset, uint8_t *q, float *absmax2);
/* absmax'[i] = table[q[i]] * absmax2[i / 256] + offset. */
void vkl_nf4_double_dequant(const uint8_t *q, const float *absmax2, float offset, uint64_t nb, float *absmax);

/* f32 -> the layout above (dst holds vkl_dtype_bytes(VKL_NF4, n) bytes);
 * double_quant: the scales are the double-quantised absmax values. */
int vkl_nf4_pack(const float *x, uint64_t n, int double_quant, void *dst, vkl_err *e);
/* The layout -> f32. */
void vkl_nf4_unpack(const void *src, uint64_t n, float *y);

/* f32 -> the VKL_NF4_DQ layout (dst holds vkl_dtype_bytes(VKL_NF4_DQ, n) bytes). */
int vkl_nf4dq_pack(const float *x, uint64_t n, void *dst, vkl_err *e);
/* The VKL_NF4_DQ layout -> f32. */
void vkl_nf4dq_unpack(const void *src, uint64_t n, float *y);

#ifdef __cplusplus
}
#endif

#endif
