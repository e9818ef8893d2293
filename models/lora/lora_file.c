/* Adapter files into the common form: keys are grouped by module (the key
 * minus its format suffix), each group is named, read as f32, checked, and
 * resolved against the targets. Every key must be accounted for. */
#include "lora/lora_file.h"
#include "shape.h"
#include "lora/lora_adalora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *vkl_lora_kind_name(vkl_lora_kind k)
{
    static const char *n[] = {"lora", "loha", "lokr", "dora", "ia3"};
    return (unsigned)k < 5 ? n[k] : "unknown";
}

const char *vkl_lora_format_name(vkl_lora_format f)
{
    static const char *n[] = {"kohya", "diffusers", "peft"};
    return (unsigned)f < 3 ? n[f] : "unknown";
}

const char *vkl_lora_module_label(const vkl_lora_module *m)
{
    return m->name ? m->name : m->kname ? m->kname : m->source;
}

/* Errors while reading name the module as the file spells it. */
static const char *src_label(const vkl_lora_module *m)
{
    return m->source ? m->source : vkl_lora_module_label(m);
}

uint64_t vkl_lora_tensor_nelem(const vkl_lora_tensor *t)
{
    if (!t->data) return 0;
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= (uint64_t)t->shape[i];
    return n;
}

uint64_t vkl_lora_wnelem(const vkl_lora_module *m)
{
    uint64_t n = 1;
    for (int i = 0; i < m->wndim; i++) n *= (uint64_t)m->wshape[i];
    return n;
}

const vkl_lora_module *vkl_lora_find(const vkl_lora *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if ((l->m[i].name && !strcmp(l->m[i].name, name)) ||
            (l->m[i].kname && !strcmp(l->m[i].kname, name)))
            return &l->m[i];
    return NULL;
}

const char *vkl_lora_meta_get(const vkl_lora *l, const char *key)
{
    for (int i = 0; i < l->n_meta; i++)
        if (!strcmp(l->meta_key[i], key)) return l->meta_val[i];
    return NULL;
}

vkl_lora_module *vkl_lora_add_module(vkl_lora *l, vkl_err *e)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        vkl_lora_module *v = realloc(l->m, (size_t)cap * sizeof *v);
        if (!v) return vkl_fail(e, "out of memory"), NULL;
        l->m = v;
        l->cap = cap;
    }
    vkl_lora_module *m = &l->m[l->n++];
    memset(m, 0, sizeof *m);
    m->alpha_dtype = VKL_F32;
    m->stride = 1;
    return m;
}

float *vkl_lora_tensor_alloc(vkl_lora_tensor *t, int ndim, const int64_t *shape, vkl_err *e)
{
    if (ndim < 1 || ndim > 4) return vkl_fail(e, "tensor rank %d not in 1..4", ndim), NULL;
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || shape[i] > (int64_t)1 << 32)
            return vkl_fail(e, "bad tensor dimension %lld", (long long)shape[i]), NULL;
        n *= (uint64_t)shape[i];
    }
    if (n > ((uint64_t)1 << 34)) return vkl_fail(e, "tensor too large"), NULL;
    free(t->data);
    t->data = calloc((size_t)n, sizeof(float));
    if (!t->data) return vkl_fail(e, "out of memory for a %llu-element tensor", (unsigned long long)n), NULL;
    t->ndim = ndim;
    for (int i = 0; i < 4; i++) t->shape[i] = i < ndim ? shape[i] : 0;
    t->dtype = VKL_F32;
    return t->data;
}

