#include "weights.h"

#include "vkl_internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    char *name;
    vkl_tensor *t;
} entry;

struct vkl_weights {
    entry *v;
    int n, cap;
    int sorted;
};

vkl_weights *vkl_weights_new(void) { return calloc(1, sizeof(vkl_weights)); }

void vkl_weights_free(vkl_weights *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) {
        free(w->v[i].name);
        vkl_tensor_free(w->v[i].t);
    }
    free(w->v);
    free(w);
}

static int cmp(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

int vkl_weights_put(vkl_weights *w, const char *name, vkl_tensor *t, vkl_err *e)
{
    if (vkl_weights_find(w, name)) return vkl_fail(e, "weight %s given twice", name);
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 256;
        entry *v = realloc(w->v, sizeof *v * (size_t)cap);
        if (!v) return vkl_fail(e, "out of host memory");
        w->v = v;
        w->cap = cap;
    }
    w->v[w->n].name = strdup(name);
    w->v[w->n].t = t;
    if (!w->v[w->n].name) return vkl_fail(e, "out of host memory");
    snprintf(t->name, sizeof t->name, "%s", strlen(name) < sizeof t->name ? name : name + strlen(name) - sizeof t->name + 1);
    w->n++;
    w->sorted = 0;
    return 0;
}

vkl_tensor *vkl_weights_find(const vkl_weights *w, const char *name)
{
    vkl_weights *mw = (vkl_weights *)w;
    if (!mw->n) return NULL; /* qsort/bsearch take no NULL array, even for 0 elements */
    if (!mw->sorted) {
        qsort(mw->v, (size_t)mw->n, sizeof *mw->v, cmp);
        mw->sorted = 1;
    }
    entry key = {(char *)name, NULL};
    entry *hit = bsearch(&key, mw->v, (size_t)mw->n, sizeof *mw->v, cmp);
    return hit ? hit->t : NULL;
}

vkl_tensor *vkl_weights_need(const vkl_weights *w, vkl_graph *g, const char *fmt, ...)
{
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    vkl_tensor *t = vkl_weights_find(w, name);
    if (!t) vkl_graph_set_error(g, "missing weight %s", name);
    return t;
}

int vkl_weights_count(const vkl_weights *w) { return w->n; }

vkl_tensor *vkl_weights_at(const vkl_weights *w, int i, const char **name)
{
    vkl_weights *mw = (vkl_weights *)w;
    if (!mw->n) return NULL; /* qsort/bsearch take no NULL array, even for 0 elements */
    if (!mw->sorted) {
        qsort(mw->v, (size_t)mw->n, sizeof *mw->v, cmp);
        mw->sorted = 1;
    }
    if (i < 0 || i >= mw->n) return NULL;
    if (name) *name = mw->v[i].name;
    return mw->v[i].t;
}

int vkl_weights_drop_prefix(vkl_weights *w, const char *prefix)
{
    size_t plen = strlen(prefix);
    int kept = 0, dropped = 0;
    for (int i = 0; i < w->n; i++) {
        if (!strncmp(w->v[i].name, prefix, plen)) {
            free(w->v[i].name);
            vkl_tensor_free(w->v[i].t);
            dropped++;
        } else {
            w->v[kept++] = w->v[i]; /* order kept: a sorted table stays sorted */
        }
    }
    w->n = kept;
    return dropped;
}

uint64_t vkl_weights_bytes(const vkl_weights *w)
{
    uint64_t b = 0;
    for (int i = 0; i < w->n; i++) b += vkl_tensor_nbytes(w->v[i].t);
    return b;
}
