#include "sd/sd_random.h"

#include "io/safetensors.h"
#include "rng.h"
#include "sd/sd_layout.h"
#include "sd/sd_weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void vkl_sd_random_fill(const vkl_sd_param *p, int index, uint64_t seed, float *x, uint64_t n)
{
    const char *name = p->name;
    size_t len = strlen(name);
    int is_bias = len > 5 && !strcmp(name + len - 5, ".bias");
    int is_norm = p->ndim == 1 && !is_bias && (strstr(name, "norm") || strstr(name, "layer_norm"));
    if (is_bias) {
        memset(x, 0, sizeof(float) * n);
        return;
    }
    if (is_norm) {
        for (uint64_t i = 0; i < n; i++) x[i] = 1.0f;
        return;
    }
    double sd;
    if (strstr(name, "embedding")) sd = 0.02;
    else {
        uint64_t fan_in = 1;
        for (int d = 1; d < p->ndim; d++) fan_in *= (uint64_t)p->shape[d];
        sd = 1.0 / sqrt((double)(fan_in ? fan_in : 1));
    }
    vkl_rng r;
    vkl_rng_init(&r, seed, 0x5eed0000ull + (uint64_t)index);
    vkl_rng_normal(&r, x, n);
    for (uint64_t i = 0; i < n; i++) x[i] = (float)(x[i] * sd);
}

static uint64_t nelem(const vkl_sd_param *p)
{
    uint64_t n = 1;
    for (int d = 0; d < p->ndim; d++) n *= (uint64_t)p->shape[d];
    return n;
}

/* Uploads the parameters of ps whose name starts with prefix. */
static int upload_random(vkl_ctx *c, const vkl_sd_params *ps, const char *prefix, vkl_dtype dtype, uint64_t seed,
                         vkl_weights *w, vkl_err *e)
{
    size_t pl = strlen(prefix);
    int rc = 0;
    float *buf = NULL;
    uint64_t cap = 0;
    for (int i = 0; i < ps->n && !rc; i++) {
        const vkl_sd_param *p = &ps->v[i];
        if (strncmp(p->name, prefix, pl)) continue;
        uint64_t n = nelem(p);
        if (n > cap) {
            free(buf);
            cap = n;
            buf = malloc(sizeof(float) * n);
            if (!buf) {
                rc = vkl_fail(e, "out of host memory");
                break;
            }
        }
        vkl_sd_random_fill(p, i, seed, buf, n);
        vkl_tensor *t = vkl_tensor_new(c, vkl_sd_weight_dtype(p->name, p->ndim, p->shape, dtype), p->ndim, p->shape, e);
        if (!t || vkl_tensor_upload(c, t, buf, VKL_F32, e) || vkl_weights_put(w, p->name, t, e)) {
            if (t && !vkl_weights_find(w, p->name)) vkl_tensor_free(t);
            rc = -1;
        }
    }
    free(buf);
    return rc;
}

int vkl_sd_random_weights(vkl_ctx *c, const vkl_sd_config *cfg, const char *prefix, vkl_dtype dtype, uint64_t seed,
                          vkl_weights *w, vkl_err *e)
{
    vkl_sd_params ps;
    if (vkl_sd_params_build(cfg, &ps, e)) return -1;
    int rc = upload_random(c, &ps, prefix, dtype, seed, w, e);
    vkl_sd_params_free(&ps);
    return rc;
}

int vkl_vae_random_weights(vkl_ctx *c, const vkl_sd_vae_config *cfg, vkl_dtype dtype, uint64_t seed, vkl_weights *w,
                           vkl_err *e)
{
    vkl_sd_params ps;
    if (vkl_sd_vae_params_build(cfg, &ps, e)) return -1;
    int rc = upload_random(c, &ps, "vae.", dtype, seed, w, e);
    vkl_sd_params_free(&ps);
    return rc;
}

/* A fused original tensor (OpenCLIP's in_proj: q, k, v stacked along rows)
 * collected from its parts. */
typedef struct fused {
    char name[256];
    float *data;
    int filled, parts, ndim;
    int64_t shape[4];
} fused;

/* Adds x, the values of p, to the checkpoint under its original name; fused
 * parts wait in fu until every part is in. keep collects what the writer
 * references until it finishes. */
