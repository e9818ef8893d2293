#ifndef VKL_LOSS_PLOT_H
#define VKL_LOSS_PLOT_H
#include "vkl_base.h"
/* Writes a PNG plot of n losses (range and last smoothed value in its text). */
int vkl_loss_plot(const char *path, const float *loss, int n, vkl_err *e);
/* The same plot from a training log's `loss` column (a resumed run's whole curve). */
int vkl_loss_plot_csv(const char *png, const char *csv, vkl_err *e);
#endif
