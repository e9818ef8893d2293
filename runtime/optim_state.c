/* The optimiser's per-parameter state as one safetensors file (optim.h):
 * what the trainers' state folders hold for --resume. */
#include "io/safetensors.h"
#include "optim.h"
#include "vkl_internal.h"

#include <stdlib.h>

int vkl_adamw_state_save(vkl_adamw *a, vkl_ctx *c, int np, const char *path, vkl_err *e)
{
    vkl_st_writer *w = vkl_st_writer_new();
    if (!w) return vkl_fail(e, "out of host memory");
    int rc = 0;
    for (int i = 0; i < np && !rc; i++) {
        vkl_tensor *st[2];
        const char *nm[2];
        int ns = vkl_adamw_state(a, i, st, nm);
        for (int k = 0; k < ns && !rc; k++) {
            size_t bytes = (size_t)vkl_tensor_nelem(st[k]) * vkl_dtype_size(st[k]->dtype);
            void *buf = malloc(bytes ? bytes : 1);
            char name[64];
            snprintf(name, sizeof name, "%s.%d", nm[k], i);
            rc = !buf ? vkl_fail(e, "out of host memory")
                      : vkl_tensor_download(c, st[k], buf, st[k]->dtype, e) ||
                            vkl_st_writer_add(w, name, st[k]->dtype, st[k]->ndim, st[k]->shape, buf, e);
            free(buf);
        }
    }
    if (!rc) rc = vkl_st_writer_finish(w, path, e);
    vkl_st_writer_free(w);
    return rc;
}

int vkl_adamw_state_load(vkl_adamw *a, vkl_ctx *c, int np, const char *path, vkl_err *e)
{
    vkl_st_file *f = NULL;
    if (vkl_st_open(path, &f, e)) return -1;
    int rc = 0;
    for (int i = 0; i < np && !rc; i++) {
        vkl_tensor *st[2];
        const char *nm[2];
        int ns = vkl_adamw_state(a, i, st, nm);
        for (int k = 0; k < ns && !rc; k++) {
            char name[64];
            snprintf(name, sizeof name, "%s.%d", nm[k], i);
            const vkl_st_tensor *x = vkl_st_find(f, name);
            if (!x || x->nelem != (uint64_t)vkl_tensor_nelem(st[k]) || x->dtype != st[k]->dtype) {
                rc = vkl_fail(e, "%s: tensor %s is missing or has the wrong size or type", path, name);
                break;
            }
            size_t bytes = (size_t)x->nelem * vkl_dtype_size(x->dtype);
            void *buf = malloc(bytes ? bytes : 1);
            rc = !buf ? vkl_fail(e, "out of host memory")
                      : vkl_st_read(f, x, x->dtype, buf, e) || vkl_tensor_upload(c, st[k], buf, x->dtype, e);
            free(buf);
        }
    }
    vkl_st_close(f);
    return rc;
}
