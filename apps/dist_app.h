/* The program's communicator for data-parallel training (runtime/dist.h).
 * Built with VKLORA_MPI and started by mpirun: MPI; otherwise (or when not
 * started by a launcher) NULL, a single process, and nothing changes. */
#ifndef VKL_DIST_APP_H
#define VKL_DIST_APP_H

#include "dist.h"

#include <stddef.h>

/* The communicator of this run (NULL: one process); set by vkl_app_dist_init. */
extern vkl_dist *vkl_app_dist;

/* Starts MPI when a launcher started this process; then, unless a device was
 * named (device_spec, $VKLORA_DEVICE), gives each local rank a GPU of the
 * machine round-robin; a comma-separated device_spec ("0,1") gives local
 * rank i its i-th entry. Non-root ranks log warnings and errors only.
 * Returns 0, or -1 after printing why. */
int vkl_app_dist_init(int *argc, char ***argv, const char *device_spec);
/* A per-rank device list ("A,B,...": local rank i takes entry i mod the
 * count) is well formed and every entry names a device of this machine: 0,
 * or -1 with the reason in why. A spec without a comma passes (checked when
 * the context is made). */
int vkl_app_device_list_check(const char *spec, char *why, size_t why_size);
/* A command's own --device SPEC: a single device for every rank, or a
 * per-rank list as the global option takes it (this rank's entry). Returns 0,
 * or 2 (bad usage) after printing "vklora CMD: why". */
int vkl_app_device_option(const char *spec, const char *cmd);
/* How this rank's device was chosen ("--device entry 2 (cpu)", "GPU 1 of 2,
 * round-robin"); "" when no rule picked it (one device, or --device N). */
const char *vkl_app_device_choice(void);
/* Ends MPI. With status != 0 on several ranks' run, ends every rank (a rank
 * that failed alone would leave the others waiting in a collective). */
void vkl_app_dist_finish(int status);
/* Whether the build has MPI ("MPI (Open MPI 4.1.4)" or "none"). */
const char *vkl_app_dist_transport(void);

#endif
