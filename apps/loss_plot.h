#ifndef VKL_LOSS_PLOT_H
#define VKL_LOSS_PLOT_H
#include "vkl_base.h"
/* Writes a PNG plot of n losses (range and last smoothed value in its text). */
int vkl_loss_plot(const char *path, const float *loss, int n, vkl_err *e);
#endif