int vkl_lora_meta_set(vkl_lora *l, const char *key, const char *value, vkl_err *e)
{
    for (int i = 0; i < l->n_meta; i++)
        if (!strcmp(l->meta_key[i], key)) {
            char *v = strdup(value);
            if (!v) return vkl_fail(e, "out of memory");
            free(l->meta_val[i]);
            l->meta_val[i] = v;
            return 0;
        }
    char **k = realloc(l->meta_key, (size_t)(l->n_meta + 1) * sizeof *k);
    if (k) l->meta_key = k;
    char **v = realloc(l->meta_val, (size_t)(l->n_meta + 1) * sizeof *v);
    if (v) l->meta_val = v;
    if (!k || !v) return vkl_fail(e, "out of memory");
    l->meta_key[l->n_meta] = strdup(key);
    l->meta_val[l->n_meta] = strdup(value);
    if (!l->meta_key[l->n_meta] || !l->meta_val[l->n_meta]) {
        free(l->meta_key[l->n_meta]);
        free(l->meta_val[l->n_meta]);
        return vkl_fail(e, "out of memory");
    }
    l->n_meta++;
    return 0;
}

void vkl_lora_free(vkl_lora *l)
{
    if (!l) return;
    for (int i = 0; i < l->n; i++) {
        free(l->m[i].name);
        free(l->m[i].kname);
        free(l->m[i].source);
        for (int r = 0; r < VKL_LORA_ROLES; r++) free(l->m[i].t[r].data);
    }
    free(l->m);
    for (int i = 0; i < l->n_meta; i++) {
        free(l->meta_key[i]);
        free(l->meta_val[i]);
    }
    free(l->meta_key);
    free(l->meta_val);
    memset(l, 0, sizeof *l);
}

/* ---- shape checks shared by every format ---- */

static int lora_shapes(vkl_lora_module *m, vkl_err *e)
{
    const vkl_lora_tensor *d = &m->t[VKL_LORA_DOWN], *u = &m->t[VKL_LORA_UP], *mid = &m->t[VKL_LORA_MID];
    const char *n = src_label(m);
    if ((d->ndim != 2 && d->ndim != 4) || (u->ndim != 2 && u->ndim != 4))
        return vkl_fail(e, "%s: down %dD / up %dD, expected 2-D (linear) or 4-D (conv)", n, d->ndim,
                        u->ndim);
    int r = (int)d->shape[0];
    if (u->shape[1] != r || (u->ndim == 4 && (u->shape[2] != 1 || u->shape[3] != 1)))
        return vkl_fail(e, "%s: up [%lld,%lld,...] does not fit down rank %d (up must be [out,%d] or [out,%d,1,1])",
                        n, (long long)u->shape[0], (long long)u->shape[1], r, r, r);
    m->rank = r;
    m->wshape[0] = u->shape[0];
    m->wshape[1] = d->shape[1];
    m->wndim = d->ndim;
    if (d->ndim == 4) {
        m->wshape[2] = d->shape[2];
        m->wshape[3] = d->shape[3];
    }
    if (mid->data) {
        if (mid->ndim != 4 || d->ndim != 4 || d->shape[2] != 1 || d->shape[3] != 1 ||
            mid->shape[0] != u->shape[1] || mid->shape[1] != r)
            return vkl_fail(e, "%s: lora_mid must be [r,r,kh,kw] between a 1x1 down [r,in,1,1] and up", n);
        m->rank = (int)mid->shape[0];
        m->wshape[2] = mid->shape[2];
        m->wshape[3] = mid->shape[3];
        m->wndim = 4;
    }
    return 0;
}

static int has_role(const vkl_lora_module *m, int lo, int hi)
{
    for (int r = lo; r <= hi; r++)
        if (m->t[r].data) return 1;
    return 0;
}

static void conv_geometry(vkl_lora_module *m)
{
    const char *n = m->name ? m->name : m->kname ? m->kname : "";
    m->stride = 1;
    m->padding = 0;
    if (m->wndim != 4) return;
    m->padding = (int)(m->wshape[2] / 2);
    if (strstr(n, "downsamplers")) {
        m->stride = 2;
        /* the VAE encoder pads right/bottom by one itself, then convolves unpadded */
        if (strstr(n, "vae.encoder") || strstr(n, "vae_encoder")) m->padding = 0;
    }
}

/* PEFT ia3_l: [out,1] scales the output, [1,in] the input. With a target the
 * other axis comes from the weight; a [1,1] vector is told apart by it too. */
