#include "sd/sd_weights.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

vkl_dtype vkl_sd_weight_dtype(const char *name, int ndim, const int64_t *shape, vkl_dtype matrix_dtype)
{
    if (ndim < 2) return VKL_F32;
    if (!vkl_dtype_is_quant(matrix_dtype)) return matrix_dtype;
    /* NF4 and NF4_DQ: the UNet's matrices (read by the matmul) and its
     * convolution kernels (read by conv2d) whose rows, C*kh*kw, are whole
     * blocks of 64, so that no block's absmax spans two output channels
     * (conv_in's 4*3*3 rows stay f16); the text encoder (its embeddings
     * are gathered, not multiplied) stays f16 */
    if (strncmp(name, "unet.", 5)) return VKL_F16;
    if (ndim == 2) return matrix_dtype;
    if (ndim == 4 && (shape[1] * shape[2] * shape[3]) % VKL_NF4_BLOCK == 0) return matrix_dtype;
    return VKL_F16;
}

int vkl_sd_load_weights(vkl_ctx *c, const vkl_sd_source *s, const char *prefix, vkl_dtype matrix_dtype,
                        vkl_weights *w, vkl_err *e)
{
    size_t plen = strlen(prefix);
    float *buf = NULL;
    uint64_t cap = 0;
    for (int i = 0; i < vkl_sd_source_count(s); i++) {
        const vkl_sd_entry *x = vkl_sd_source_at(s, i);
        if (strncmp(x->name, prefix, plen)) continue;
        uint64_t n = vkl_sd_entry_nelem(x);
        if (n > cap) {
            float *nb = realloc(buf, sizeof(float) * n);
            if (!nb) {
                free(buf);
                return vkl_fail(e, "out of host memory reading %s", x->name);
            }
            buf = nb;
            cap = n;
        }
        if (vkl_sd_source_read_f32(s, x, buf, n, e)) {
            free(buf);
            return -1;
        }
        vkl_dtype dt = vkl_sd_weight_dtype(x->name, x->ndim, x->shape, matrix_dtype);
        vkl_tensor *t = vkl_tensor_new(c, dt, x->ndim, x->shape, e);
        if (!t || vkl_tensor_upload(c, t, buf, VKL_F32, e) || vkl_weights_put(w, x->name, t, e)) {
            if (t && !vkl_weights_find(w, x->name)) vkl_tensor_free(t);
            vkl_err_prefix(e, "loading %s: ", x->name);
            free(buf);
            return -1;
        }
    }
    free(buf);
    return 0;
}
