/* The SPIR-V of every shader variant, embedded at build time by
 * cmake/embed_spirv.cmake from the shaders folder. Looked up by variant name. */
#ifndef VKL_SHADER_TABLE_H
#define VKL_SHADER_TABLE_H
#include <stddef.h>
#include <stdint.h>

typedef struct vkl_shader_blob {
    const char *name;
    const uint32_t *code;
    size_t bytes;
} vkl_shader_blob;

extern const vkl_shader_blob vkl_shader_table[];
extern const int vkl_shader_count;

/* NULL when no variant has that name. */
const vkl_shader_blob *vkl_shader_find(const char *name);
#endif
