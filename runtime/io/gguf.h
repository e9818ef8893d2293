/* GGUF files (llama.cpp's model format, versions 2 and 3, little-endian):
 * reading (memory-mapped, every count, length, offset, type and alignment
 * validated before anything is handed out) and writing (to a temporary name,
 * then renamed).
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 metadata count; the
 * metadata (key string, u32 value type, value); the tensor infos (name
 * string, u32 dims, u64 ne[dims] innermost first, u32 block type, u64
 * offset); padding to `general.alignment` (default 32); the data, each
 * tensor at its offset from the start of the data (a multiple of the
 * alignment). A string is a u64 byte length and the bytes (no NUL). */
#ifndef VKL_GGUF_H
#define VKL_GGUF_H

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata value types, numbered as in the file. */
typedef enum vkl_gguf_vtype {
    VKL_GGUF_U8 = 0, VKL_GGUF_I8 = 1, VKL_GGUF_U16 = 2, VKL_GGUF_I16 = 3, VKL_GGUF_U32 = 4, VKL_GGUF_I32 = 5,
    VKL_GGUF_F32 = 6, VKL_GGUF_BOOL = 7, VKL_GGUF_STRING = 8, VKL_GGUF_ARRAY = 9, VKL_GGUF_U64 = 10,
    VKL_GGUF_I64 = 11, VKL_GGUF_F64 = 12, VKL_GGUF_VTYPE_COUNT
} vkl_gguf_vtype;

/* Tensor block types, numbered as ggml's; only these are read. */
typedef enum vkl_gguf_type {
    VKL_GQ_F32 = 0, VKL_GQ_F16 = 1, VKL_GQ_Q4_0 = 2, VKL_GQ_Q4_1 = 3, VKL_GQ_Q5_0 = 6, VKL_GQ_Q5_1 = 7,
    VKL_GQ_Q8_0 = 8, VKL_GQ_Q4_K = 12, VKL_GQ_Q5_K = 13, VKL_GQ_Q6_K = 14, VKL_GQ_BF16 = 30
} vkl_gguf_type;

/* Elements per block and bytes per block of a supported type; 0 for any
 * other number (an unsupported or unknown type). */
int vkl_gguf_type_block(int type);
int vkl_gguf_type_bytes(int type);
const char *vkl_gguf_type_name(int type);         /* "Q4_K"; "?" when unknown */
int vkl_gguf_type_parse(const char *s, int *type); /* case-insensitive name; -1 when unknown */
const char *vkl_gguf_vtype_name(int vtype);       /* "u32", "string", ... */
/* nelem f32 values (a whole number of blocks) into blocks of `type` at out
 * (nelem / block * bytes bytes); gguf_quant.c. */
int vkl_gguf_quantize(int type, const float *x, uint64_t nelem, void *out, vkl_err *e);

#define VKL_GGUF_MAX_DIMS 4
#define VKL_GGUF_DEFAULT_ALIGNMENT 32

typedef struct vkl_gguf_tensor {
    const char *name;
    int type;                           /* vkl_gguf_type */
    int ndim;
    uint64_t ne[VKL_GGUF_MAX_DIMS];     /* innermost (row length) first; 1 past ndim */
    uint64_t nelem, nbytes;
    uint64_t offset;                    /* from the start of the data section */
    const uint8_t *data;                /* inside the mapping, valid until close */
} vkl_gguf_tensor;

/* One metadata entry. Scalars are widened into the union (u for unsigned
 * types and bool, i for signed, f for floats); a string is s/len (NUL
 * terminated copy); an array has atype and n, its strings in strs/lens, its
 * numbers read with vkl_gguf_arr_num. */
typedef struct vkl_gguf_kv {
    const char *key;
    int type, atype;
    uint64_t n;
    union { uint64_t u; int64_t i; double f; } v;
    const char *s;
    uint64_t len;
    const uint8_t *raw;                 /* array payload inside the mapping */
    const char **strs;                  /* string arrays: n NUL-terminated copies */
    uint64_t *lens;
} vkl_gguf_kv;

