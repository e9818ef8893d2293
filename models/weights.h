/* A model's weights on the device: internal name -> persistent tensor.
 * Matrices and convolution kernels may be stored as f16 (the accumulation is
 * fp32 either way); vectors (biases, norm scales) stay f32. */
#ifndef VKL_WEIGHTS_H
#define VKL_WEIGHTS_H

#include "vkl.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_weights vkl_weights;

vkl_weights *vkl_weights_new(void);
void vkl_weights_free(vkl_weights *w);
/* Takes ownership of t. Name must be unique. */
int vkl_weights_put(vkl_weights *w, const char *name, vkl_tensor *t, vkl_err *e);
/* NULL when absent. */
vkl_tensor *vkl_weights_find(const vkl_weights *w, const char *name);
/* Like find, but records "missing weight NAME" in the graph when absent. */
vkl_tensor *vkl_weights_need(const vkl_weights *w, vkl_graph *g, const char *fmt, ...) VKL_PRINTF(3, 4);
int vkl_weights_count(const vkl_weights *w);
/* Weight i in name order (0 <= i < count), its name into *name (may be NULL);
 * NULL when i is out of range. The order is stable while no weight is added. */
vkl_tensor *vkl_weights_at(const vkl_weights *w, int i, const char **name);
/* Frees every weight whose name starts with prefix (a network taken off the
 * device between uses); returns how many were dropped. */
int vkl_weights_drop_prefix(vkl_weights *w, const char *prefix);
uint64_t vkl_weights_bytes(const vkl_weights *w);

#ifdef __cplusplus
}
#endif

#endif
