/* A folder of adapters as AUTOMATIC1111 reads its models/Lora folder: every
 * NAME.safetensors in it or in its subfolders (people sort adapters into
 * folders by base model or style) is the adapter NAME, the file name
 * without folder and extension. Used by `<lora:NAME:W>` in `generate` and
 * `serve`, and by serve's adapter list. Hidden entries (a leading '.') are
 * skipped; the walk stops at VKL_LORA_DIR_DEPTH levels below the folder and
 * VKL_LORA_DIR_MAX files, so a link loop or a huge tree cannot hang it. */
#ifndef VKL_LORA_DIR_H
#define VKL_LORA_DIR_H

#include "vkl_base.h"

#include <stddef.h>

#define VKL_LORA_DIR_DEPTH 8
#define VKL_LORA_DIR_MAX 10000

typedef struct vkl_lora_dir_entry {
    char *name; /* the file name without .safetensors */
    char *path; /* dir/sub/.../NAME.safetensors */
} vkl_lora_dir_entry;

/* Every adapter under dir, sorted by path; *out malloc'd (free with
 * vkl_lora_dir_free). */
int vkl_lora_dir_list(const char *dir, vkl_lora_dir_entry **out, int *n, vkl_err *e);
void vkl_lora_dir_free(vkl_lora_dir_entry *l, int n);

/* The file of adapter name: dir/NAME.safetensors when it exists, else the
 * one file of that name in a subfolder. An absent name, and a name two
 * subfolders both hold, are errors naming the files. */
int vkl_lora_dir_find(const char *dir, const char *name, char *path, size_t cap, vkl_err *e);

#endif