static int ia3_finish(vkl_lora_module *m, const vkl_lora_target *target, vkl_err *e)
{
    const char *n = src_label(m);
    const vkl_lora_tensor *v = &m->t[VKL_LORA_IA3];
    for (int r = 0; r < VKL_LORA_ROLES; r++)
        if (r != VKL_LORA_IA3 && m->t[r].data) return vkl_fail(e, "%s: mixes an IA3 vector with other factors", n);
    if (m->has_alpha) return vkl_fail(e, "%s: an IA3 module has no alpha", n);
    if (v->ndim != 2 || (v->shape[0] != 1 && v->shape[1] != 1))
        return vkl_fail(e, "%s: ia3_l must be [out,1] or [1,in], is %dD [%lld,...]", n, v->ndim, (long long)v->shape[0]);
    m->kind = VKL_LORA_KIND_IA3;
    m->rank = 0;
    m->alpha = 0;
    m->scale = 1;
    m->on_input = v->shape[0] == 1 && v->shape[1] != 1;
    m->wndim = 2;
    m->wshape[0] = m->on_input ? 0 : v->shape[0];
    m->wshape[1] = m->on_input ? v->shape[1] : 0;
    if (!target) return 0;
    if (target->ndim != 2)
        return vkl_fail(e, "%s: IA3 on %s.weight, which is not a linear weight (%dD)", n, target->name, target->ndim);
    if (v->shape[0] == 1 && v->shape[1] == 1) m->on_input = target->shape[1] == 1;
    int64_t want = m->on_input ? target->shape[1] : target->shape[0];
    if ((int64_t)vkl_lora_tensor_nelem(v) != want)
        return vkl_fail(e, "%s: ia3_l has %llu elements but %s.weight [%lld,%lld] has %lld %s", n,
                        (unsigned long long)vkl_lora_tensor_nelem(v), target->name, (long long)target->shape[0],
                        (long long)target->shape[1], (long long)want, m->on_input ? "inputs" : "outputs");
    memcpy(m->wshape, target->shape, sizeof m->wshape);
    return 0;
}

int vkl_lora_module_finish(vkl_lora_module *m, const vkl_lora_target *target, vkl_err *e)
{
    const char *n = src_label(m);
    if (m->t[VKL_LORA_IA3].data) return ia3_finish(m, target, e);
    int lora = has_role(m, VKL_LORA_DOWN, VKL_LORA_MID);
    int loha = has_role(m, VKL_LORA_HADA_W1A, VKL_LORA_HADA_T2);
    int lokr = has_role(m, VKL_LORA_LOKR_W1, VKL_LORA_LOKR_T2);
    if (lora + loha + lokr != 1)
        return vkl_fail(e, "%s: %s", n, lora + loha + lokr ? "mixes LoRA, LoHa and LoKr tensors"
                                                           : "has no factor tensors (only alpha or magnitude)");
    if (lora) {
        if (!m->t[VKL_LORA_DOWN].data || !m->t[VKL_LORA_UP].data)
            return vkl_fail(e, "%s: incomplete LoRA module: %s missing", n,
                            m->t[VKL_LORA_DOWN].data ? "up" : "down");
        if (lora_shapes(m, e)) return -1;
        m->kind = m->t[VKL_LORA_MAG].data ? VKL_LORA_KIND_DORA : VKL_LORA_KIND_LORA;
    } else {
        m->kind = loha ? VKL_LORA_KIND_LOHA : VKL_LORA_KIND_LOKR;
        if (vkl_lora_lycoris_finish(m, e)) return -1;
    }
    if (!m->has_alpha) m->alpha = (float)m->rank;
    m->scale = m->rank ? (double)m->alpha / m->rank : 1.0;
    if (target) {
        char a[64], b[64];
        uint64_t tn = 1, wn = vkl_lora_wnelem(m);
        for (int i = 0; i < target->ndim; i++) tn *= (uint64_t)target->shape[i];
        /* LoHa / LoKr conv factors are stored flat: only out and the count can be checked */
        int flat_ok = m->kind != VKL_LORA_KIND_LORA && m->kind != VKL_LORA_KIND_DORA &&
                      m->wndim == 2 && target->ndim == 4 && tn == wn && m->wshape[0] == target->shape[0];
        if (!flat_ok && !vkl_shape_same_squeezed(m->wndim, m->wshape, target->ndim, target->shape)) {
            vkl_shape_str(m->wndim, m->wshape, a, sizeof a);
            vkl_shape_str(target->ndim, target->shape, b, sizeof b);
            return vkl_fail(e, "%s: its factors change a %s weight but the model's %s.weight is %s", n, a,
                            target->name, b);
        }
        m->wndim = target->ndim;
        memcpy(m->wshape, target->shape, sizeof m->wshape);
    }
    const vkl_lora_tensor *g = &m->t[VKL_LORA_MAG];
    if (g->data) {
        uint64_t gn = vkl_lora_tensor_nelem(g);
        int64_t in = m->wndim > 1 ? m->wshape[1] : 1;
        if (gn != (uint64_t)m->wshape[0] && gn != (uint64_t)in)
            return vkl_fail(e, "%s: magnitude has %llu elements, neither out (%lld) nor in (%lld)", n,
                            (unsigned long long)gn, (long long)m->wshape[0], (long long)in);
    }
    conv_geometry(m);
    return 0;
}

