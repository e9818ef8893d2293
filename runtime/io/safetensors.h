/* safetensors files: reading (memory-mapped, fully validated before use) and
 * writing (to a temporary name, then renamed, so a crash never leaves a
 * half-written file). Format: u64 little-endian header length N, N bytes of
 * JSON {name: {dtype, shape, data_offsets:[begin,end]}, "__metadata__": {str: str}},
 * then the raw little-endian data; offsets are relative to the end of the header. */
#ifndef VKL_SAFETENSORS_H
#define VKL_SAFETENSORS_H

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_ST_MAX_DIMS 8

typedef struct vkl_st_tensor {
    const char *name;
    vkl_dtype dtype;
    int ndim;
    int64_t shape[VKL_ST_MAX_DIMS];
    uint64_t nelem;
    uint64_t nbytes;
    const void *data; /* points into the mapping; valid until vkl_st_close. Not
                       * necessarily aligned for dtype: read through vkl_st_read. */
} vkl_st_tensor;

typedef struct vkl_st_file vkl_st_file;

/* Opens and validates the whole header; any inconsistency is an error naming
 * the file, the tensor and the problem. */
int vkl_st_open(const char *path, vkl_st_file **out, vkl_err *e);
/* Same over a caller-owned buffer (which must outlive the file object). */
int vkl_st_open_memory(const void *buf, size_t size, const char *label, vkl_st_file **out,
                       vkl_err *e);
void vkl_st_close(vkl_st_file *f);

const char *vkl_st_path(const vkl_st_file *f);
int vkl_st_count(const vkl_st_file *f);
/* Tensors in file order (ascending data offset). */
const vkl_st_tensor *vkl_st_at(const vkl_st_file *f, int i);
/* NULL when absent. */
const vkl_st_tensor *vkl_st_find(const vkl_st_file *f, const char *name);

/* __metadata__ entries (string values; non-string values are kept as their JSON text). */
int vkl_st_meta_count(const vkl_st_file *f);
const char *vkl_st_meta_key(const vkl_st_file *f, int i);
const char *vkl_st_meta_value(const vkl_st_file *f, int i);
const char *vkl_st_meta_get(const vkl_st_file *f, const char *key); /* NULL when absent */

/* Copies a tensor's data into dst converted to dtype dt (dst holds nelem elements). */
int vkl_st_read(const vkl_st_file *f, const vkl_st_tensor *t, vkl_dtype dt, void *dst, vkl_err *e);
/* Convenience: the tensor named `name` as f32, checking its element count. */
int vkl_st_read_f32(const vkl_st_file *f, const char *name, float *dst, uint64_t nelem, vkl_err *e);

/* Writer: tensors are added (data copied or referenced until finish), then
 * written in one go to path via a temporary file, fsync and rename. */
typedef struct vkl_st_writer vkl_st_writer;
vkl_st_writer *vkl_st_writer_new(void);
/* data is copied. Names must be unique (checked at finish). */
int vkl_st_writer_add(vkl_st_writer *w, const char *name, vkl_dtype dt, int ndim,
                      const int64_t *shape, const void *data, vkl_err *e);
/* Same without the copy: data must stay valid until finish (saves memory when
 * writing a large checkpoint whose tensors already live in host memory). */
int vkl_st_writer_add_ref(vkl_st_writer *w, const char *name, vkl_dtype dt, int ndim,
                          const int64_t *shape, const void *data, vkl_err *e);
/* Keys must be unique (a second value for a key is an error). */
int vkl_st_writer_meta(vkl_st_writer *w, const char *key, const char *value, vkl_err *e);
int vkl_st_writer_finish(vkl_st_writer *w, const char *path, vkl_err *e);
void vkl_st_writer_free(vkl_st_writer *w);

#ifdef __cplusplus
}
#endif

#endif
