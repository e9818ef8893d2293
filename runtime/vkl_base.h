/* vklora base: error reporting, element types, host-side number conversion.
 * Everything in vklora that can fail returns 0 on success and -1 on failure,
 * with a message in a caller-supplied vkl_err naming the file, tensor or limit. */
#ifndef VKL_BASE_H
#define VKL_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vkl_version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, "MAJOR.MINOR.PATCH" (VKL_VERSION_STRING of the
 * headers an application compiled with may differ from the library it runs). */
const char *vkl_version(void);

#if defined(__GNUC__)
#define VKL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define VKL_PRINTF(f, a)
#endif

typedef struct vkl_err {
    char msg[1024];
} vkl_err;

/* Sets the message (printf-style) and returns -1, so `return vkl_fail(e, ...)` reads well.
 * e may be NULL. */
int vkl_fail(vkl_err *e, const char *fmt, ...) VKL_PRINTF(2, 3);
/* Prepends context ("reading model.safetensors: ") to an existing message. */
void vkl_err_prefix(vkl_err *e, const char *fmt, ...) VKL_PRINTF(2, 3);
void vkl_err_clear(vkl_err *e);

/* Element types. Block-quantised types (frozen weights) have no size per
 * element: their memory layout is in quant.h, its size vkl_dtype_bytes. */
typedef enum vkl_dtype {
    VKL_F32 = 0,
    VKL_F16,
    VKL_BF16,
    VKL_I32,
    VKL_I64,
    VKL_U8,
    VKL_I8,
    VKL_I16,
    VKL_F64,
    VKL_BOOL,
    VKL_NF4, /* 4-bit NormalFloat in blocks of 64 with an f32 absmax each (quant.h) */
    VKL_NF4_DQ, /* NF4 whose absmax values are double-quantised to 8 bits on the device (quant.h) */
    /* GGUF (llama.cpp) block types kept as the file's blocks (quant.h) */
    VKL_Q4_0, VKL_Q4_1, VKL_Q5_0, VKL_Q5_1, VKL_Q8_0, VKL_Q4_K, VKL_Q5_K, VKL_Q6_K,
    VKL_DTYPE_COUNT
} vkl_dtype;

size_t vkl_dtype_size(vkl_dtype t); /* bytes per element; 0 for block-quantised types */
/* Bytes that n elements of t take in memory (for a block-quantised type: its
 * codes and scales, quant.h). */
uint64_t vkl_dtype_bytes(vkl_dtype t, uint64_t n);
const char *vkl_dtype_name(vkl_dtype t); /* "f32", "f16", ... */
/* Parses "f32"/"float32"/"F32"... returns -1 when unknown. */
int vkl_dtype_parse(const char *s, vkl_dtype *out);

float vkl_f16_to_f32(uint16_t h);
uint16_t vkl_f32_to_f16(float f);   /* round to nearest even, overflow to inf */
float vkl_bf16_to_f32(uint16_t h);
uint16_t vkl_f32_to_bf16(float f);  /* round to nearest even, NaN kept NaN */

/* Converts n elements between float-like and integer types on the host
 * (f32, f16, bf16, f64, i32, i64, u8, i8, i16, bool); f32 to a block-quantised
 * type quantises (its layout, quant.h), the reverse dequantises.
 * Returns -1 (with message) for a pair it cannot convert. */
int vkl_convert_host(const void *src, vkl_dtype st, void *dst, vkl_dtype dt, size_t n, vkl_err *e);

/* Messages to the user go through here so --quiet and tests can silence them. */
typedef enum { VKL_LOG_ERROR = 0, VKL_LOG_WARN = 1, VKL_LOG_INFO = 2, VKL_LOG_DEBUG = 3 } vkl_log_level;
void vkl_log_set_level(vkl_log_level l);
vkl_log_level vkl_log_get_level(void);
void vkl_log(vkl_log_level l, const char *fmt, ...) VKL_PRINTF(2, 3);
/* Where messages go: fn(level, message without newline, user) for each one
 * at or above the level; NULL restores the default (stderr, prefixed with
 * "error: " / "warning: "). Process-wide: set it before creating contexts. */
typedef void (*vkl_log_fn)(vkl_log_level level, const char *message, void *user);
void vkl_log_set(vkl_log_fn fn, void *user);

#ifdef __cplusplus
}
#endif

#endif