/* ---- reading ---- */

typedef struct {
    const char *key;
    size_t plen; /* prefix length */
    int role;    /* -1: alpha */
    vkl_lora_format fmt;
    const vkl_st_tensor *t;
} part;

static int cmp_part(const void *a, const void *b)
{
    const part *x = a, *y = b;
    size_t n = x->plen < y->plen ? x->plen : y->plen;
    int c = strncmp(x->key, y->key, n);
    if (c) return c;
    return x->plen < y->plen ? -1 : x->plen > y->plen;
}

static int classify(const char *key, part *p)
{
    int role;
    size_t n;
    p->key = key;
    if (!strncmp(key, "lora_", 5)) {
        if ((n = vkl_lora_kohya_part(key, &role)) || (n = vkl_lora_lycoris_part(key, &role))) {
            p->plen = n;
            p->role = role;
            p->fmt = VKL_LORA_FMT_KOHYA;
            return 1;
        }
    }
    vkl_lora_format f;
    if ((n = vkl_lora_peft_part(key, &role, &f))) {
        p->plen = n;
        p->role = role;
        p->fmt = f;
        return 1;
    }
    return 0;
}

static void list_names(char *out, size_t size, const char *const *names, int n, int max)
{
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < n && i < max && k < size; i++)
        k += (size_t)snprintf(out + k, size - k, "%s%s", i ? ", " : "", names[i]);
    if (n > max && k < size) snprintf(out + k, size - k, ", ...");
}

static int read_tensor(const vkl_st_file *f, const vkl_st_tensor *t, vkl_lora_tensor *dst, vkl_err *e)
{
    if (t->dtype != VKL_F32 && t->dtype != VKL_F16 && t->dtype != VKL_BF16 && t->dtype != VKL_F64)
        return vkl_fail(e, "tensor %s: dtype %s, expected f32, f16 or bf16", t->name, vkl_dtype_name(t->dtype));
    if (t->ndim < 1 || t->ndim > 4)
        return vkl_fail(e, "tensor %s: %d dimensions, expected 1 to 4", t->name, t->ndim);
    if (dst->data) return vkl_fail(e, "tensor %s: a second tensor for the same factor of its module", t->name);
    if (!vkl_lora_tensor_alloc(dst, t->ndim, t->shape, e)) return vkl_err_prefix(e, "tensor %s: ", t->name), -1;
    dst->dtype = t->dtype;
    return vkl_st_read(f, t, VKL_F32, dst->data, e);
}

