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

/* The end of a command that built its output under tmp: rc 0 renames tmp (a
 * file, or with names a folder holding those files) to out, after removing
 * the old folder's files when out_exists; otherwise, or when that fails,
 * removes tmp. Prints "vklora CMD: <error>" or "CMD: wrote OUT"; the exit
 * status: 0, 1, or 130 when a stop signal ended the run (stop_signal.h). */
int vkl_app_out_finish(const char *cmd, int rc, const char *tmp, const char *out, const char *const *names, int n,
                       int out_exists, vkl_err *e);

#endif
