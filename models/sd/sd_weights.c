#include "sd/sd_weights.h"
#include "quant.h"

#include <stdlib.h>
#include <string.h>

vkl_dtype vkl_sd_weight_dtype(const char *name, int ndim, vkl_dtype matrix_dtype)
{
    if (ndim < 2) return VKL_F32;
    /* NF4 and NF4_DQ: the matmul reads them; the convolutions and the text encoder's embeddings do not */
    if (vkl_dtype_is_quant(matrix_dtype) && (ndim != 2 || strncmp(name, "unet.", 5))) return VKL_F16;
    return matrix_dtype;
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
        vkl_dtype dt = vkl_sd_weight_dtype(x->name, x->ndim, matrix_dtype);
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
