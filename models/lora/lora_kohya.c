/* kohya-ss keys (`<kohya name>.lora_down.weight`, `.lora_up.weight`,
 * `.lora_mid.weight`, `.alpha`, `.dora_scale`) and the kohya/LyCORIS writer. */
#include "lora/lora_file.h"

#include <stdlib.h>
#include <string.h>

const char *vkl_lora_role_name(vkl_lora_role r)
{
    static const char *n[VKL_LORA_ROLES] = {
        "lora_down.weight", "lora_up.weight", "lora_mid.weight", "hada_w1_a", "hada_w1_b",
        "hada_w2_a",        "hada_w2_b",      "hada_t1",         "hada_t2",   "lokr_w1",
        "lokr_w1_a",        "lokr_w1_b",      "lokr_w2",         "lokr_w2_a", "lokr_w2_b",
        "lokr_t2",          "dora_scale",     "ia3_l"};
    return (unsigned)r < VKL_LORA_ROLES ? n[r] : "?";
}

/* Length of key minus ".suffix" when key ends with it, else 0. */
static size_t strip(const char *key, const char *suffix)
{
    size_t n = strlen(key), m = strlen(suffix);
    if (n <= m + 1 || key[n - m - 1] != '.' || strcmp(key + n - m, suffix)) return 0;
    return n - m - 1;
}

size_t vkl_lora_kohya_part(const char *key, int *role)
{
    static const int roles[] = {VKL_LORA_DOWN, VKL_LORA_UP, VKL_LORA_MID, VKL_LORA_MAG};
    size_t n;
    for (size_t i = 0; i < sizeof roles / sizeof *roles; i++)
        if ((n = strip(key, vkl_lora_role_name(roles[i])))) {
            *role = roles[i];
            return n;
        }
    if ((n = strip(key, "alpha"))) {
        *role = -1;
        return n;
    }
    return 0;
}

static int add(vkl_st_writer *w, const char *kname, const char *suffix, const vkl_lora_tensor *t,
               int ndim, const int64_t *shape, vkl_err *e)
{
    char key[1024];
    if ((size_t)snprintf(key, sizeof key, "%s.%s", kname, suffix) >= sizeof key)
        return vkl_fail(e, "key too long: %s", kname);
    return vkl_lora_tensor_write(w, key, t, ndim, shape, e);
}

int vkl_lora_tensor_write(vkl_st_writer *w, const char *key, const vkl_lora_tensor *t, int ndim, const int64_t *shape,
                          vkl_err *e)
{
    uint64_t n = vkl_lora_tensor_nelem(t);
    vkl_dtype dt = t->dtype == VKL_F16 || t->dtype == VKL_BF16 ? t->dtype : VKL_F32;
    if (dt == VKL_F32) return vkl_st_writer_add(w, key, dt, ndim, shape, t->data, e);
    uint16_t *h = malloc((size_t)n * 2);
    if (!h) return vkl_fail(e, "out of memory");
    int rc = vkl_convert_host(t->data, VKL_F32, h, dt, (size_t)n, e);
    if (!rc) rc = vkl_st_writer_add(w, key, dt, ndim, shape, h, e);
    free(h);
    return rc;
}

static int write_alpha(vkl_st_writer *w, const vkl_lora *l, const vkl_lora_module *m, vkl_err *e)
{
    if (!m->rank) return 0; /* LoKr with full factors: alpha has no effect */
    /* kohya's scale is alpha/rank: write the alpha that gives this module's scale */
    float a = (m->has_alpha && !l->rslora) ? m->alpha : (float)(m->scale * m->rank);
    vkl_lora_tensor t = {0, {0}, &a, m->alpha_dtype};
    return add(w, m->kname, "alpha", &t, 0, NULL, e);
}

int vkl_lora_save_kohya(const vkl_lora *l, const char *path, vkl_err *e)
{
    vkl_st_writer *w = vkl_st_writer_new();
    if (!w) return vkl_fail(e, "out of memory");
    int rc = 0;
    for (int i = 0; i < l->n && !rc; i++) {
        const vkl_lora_module *m = &l->m[i];
        if (!m->kname) {
            rc = vkl_fail(e, "module %s has no kohya name", vkl_lora_module_label(m));
            break;
        }
        if (m->kind == VKL_LORA_KIND_IA3) {
            rc = vkl_fail(e, "module %s: IA3 vectors have no kohya/LyCORIS form (write PEFT instead)",
                          vkl_lora_module_label(m));
            break;
        }
        for (int r = 0; r < VKL_LORA_ROLES && !rc; r++) {
            const vkl_lora_tensor *t = &m->t[r];
            if (!t->data) continue;
            int64_t shape[4];
            int nd = t->ndim;
            memcpy(shape, t->shape, sizeof shape);
            /* a PEFT magnitude [out] becomes LyCORIS's output-axis [out,1(,1,1)] */
            if (r == VKL_LORA_MAG && nd == 1) {
                nd = m->wndim;
                for (int k = 1; k < nd; k++) shape[k] = 1;
            }
            rc = add(w, m->kname, vkl_lora_role_name(r), t, nd, shape, e);
        }
        if (!rc) rc = write_alpha(w, l, m, e);
    }
    for (int i = 0; i < l->n_meta && !rc; i++) rc = vkl_st_writer_meta(w, l->meta_key[i], l->meta_val[i], e);
    if (!rc) rc = vkl_st_writer_finish(w, path, e);
    vkl_st_writer_free(w);
    return rc;
}
