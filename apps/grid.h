/* Image grids with numeric labels (the X/Y plot people make by hand). */
#ifndef VKL_GRID_H
#define VKL_GRID_H
#include "io/image.h"
/* n RGB u8 images of one size side by side, each under a label band showing
 * labels[i] (digits, '.', '-' and ':' are drawn; other characters are skipped). */
int vkl_grid_row(const vkl_image *imgs, const char *const *labels, int n, vkl_image *out, vkl_err *e);
#endif