static int read_alpha(const vkl_st_file *f, const vkl_st_tensor *t, vkl_lora_module *m, vkl_err *e)
{
    if (t->nelem != 1) return vkl_fail(e, "tensor %s: alpha must be a scalar, has %llu elements", t->name,
                                       (unsigned long long)t->nelem);
    float a;
    if (vkl_st_read(f, t, VKL_F32, &a, e)) return -1;
    if (!isfinite(a) || a < 0) return vkl_fail(e, "tensor %s: alpha %g is not a finite non-negative number", t->name, a);
    m->alpha = a;
    m->has_alpha = 1;
    m->alpha_dtype = t->dtype;
    return 0;
}

static int file_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Groups parts[lo..hi) into one module. *unmatched is set when the name
 * resolves to no target (the module is then dropped by the caller). */
static int build_module(const vkl_st_file *f, const vkl_lora_opts *o, int xl, part *p, int cnt,
                        vkl_lora *l, int *unmatched, vkl_err *e)
{
    const vkl_lora_targets *tg = o ? o->targets : NULL;
    char prefix[512], name[512];
    if (p[0].plen >= sizeof prefix) return vkl_fail(e, "key too long: %.80s...", p[0].key);
    memcpy(prefix, p[0].key, p[0].plen);
    prefix[p[0].plen] = 0;
    int ti = -1;
    *unmatched = 0;
    char *iname = NULL, *kname = NULL;
    if (p[0].fmt == VKL_LORA_FMT_KOHYA) {
        if (tg) {
            ti = vkl_lora_targets_find_kohya(tg, prefix);
            if (ti < 0) return *unmatched = 1, 0;
            iname = strdup(tg->v[ti].name);
            kname = strdup(tg->v[ti].kname);
        } else {
            kname = strdup(prefix);
        }
    } else {
        if (vkl_lora_peft_module_name(prefix, name, sizeof name)) return vkl_fail(e, "key too long: %s", p[0].key);
        if (tg && (ti = vkl_lora_targets_find(tg, name)) < 0) return *unmatched = 1, 0;
        iname = strdup(name);
        kname = malloc(strlen(name) + 16);
        if (kname && vkl_lora_kohya_name(name, tg ? tg->has_te2 : xl, kname, strlen(name) + 16)) {
            free(iname);
            free(kname);
            return vkl_fail(e, "module name too long: %s", name);
        }
    }
    vkl_lora_module *m = vkl_lora_add_module(l, e);
    if (!m) {
        free(iname);
        free(kname);
        return -1;
    }
    m->name = iname;
    m->kname = kname;
    m->source = strdup(prefix);
    if (!m->kname || !m->source || (ti >= 0 && !m->name)) return vkl_fail(e, "out of memory");
    for (int i = 0; i < cnt; i++) {
        if (p[i].fmt != p[0].fmt)
            return vkl_fail(e, "module %s mixes %s and %s key spellings", prefix, vkl_lora_format_name(p[0].fmt),
                            vkl_lora_format_name(p[i].fmt));
        if (p[i].role < 0) {
            if (m->has_alpha) return vkl_fail(e, "module %s has two alpha tensors", prefix);
            if (read_alpha(f, p[i].t, m, e)) return -1;
        } else if (read_tensor(f, p[i].t, &m->t[p[i].role], e)) {
            return -1;
        }
    }
    if (vkl_lora_module_finish(m, ti >= 0 ? &tg->v[ti] : NULL, e)) return -1;
    return 0;
}

