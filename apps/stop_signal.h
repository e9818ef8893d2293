/* Ctrl-C / SIGTERM during a long command (lm train, lorahub's search,
 * hyperlora training): the handlers only set a flag, which the command reads between
 * its units of work (vkl_app_stop_check), so it ends cleanly with
 * "interrupted", removes what it began writing and exits 130. */
#ifndef VKL_STOP_SIGNAL_H
#define VKL_STOP_SIGNAL_H

#include "vkl_base.h"

void vkl_app_stop_catch(void);
void vkl_app_stop_restore(void);
/* 1 once a signal came (or vkl_app_stop_request was called). */
int vkl_app_stop_requested(void);
/* Stops as if a signal had come: lm train when another rank under mpirun got one. */
void vkl_app_stop_request(void);
/* -1 with "interrupted; nothing written" when a signal came, else 0. */
int vkl_app_stop_check(vkl_err *e);

#endif
