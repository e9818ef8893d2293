/* Outputs of the writing commands. Folders (lm train, lm lorahub, lm
 * hyperlora emit): the folder is built under a temporary name and renamed
 * into place; an existing one is replaced only when it holds nothing but the
 * command's own files, and only with --force. Files (convert, merge,
 * lorahub, hyperlora ...): an existing one only with --force. */
#ifndef VKL_OUT_FOLDER_H
#define VKL_OUT_FOLDER_H

#include "vkl_base.h"

/* 0: out is absent; 1: an empty folder, or (with force) one holding only
 * files named in names; -1 (e set): refused. */
int vkl_app_out_folder_check(const char *out, const char *const *names, int n, int force, vkl_err *e);
/* Removes the files named in names from dir, then dir if it is left empty. */
void vkl_app_out_folder_remove(const char *dir, const char *const *names, int n);

/* 0: out is absent, or force is given; -1 (e: "OUT exists; pass --force to
 * replace it"): refused. */
int vkl_app_out_file_check(const char *out, int force, vkl_err *e);
/* The same, the refusal printed as "vklora CMD: ..." on stderr: 0, or 1 (the
 * command's exit status). */
int vkl_app_out_file_refuse(const char *cmd, const char *out, int force);

#endif
