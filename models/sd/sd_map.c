/* Matches the configuration's parameter list against a checkpoint's keys and
 * reports, in one message, everything that does not fit. */
#include "sd/sd_layout.h"
#include "shape.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char text[900];
    size_t len;
} msgbuf;

static void app(msgbuf *m, const char *fmt, ...) VKL_PRINTF(2, 3);
static void app(msgbuf *m, const char *fmt, ...)
{
    if (m->len + 1 >= sizeof m->text) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(m->text + m->len, sizeof m->text - m->len, fmt, ap);
    va_end(ap);
    if (k > 0) m->len += (size_t)k;
    if (m->len >= sizeof m->text) m->len = sizeof m->text - 1;
}

/* How source shape src relates to internal shape p for candidate x; -1 if not at all. */
static int relate(const vkl_sd_src_name *x, const vkl_sd_key *k, const vkl_sd_param *p,
                  vkl_sd_xform *out)
{
    if (x->xform == VKL_SD_X_SPLIT) {
        if (k->ndim != p->ndim || k->shape[0] != p->shape[0] * x->parts) return -1;
        for (int i = 1; i < p->ndim; i++)
            if (k->shape[i] != p->shape[i]) return -1;
        *out = VKL_SD_X_SPLIT;
        return 0;
    }
    if (x->xform == VKL_SD_X_TRANSPOSE) {
        if (k->ndim != 2 || p->ndim != 2) return -1;
        if (k->shape[0] == p->shape[1] && k->shape[1] == p->shape[0]) {
            *out = VKL_SD_X_TRANSPOSE;
            return 0;
        }
        return -1;
    }
    int kd = k->ndim;
    while (kd > p->ndim && k->shape[kd - 1] == 1) kd--;
    if (kd != p->ndim) return -1;
    for (int i = 0; i < kd; i++)
        if (k->shape[i] != p->shape[i]) return -1;
    *out = kd == k->ndim ? VKL_SD_X_NONE : VKL_SD_X_RESHAPE;
    return 0;
}

int vkl_sd_map(const vkl_sd_config *c, vkl_sd_layout layout, const vkl_sd_keys *k,
               vkl_sd_mapping *m, vkl_err *e)
{
    memset(m, 0, sizeof *m);
    if (!k->order && k->n) return vkl_fail(e, "internal: key list not finished");
    if (vkl_sd_params_build(c, &m->params, e)) return -1;
    m->n = m->params.n;
    m->v = calloc((size_t)(m->n ? m->n : 1), sizeof *m->v);
    char *used = calloc((size_t)(k->n ? k->n : 1), 1);
    if (!m->v || !used) {
        free(used);
        vkl_sd_mapping_free(m);
        return vkl_fail(e, "out of memory mapping tensors");
    }
    msgbuf miss = {{0}, 0}, bad = {{0}, 0}, unexp = {{0}, 0};
    int n_miss = 0, n_bad = 0, n_unexp = 0;
    for (int i = 0; i < m->params.n; i++) {
        const vkl_sd_param *p = &m->params.v[i];
        vkl_sd_entry *x = &m->v[i];
        x->name = p->name;
        x->ndim = p->ndim;
        memcpy(x->shape, p->shape, sizeof x->shape);
        x->key = -1;
        vkl_sd_src_name cand[2];
        int nc = layout == VKL_SD_LAYOUT_LDM ? vkl_sd_ldm_source_name(c, p->name, cand, 2)
                                             : vkl_sd_diffusers_source_name(c, p->name, cand, 2);
        if (nc <= 0) {
            free(used);
            vkl_sd_mapping_free(m);
            return vkl_fail(e, "internal: no source name for %s", p->name);
        }
        int found = -1, ci = 0;
        for (; ci < nc && found < 0; ci++) found = vkl_sd_keys_find(k, cand[ci].name);
        ci--;
        if (found < 0) {
            if (n_miss++ < VKL_SD_MAX_LISTED)
                app(&miss, "%s%s", n_miss > 1 ? ", " : "", cand[0].name);
            continue;
        }
        vkl_sd_xform xf;
        if (relate(&cand[ci], &k->v[found], p, &xf)) {
            if (n_bad++ < VKL_SD_MAX_LISTED) {
                char a[96], b[96];
                vkl_shape_str(k->v[found].ndim, k->v[found].shape, a, sizeof a);
                vkl_shape_str(p->ndim, p->shape, b, sizeof b);
                app(&bad, "%s%s is %s, expected %s%s", n_bad > 1 ? ", " : "", cand[ci].name, a, b,
                    cand[ci].xform == VKL_SD_X_SPLIT ? " x3 stacked" : "");
            }
            used[found] = 1;
            continue;
        }
        used[found] = 1;
        x->key = found;
        x->xform = xf;
        x->part = cand[ci].part;
        x->parts = cand[ci].parts;
    }
    for (int i = 0; i < k->n; i++) {
        const char *name = k->v[k->order[i]].name;
        if (used[k->order[i]]) continue;
        int ign = layout == VKL_SD_LAYOUT_LDM ? vkl_sd_ldm_key_ignorable(c, name)
                                              : vkl_sd_diffusers_key_ignorable(c, name);
        if (ign) {
            m->n_ignored++;
            continue;
        }
        if (n_unexp++ < VKL_SD_MAX_LISTED) app(&unexp, "%s%s", n_unexp > 1 ? ", " : "", name);
    }
    free(used);
    if (n_miss || n_bad || n_unexp) {
        vkl_fail(e, "checkpoint does not match the %s model it appears to be (%d UNet levels, "
                    "%d VAE levels, %d text encoder layers): "
                    "%d missing%s%s%s; %d unexpected%s%s%s; %d with wrong shape%s%s",
                 vkl_sd_family_name(c->family), c->unet.n_levels, c->vae.n_levels, c->te[0].layers,
                 n_miss, n_miss ? " (" : "", miss.text,
                 n_miss ? (n_miss > VKL_SD_MAX_LISTED ? ", ...)" : ")") : "", n_unexp,
                 n_unexp ? " (" : "", unexp.text,
                 n_unexp ? (n_unexp > VKL_SD_MAX_LISTED ? ", ...)" : ")") : "", n_bad,
                 n_bad ? ": " : "", bad.text);
        vkl_sd_mapping_free(m);
        return -1;
    }
    return 0;
}

void vkl_sd_mapping_free(vkl_sd_mapping *m)
{
    free(m->v);
    vkl_sd_params_free(&m->params);
    memset(m, 0, sizeof *m);
}

const vkl_sd_entry *vkl_sd_mapping_find(const vkl_sd_mapping *m, const char *name)
{
    /* Parameter lists are a few thousand entries and looked up rarely: scan. */
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->v[i].name, name)) return &m->v[i];
    return NULL;
}
