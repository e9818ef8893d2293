/* Softmax over the last dimension of scale * x, numerically stable (the
 * maximum is subtracted; long rows are split into chunks whose (max, sum)
 * pairs are merged exactly). Kernels: norm.c. CPU reference:
 * runtime/ref/ref_norm.c. */
#include "norm_internal.h"

#include <math.h>

vkl_tensor *vkl_softmax(vkl_graph *g, vkl_tensor *x, float scale)
{
    if (!x || vkl_graph_failed(g)) return NULL;
    if (!isfinite(scale)) return vkl_graph_set_error(g, "softmax: scale %g must be finite", (double)scale);
    vkl_seg_desc d;
    vkl_seg_rows_desc(x, VKL_SEG_SOFTMAX, scale, &d);
    return vkl_seg_norm(g, "softmax", x, NULL, NULL, &d);
}