static int load_parts(const vkl_st_file *f, const char *path, const vkl_lora_opts *o, vkl_lora *l, vkl_err *e)
{
    int n = vkl_st_count(f), max = o && o->max_listed > 0 ? o->max_listed : 8;
    part *p = calloc((size_t)(n ? n : 1), sizeof *p);
    const char **bad = calloc((size_t)(n ? n : 1), sizeof *bad);
    int64_t *bad_in = calloc((size_t)(n ? n : 1), sizeof *bad_in);
    int nbad = 0, np = 0, xl = 0, rc = 0;
    char list[2048], guess[512];
    if (!p || !bad || !bad_in) {
        rc = vkl_fail(e, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        if (classify(t->name, &p[np])) p[np++].t = t;
        else bad[nbad++] = t->name;
        if (strstr(t->name, "text_encoder_2.") || !strncmp(t->name, "lora_te2_", 9)) xl = 1;
    }
    if (nbad) {
        list_names(list, sizeof list, bad, nbad, max);
        rc = vkl_fail(e, "%d key%s of no known adapter format (kohya, LyCORIS LoHa/LoKr, diffusers, PEFT): %s",
                      nbad, nbad > 1 ? "s" : "", list);
        goto done;
    }
    if (!np) {
        rc = vkl_fail(e, "no adapter tensors");
        goto done;
    }
    qsort(p, (size_t)np, sizeof *p, cmp_part);
    int counts[3] = {0, 0, 0};
    for (int i = 0; i < np && !rc;) {
        int j = i + 1;
        while (j < np && !cmp_part(&p[i], &p[j])) j++;
        int um = 0;
        rc = build_module(f, o, xl, p + i, j - i, l, &um, e);
        if (!rc && um) {
            bad_in[nbad] = 0;
            for (int k = i; k < j; k++)
                if (p[k].role == VKL_LORA_DOWN && p[k].t->ndim >= 2) bad_in[nbad] = p[k].t->shape[1];
            bad[nbad++] = p[i].key;
        }
        if (!rc) counts[p[i].fmt]++;
        i = j;
    }
    if (rc) {
        vkl_err_prefix(e, "%s: ", path);
        goto done;
    }
    l->format = counts[VKL_LORA_FMT_PEFT] > counts[VKL_LORA_FMT_DIFFUSERS]
                    ? VKL_LORA_FMT_PEFT
                    : counts[VKL_LORA_FMT_DIFFUSERS] > counts[VKL_LORA_FMT_KOHYA] ? VKL_LORA_FMT_DIFFUSERS
                                                                                 : VKL_LORA_FMT_KOHYA;
    if (nbad) {
        list_names(list, sizeof list, bad, nbad, max);
        vkl_lora_guess_unmatched(o->targets, bad, nbad, bad_in, guess, sizeof guess);
        if (!o->allow_unmatched) {
            rc = vkl_fail(e, "%d module%s no weight of the %s model (%s): %s", nbad, nbad > 1 ? "s match" : " matches",
                          o->targets->model_kind, guess, list);
            goto done;
        }
        vkl_log(VKL_LOG_WARN, "%s: %d modules match no weight of the model and are skipped (%s): %s", path,
                nbad, guess, list);
        l->n_unmatched = nbad;
    }
done:
    free(p);
    free(bad);
    free(bad_in);
    return rc;
}

/* The PEFT config in effect: the one given, else adapter_config.json beside the file, else NULL. */
static const char *config_for(const char *path, const vkl_lora_opts *opts, char *side, size_t size)
{
    if (opts && opts->config_path) return opts->config_path;
    const char *slash = strrchr(path, '/');
    int dl = slash ? (int)(slash - path) : 0;
    snprintf(side, size, "%.*s%sadapter_config.json", dl, path, slash ? "/" : "");
    return file_exists(side) ? side : NULL;
}

int vkl_lora_load(const char *path, const vkl_lora_opts *opts, vkl_lora *out, vkl_err *e)
{
    memset(out, 0, sizeof *out);
    char side[4096];
    const char *cfg = config_for(path, opts, side, sizeof side);
    /* AdaLoRA's tensors (lora_A, lora_E, lora_B) become plain LoRA modules */
    if (cfg && vkl_adalora_config_file_is(cfg)) return vkl_adalora_load(path, cfg, opts, out, e);
    vkl_st_file *f;
    if (vkl_st_open(path, &f, e)) return -1;
    int rc = load_parts(f, path, opts, out, e);
    for (int i = 0; !rc && i < vkl_st_meta_count(f); i++)
        rc = vkl_lora_meta_set(out, vkl_st_meta_key(f, i), vkl_st_meta_value(f, i), e);
    vkl_st_close(f);
    if (!rc && out->format == VKL_LORA_FMT_PEFT && cfg) rc = vkl_lora_peft_apply_config(out, cfg, e);
    if (rc) vkl_lora_free(out);
    return rc;
}
