/* Folder helpers for writers that produce a folder atomically: build it
 * under a temporary name, then move it into place. */
#ifndef VKL_DIR_H
#define VKL_DIR_H

#include "vkl_base.h"

/* Copies the regular files of src (links followed) into dst, recursively,
 * creating dst and its sub-folders. skip(rel, user) may leave out a file by
 * its path relative to src ("unet/diffusion_pytorch_model.safetensors"). */
int vkl_dir_copy(const char *src, const char *dst, int (*skip)(const char *rel, void *user), void *user, vkl_err *e);
/* Removes a folder and everything in it (no error when absent). */
int vkl_dir_remove(const char *path, vkl_err *e);
/* Moves folder tmp to path. An existing path is replaced only when replace
 * is set: it is moved aside, tmp moved in, then the old one removed. */
int vkl_dir_install(const char *tmp, const char *path, int replace, vkl_err *e);

/* Replaces folder path by folder tmp in one step (Linux renameat2 with
 * RENAME_EXCHANGE, then the old folder, now at tmp, removed): a crash at
 * any moment leaves path either whole-old or whole-new, never absent once it
 * existed. Where the file system cannot exchange, falls back to
 * vkl_dir_install (moved aside, moved in). */
int vkl_dir_replace_atomic(const char *tmp, const char *path, vkl_err *e);
/* Creates path and its missing parents (0755); -1 with errno on failure. */
int vkl_mkdir_p(const char *path);
/* rename(tmp, path), then fsync of path's folder, so that after a crash or
 * power cut the folder holds the new file under its name, not the old one
 * or none (the file's own data must already be fsynced). 0, or -1 with
 * errno. Folders whose file system cannot fsync a directory are accepted. */
int vkl_rename_durable(const char *tmp, const char *path);
/* Writes text to path through a temporary file in the same folder, flushed
 * to disk, then renamed over path: readers see the old or the new file. */
int vkl_write_text_atomic(const char *path, const char *text, vkl_err *e);

#endif