static int add_original(vkl_st_writer *w, const vkl_sd_param *p, const vkl_sd_src_name *cand, const float *x,
                        vkl_dtype dt, fused *fu, int *nfu, void **keep, int *nkeep, vkl_err *e)
{
    uint64_t n = nelem(p);
    int64_t shape[4] = {p->shape[0], p->shape[1], p->shape[2], p->shape[3]};
    int ndim = p->ndim;
    const float *src = x;
    float *tmp = NULL;
    if (cand->xform == VKL_SD_X_SPLIT) {
        fused *f = NULL;
        for (int k = 0; k < *nfu && !f; k++)
            if (!strcmp(fu[k].name, cand->name)) f = &fu[k];
        if (!f) {
            f = &fu[(*nfu)++];
            snprintf(f->name, sizeof f->name, "%s", cand->name);
            f->parts = cand->parts;
            f->ndim = ndim;
            memcpy(f->shape, shape, sizeof shape);
            f->shape[0] *= cand->parts;
            if (!(f->data = malloc(sizeof(float) * n * (size_t)cand->parts))) return vkl_fail(e, "out of host memory");
        }
        memcpy(f->data + (size_t)cand->part * n, x, sizeof(float) * n);
        if (++f->filled < f->parts) return 0;
        src = f->data;
        n *= (uint64_t)f->parts;
        ndim = f->ndim;
        memcpy(shape, f->shape, sizeof shape);
    } else if (cand->xform == VKL_SD_X_TRANSPOSE) {
        /* OpenCLIP's text_projection is x @ P: the Linear weight transposed */
        int64_t a = p->shape[0], b = p->shape[1];
        if (!(tmp = malloc(sizeof(float) * n))) return vkl_fail(e, "out of host memory");
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++) tmp[j * a + i] = x[i * b + j];
        shape[0] = b;
        shape[1] = a;
        src = tmp;
    } else if (!strncmp(p->name, "vae.", 4) && strstr(p->name, "mid_block.attentions") && p->ndim == 2) {
        /* the original VAE keeps its mid-block attention projections as 1x1 convolutions */
        shape[2] = shape[3] = 1;
        ndim = 4;
    }
    void *out = malloc(vkl_dtype_size(dt) * (n ? n : 1));
    int rc = out ? vkl_convert_host(src, VKL_F32, out, dt, n, e) : vkl_fail(e, "out of host memory");
    free(tmp);
    if (out) keep[(*nkeep)++] = out;
    if (!rc) rc = vkl_st_writer_add_ref(w, cand->name, dt, ndim, shape, out, e);
    return rc;
}

int vkl_sd_write_random_checkpoint(const vkl_sd_config *cfg, const char *path, vkl_dtype dtype, uint64_t seed,
                                   vkl_err *e)
{
    vkl_sd_params ps;
    memset(&ps, 0, sizeof ps);
    if (vkl_sd_params_build(cfg, &ps, e)) return -1;
    vkl_st_writer *w = vkl_st_writer_new();
    void **keep = calloc((size_t)ps.n + 1, sizeof *keep);
    fused *fu = calloc((size_t)ps.n + 1, sizeof *fu);
    int nkeep = 0, nfu = 0;
    int rc = (!w || !keep || !fu) ? vkl_fail(e, "out of host memory") : 0;
    for (int i = 0; i < ps.n && !rc; i++) {
        const vkl_sd_param *p = &ps.v[i];
        vkl_sd_src_name cand[4];
        int nc = vkl_sd_ldm_source_name(cfg, p->name, cand, 4);
        if (nc < 1) {
            rc = vkl_fail(e, "no original-layout name for %s", p->name);
            break;
        }
        uint64_t n = nelem(p);
        float *x = malloc(sizeof(float) * (n ? n : 1));
        if (!x) {
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        vkl_sd_random_fill(p, i, seed, x, n);
        rc = add_original(w, p, &cand[0], x, p->ndim >= 2 ? dtype : VKL_F32, fu, &nfu, keep, &nkeep, e);
        free(x);
    }
    for (int k = 0; k < nfu && !rc; k++)
        if (fu[k].filled != fu[k].parts) rc = vkl_fail(e, "%s: %d of %d parts", fu[k].name, fu[k].filled, fu[k].parts);
    if (!rc) rc = vkl_st_writer_meta(w, "vklora", "random weights (vklora init-model)", e);
    if (!rc) rc = vkl_st_writer_finish(w, path, e);
    vkl_st_writer_free(w);
    for (int i = 0; keep && i < nkeep; i++) free(keep[i]);
    for (int k = 0; fu && k < nfu; k++) free(fu[k].data);
    free(keep);
    free(fu);
    vkl_sd_params_free(&ps);
    return rc;
}
