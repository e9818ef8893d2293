#include "shader_table.h"
#include <string.h>

const vkl_shader_blob *vkl_shader_find(const char *name)
{
    for (int i = 0; i < vkl_shader_count; i++)
        if (!strcmp(vkl_shader_table[i].name, name)) return &vkl_shader_table[i];
    return NULL;
}
