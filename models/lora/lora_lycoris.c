/* LyCORIS LoHa (`hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, Tucker
 * `hada_t1`, `hada_t2`) and LoKr (`lokr_w1` or `lokr_w1_a/_b`, `lokr_w2` or
 * `lokr_w2_a/_b`, Tucker `lokr_t2`): keys, shape checks, implied weight shape.
 * Factor layouts follow LyCORIS as ComfyUI and A1111 read it; Tucker cores
 * combine as einsum("i j k l, j r, i p -> p r k l", t, w_b, w_a). */
#include "lora/lora_file.h"

#include <string.h>

size_t vkl_lora_lycoris_part(const char *key, int *role)
{
    size_t n = strlen(key);
    for (int r = VKL_LORA_HADA_W1A; r <= VKL_LORA_LOKR_T2; r++) {
        const char *s = vkl_lora_role_name(r);
        size_t m = strlen(s);
        if (n > m + 1 && key[n - m - 1] == '.' && !strcmp(key + n - m, s)) {
            *role = r;
            return n - m - 1;
        }
    }
    return 0;
}

#define T(r) (&m->t[VKL_LORA_##r])

static int dims(const vkl_lora_tensor *t, int nd) { return t->data && t->ndim == nd; }

/* Tucker product shape: t [R1,R2,kh,kw], a [R1,out], b [R2,in] -> [out,in,kh,kw]. */
static int tucker(const vkl_lora_tensor *t, const vkl_lora_tensor *a, const vkl_lora_tensor *b,
                  int64_t *out)
{
    if (!dims(t, 4) || !dims(a, 2) || !dims(b, 2) || a->shape[0] != t->shape[0] || b->shape[0] != t->shape[1])
        return -1;
    out[0] = a->shape[1];
    out[1] = b->shape[1];
    out[2] = t->shape[2];
    out[3] = t->shape[3];
    return 0;
}

/* Plain product shape: a [out,r] @ b [r,x] -> [out,x]. */
static int product(const vkl_lora_tensor *a, const vkl_lora_tensor *b, int64_t *out)
{
    if (!dims(a, 2) || !dims(b, 2) || a->shape[1] != b->shape[0]) return -1;
    out[0] = a->shape[0];
    out[1] = b->shape[1];
    return 0;
}

static int loha(vkl_lora_module *m, vkl_err *e)
{
    const char *n = m->source ? m->source : vkl_lora_module_label(m);
    if (!T(HADA_W1A)->data || !T(HADA_W1B)->data || !T(HADA_W2A)->data || !T(HADA_W2B)->data)
        return vkl_fail(e, "%s: incomplete LoHa module (needs hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b)", n);
    if (!T(HADA_T1)->data != !T(HADA_T2)->data)
        return vkl_fail(e, "%s: LoHa Tucker form needs both hada_t1 and hada_t2", n);
    int64_t s1[4] = {0}, s2[4] = {0};
    int nd = T(HADA_T1)->data ? 4 : 2;
    int bad = nd == 4 ? tucker(T(HADA_T1), T(HADA_W1A), T(HADA_W1B), s1) || tucker(T(HADA_T2), T(HADA_W2A), T(HADA_W2B), s2)
                      : product(T(HADA_W1A), T(HADA_W1B), s1) || product(T(HADA_W2A), T(HADA_W2B), s2);
    if (bad || memcmp(s1, s2, sizeof s1))
        return vkl_fail(e, "%s: LoHa factor shapes do not fit together (%s form)", n, nd == 4 ? "Tucker" : "plain");
    m->rank = (int)T(HADA_W1B)->shape[0];
    m->wndim = nd;
    memcpy(m->wshape, s1, sizeof s1);
    return 0;
}

static int lokr(vkl_lora_module *m, vkl_err *e)
{
    const char *n = m->source ? m->source : vkl_lora_module_label(m);
    int64_t w1[4] = {0}, w2[4] = {0};
    int nd2 = 2;
    m->rank = 0;
    if (T(LOKR_W1)->data) {
        if (T(LOKR_W1A)->data || T(LOKR_W1B)->data || !dims(T(LOKR_W1), 2))
            return vkl_fail(e, "%s: LoKr w1 must be either lokr_w1 [a,c] or lokr_w1_a @ lokr_w1_b", n);
        memcpy(w1, T(LOKR_W1)->shape, sizeof w1);
    } else {
        if (product(T(LOKR_W1A), T(LOKR_W1B), w1))
            return vkl_fail(e, "%s: LoKr needs lokr_w1 or lokr_w1_a [a,r] @ lokr_w1_b [r,c]", n);
        m->rank = (int)T(LOKR_W1B)->shape[0];
    }
    if (T(LOKR_W2)->data) {
        const vkl_lora_tensor *t = T(LOKR_W2);
        if (T(LOKR_W2A)->data || T(LOKR_W2B)->data || T(LOKR_T2)->data || (t->ndim != 2 && t->ndim != 4))
            return vkl_fail(e, "%s: LoKr w2 must be either lokr_w2 or its factors", n);
        memcpy(w2, t->shape, sizeof w2);
        nd2 = t->ndim;
    } else {
        int bad = T(LOKR_T2)->data ? tucker(T(LOKR_T2), T(LOKR_W2A), T(LOKR_W2B), w2)
                                   : product(T(LOKR_W2A), T(LOKR_W2B), w2);
        if (bad) return vkl_fail(e, "%s: LoKr w2 factors (lokr_w2_a, lokr_w2_b%s) do not fit together", n,
                                 T(LOKR_T2)->data ? ", lokr_t2" : "");
        nd2 = T(LOKR_T2)->data ? 4 : 2;
        /* the rank of w2's factors sets the scale when both are factored */
        m->rank = (int)T(LOKR_W2B)->shape[0];
    }
    m->wndim = nd2;
    m->wshape[0] = w1[0] * w2[0];
    m->wshape[1] = w1[1] * w2[1];
    m->wshape[2] = nd2 == 4 ? w2[2] : 0;
    m->wshape[3] = nd2 == 4 ? w2[3] : 0;
    return 0;
}

int vkl_lora_lycoris_finish(vkl_lora_module *m, vkl_err *e)
{
    return m->kind == VKL_LORA_KIND_LOHA ? loha(m, e) : lokr(m, e);
}
