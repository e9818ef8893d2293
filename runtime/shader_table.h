/* The SPIR-V of every shader variant, embedded at build time by
 * cmake/embed_spirv.cmake from the shaders folder, indexed by the variant's
 * vkl_kernel constant (shader_ids.h, generated with it). */
#ifndef VKL_SHADER_TABLE_H
#define VKL_SHADER_TABLE_H
#include <stddef.h>
#include <stdint.h>

#include "shader_ids.h"

typedef struct vkl_shader_blob {
    const char *name;
    const uint32_t *code;
    size_t bytes;
} vkl_shader_blob;

extern const vkl_shader_blob vkl_shader_table[]; /* [VKL_KERNEL_COUNT] */
extern const int vkl_shader_count;

#endif
