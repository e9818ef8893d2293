/* Tensor shapes as text and compared, for the loaders' shape errors (LoRA
 * files, LoRAHub, checkpoint layouts, VAE folders). */
#ifndef VKL_SHAPE_H
#define VKL_SHAPE_H

#include <stddef.h>
#include <stdint.h>

/* "[320,4,3,3]" into out (truncated to size). */
void vkl_shape_str(int ndim, const int64_t *shape, char *out, size_t size);
/* 1 when a and b are equal once trailing unit dimensions are dropped
 * ([o,i] == [o,i,1,1]: a 1x1 convolution stored for a linear). */
int vkl_shape_same_squeezed(int na, const int64_t *a, int nb, const int64_t *b);
/* 1 when a and b are equal, dimension for dimension. */
int vkl_shape_same(int na, const int64_t *a, int nb, const int64_t *b);

#endif