typedef struct vkl_gguf_file vkl_gguf_file;

int vkl_gguf_open(const char *path, vkl_gguf_file **out, vkl_err *e);
/* Over a caller-owned buffer that must outlive the file object. */
int vkl_gguf_open_memory(const void *buf, size_t size, const char *label, vkl_gguf_file **out, vkl_err *e);
void vkl_gguf_close(vkl_gguf_file *f);

const char *vkl_gguf_label(const vkl_gguf_file *f);
uint32_t vkl_gguf_version(const vkl_gguf_file *f);
uint32_t vkl_gguf_alignment(const vkl_gguf_file *f);

int vkl_gguf_kv_count(const vkl_gguf_file *f);
const vkl_gguf_kv *vkl_gguf_kv_at(const vkl_gguf_file *f, int i);
const vkl_gguf_kv *vkl_gguf_kv_find(const vkl_gguf_file *f, const char *key); /* NULL when absent */
/* Typed look-ups: 1 when found with a fitting type (any integer type whose
 * value fits for _uint, f32/f64 for _float), 0 when absent, -1 (with a message
 * naming the key) when present with another type or out of range. */
int vkl_gguf_get_uint(const vkl_gguf_file *f, const char *key, uint64_t *out, vkl_err *e);
int vkl_gguf_get_float(const vkl_gguf_file *f, const char *key, double *out, vkl_err *e);
int vkl_gguf_get_bool(const vkl_gguf_file *f, const char *key, int *out, vkl_err *e);
int vkl_gguf_get_str(const vkl_gguf_file *f, const char *key, const char **out, vkl_err *e);
/* Element i of a numeric array as a double (exact for every integer below 2^53). */
double vkl_gguf_arr_num(const vkl_gguf_kv *kv, uint64_t i);

int vkl_gguf_count(const vkl_gguf_file *f);
const vkl_gguf_tensor *vkl_gguf_at(const vkl_gguf_file *f, int i); /* file order */
const vkl_gguf_tensor *vkl_gguf_find(const vkl_gguf_file *f, const char *name);

/* Writer: metadata and tensors in the order given; tensors are copied. The
 * alignment is `general.alignment` when it is set (a u32 power of two). */
typedef struct vkl_gguf_writer vkl_gguf_writer;
vkl_gguf_writer *vkl_gguf_writer_new(void);
void vkl_gguf_writer_free(vkl_gguf_writer *w);
/* A scalar of any numeric type or bool: val points to the C type of that
 * size (uint8_t, int16_t, float, double, ... ; bool as uint8_t). */
int vkl_gguf_w_scalar(vkl_gguf_writer *w, const char *key, int vtype, const void *val, vkl_err *e);
int vkl_gguf_w_u32(vkl_gguf_writer *w, const char *key, uint32_t v, vkl_err *e);
int vkl_gguf_w_f32(vkl_gguf_writer *w, const char *key, float v, vkl_err *e);
int vkl_gguf_w_bool(vkl_gguf_writer *w, const char *key, int v, vkl_err *e);
int vkl_gguf_w_str(vkl_gguf_writer *w, const char *key, const char *s, vkl_err *e);
/* An array of n values of atype (a numeric type or bool: a packed C array;
 * STRING: const char *const *). */
int vkl_gguf_w_array(vkl_gguf_writer *w, const char *key, int atype, uint64_t n, const void *vals, vkl_err *e);
/* data holds the tensor's bytes in its block type (nbytes checked against ne). */
int vkl_gguf_w_tensor(vkl_gguf_writer *w, const char *name, int type, int ndim, const uint64_t *ne,
                      const void *data, uint64_t nbytes, vkl_err *e);
int vkl_gguf_writer_finish(vkl_gguf_writer *w, const char *path, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
