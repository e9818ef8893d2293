/* What `vklora lm lorahub` and `vklora lorahub` share: the --adapters list,
 * the progress lines on stderr and the log (lorahub_log.csv), and the
 * learnt weights as adapter metadata. */
#ifndef VKL_LORAHUB_REPORT_H
#define VKL_LORAHUB_REPORT_H

#include "lora/lorahub.h"

#include <stdio.h>

#define VKL_LORAHUB_MAX 16

/* Splits a comma-separated list into 2 to VKL_LORAHUB_MAX non-empty
 * entries (buf holds the copy the entries point into). Prints the error
 * as `vklora CMD: ...` and returns -1 on a bad list. */
int vkl_app_lorahub_split(const char *cmd, const char *list, char *buf, size_t size, const char **out, int *n);

typedef struct vkl_app_lorahub_report {
    const char *cmd;            /* "lm lorahub", "lorahub" */
    const char *const *names;   /* [k] the adapters as given */
    int k, quiet;
    double l1;                  /* the L1 weight, for the reference rows' objective */
    FILE *log;                  /* lorahub_log.csv being written, or NULL */
    double *ref;                /* [k + 1] reference losses as they come */
} vkl_app_lorahub_report;

/* Opens the log at path and writes its header. */
int vkl_app_lorahub_report_open(vkl_app_lorahub_report *r, const char *path, vkl_err *e);
/* Closes the log; -1 (with the message) when a write failed. */
int vkl_app_lorahub_report_close(vkl_app_lorahub_report *r, const char *path, vkl_err *e);
/* Hooks for vkl_lorahub_opts (user = the report). */
void vkl_app_lorahub_on_reference(void *user, int which, double loss);
void vkl_app_lorahub_on_generation(void *user, const vkl_lorahub_gen *g);
/* The summary on stderr and the log's last row. */
void vkl_app_lorahub_report_result(vkl_app_lorahub_report *r, const vkl_lorahub_opts *o, const vkl_lorahub_result *res);
/* The weights, losses and inputs as metadata of the composed adapter
 * (lorahub_weights: a JSON array in input order; lorahub_adapters,
 * lorahub_loss, lorahub_average_loss, lorahub_input_losses). */
int vkl_app_lorahub_metadata(vkl_lora *l, const vkl_app_lorahub_report *r, const vkl_lorahub_result *res,
                             const char *const *adapter_names, vkl_err *e);

#endif
