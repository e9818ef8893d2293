/* What a training run checks before it starts and when it resumes, shared
 * by the trainers: an earlier run's files are never replaced by accident, a
 * resume continues the same run (settings that define it must match; the
 * others may change, with a warning, and are recorded), and the loss log
 * continues at the state's step, not after the rows a killed run wrote past it. */
#ifndef VKL_TRAIN_RESUME_H
#define VKL_TRAIN_RESUME_H

#include "vkl_base.h"
#include "train/dataset.h"

#include <cjson/cJSON.h>

/* Fails when any of paths exists and force is not set, naming it and the
 * ways on (--force, or --resume resume_hint). */
int vkl_train_refuse_existing(const char *const *paths, int n, int force, const char *resume_hint, vkl_err *e);

/* saved, now: settings objects as vkl_train_config_json writes them (absolute
 * paths). A setting that defines the run (model, data, network, batch, seed,
 * ...) that differs fails; another one (rate, schedule, length, ...) is
 * warned about and appended to changes as {"step", "setting", "was", "now"}. */
int vkl_train_check_resume(const cJSON *saved, const cJSON *now, int step, cJSON *changes, vkl_err *e);

/* Rewrites the CSV log at path (atomically) keeping its header and the rows
 * of steps <= step; *seconds gets the `seconds` column of the last row kept
 * (0 when none). A missing log is not an error (*seconds = 0). */
int vkl_train_log_cut(const char *path, int step, double *seconds, vkl_err *e);
/* Saves the state of a step as base/step-NNNNNN, whole or not at all:
 * write(user, dir) fills a hidden temporary folder beside it, which then
 * takes the final name in one step (replacing a folder of that name); only
 * then does base/latest name it (atomically) and the folder it named before
 * go. A failed write (a full disk, an I/O error) removes the temporary
 * folder and leaves latest and the earlier state as they were, so a
 * half-written state is never there under a name that says complete. */
int vkl_train_state_commit(const char *base, int step, int (*write)(void *user, const char *dir, vkl_err *e),
                           void *user, vkl_err *e);

/* Writes dir/state.json (atomically): j, with the data iterator's position
 * as "data", printed. j is deleted. */
int vkl_train_state_json_save(const char *dir, cJSON *j, const vkl_ds_iter *it, vkl_err *e);

#endif
