/* The weights of an HF model folder: model.safetensors, or the shards that
 * model.safetensors.index.json names in its weight_map (each opened once). */
#ifndef VKL_LLAMA_SHARDS_H
#define VKL_LLAMA_SHARDS_H

#include "io/safetensors.h"

typedef struct vkl_llama_shards {
    vkl_st_file **f;
    int n;
    char label[4096]; /* the file or index, for messages */
} vkl_llama_shards;

int vkl_llama_shards_open(const char *dir, vkl_llama_shards *s, vkl_err *e);
/* The tensor and the shard holding it, or NULL. */
const vkl_st_tensor *vkl_llama_shards_find(const vkl_llama_shards *s, const char *name, const vkl_st_file **file);
void vkl_llama_shards_close(vkl_llama_shards *s);

#endif
