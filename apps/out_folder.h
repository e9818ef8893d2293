/* Output folders of the adapter-writing commands (lm train, lm lorahub, lm
 * hyperlora emit): the folder is built under a temporary name and renamed
 * into place; an existing one is replaced only when it holds nothing but the
 * command's own files, and only with --force. */
#ifndef VKL_OUT_FOLDER_H
#define VKL_OUT_FOLDER_H

#include "vkl_base.h"

/* 0: out is absent; 1: an empty folder, or (with force) one holding only
 * files named in names; -1 (e set): refused. */
int vkl_app_out_folder_check(const char *out, const char *const *names, int n, int force, vkl_err *e);
/* Removes the files named in names from dir, then dir if it is left empty. */
void vkl_app_out_folder_remove(const char *dir, const char *const *names, int n);

#endif
