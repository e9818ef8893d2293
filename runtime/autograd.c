/* Reverse-mode differentiation over a graph: nodes are visited backwards from
 * the loss, each node's backward rule appends the nodes that compute its
 * inputs' gradients, and gradients reaching one tensor from several consumers
 * are summed. The backward nodes land in the same graph, so the planner sees
 * forward and backward together and reuses memory across both. */
#include "vkl_internal.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

/* Pointer -> tensor map (open addressing). */
typedef struct {
    const vkl_tensor **key;
    vkl_tensor **val;
    int cap;
} tmap;

static int tmap_init(tmap *m, int n)
{
    m->cap = 64;
    while (m->cap < 4 * n) m->cap *= 2;
    m->key = calloc((size_t)m->cap, sizeof *m->key);
    m->val = calloc((size_t)m->cap, sizeof *m->val);
    return m->key && m->val ? 0 : -1;
}

static void tmap_free(tmap *m)
{
    free(m->key);
    free(m->val);
}

static int tmap_slot(const tmap *m, const vkl_tensor *k)
{
    uintptr_t h = (uintptr_t)k;
    h ^= h >> 17;
    h *= 0x9e3779b97f4a7c15ull;
    int i = (int)(h & (uintptr_t)(m->cap - 1));
    while (m->key[i] && m->key[i] != k) i = (i + 1) & (m->cap - 1);
    return i;
}

static vkl_tensor *tmap_get(const tmap *m, const vkl_tensor *k)
{
    int i = tmap_slot(m, k);
    return m->key[i] ? m->val[i] : NULL;
}

static void tmap_put(tmap *m, const vkl_tensor *k, vkl_tensor *v)
{
    int i = tmap_slot(m, k);
    m->key[i] = k;
    m->val[i] = v;
}

int vkl_graph_backward(vkl_graph *g, vkl_tensor *loss, vkl_tensor *seed, vkl_tensor *const *wrt, int nwrt,
                       vkl_tensor **grads, vkl_err *e)
{
    if (vkl_graph_failed(g)) return vkl_fail(e, "building the graph failed: %s", vkl_graph_error(g));
    if (!loss) return vkl_fail(e, "backward: no loss tensor");
    if (vkl_graph_in_segment(g)) return vkl_fail(e, "backward: close the checkpoint segment first");
    int nn = vkl_graph_node_count(g);
    tmap needs = {0}, grad = {0}, replayed = {0};
    vkl_node **clones = NULL;
    /* sizes: every tensor can appear at most once per map; backward adds more */
    if (tmap_init(&needs, vkl_graph_tensor_count(g) + nwrt + 16) ||
        tmap_init(&grad, 4 * vkl_graph_tensor_count(g) + nwrt + 16)) {
        tmap_free(&needs);
        tmap_free(&grad);
        return vkl_fail(e, "out of host memory");
    }
    /* forward sweep: which tensors depend on something in wrt */
    vkl_tensor *mark = (vkl_tensor *)1;
    for (int i = 0; i < nwrt; i++) {
        if (wrt[i]) tmap_put(&needs, wrt[i], mark);
        grads[i] = NULL;
    }
    char *active = calloc((size_t)(nn ? nn : 1), 1);
    if (!active) {
        tmap_free(&needs);
        tmap_free(&grad);
        return vkl_fail(e, "out of host memory");
    }
    for (int i = 0; i < nn; i++) {
        vkl_node *n = vkl_graph_node_at(g, i);
        for (int s = 0; s < n->nsrc && !active[i]; s++) active[i] = tmap_get(&needs, n->src[s]) != NULL;
        if (active[i]) tmap_put(&needs, n->dst, mark);
    }
    int rc = -1;
    if (!tmap_get(&needs, loss)) {
        /* nothing to differentiate: every gradient is NULL */
        rc = 0;
        goto done;
    }
    if (!seed) seed = vkl_fill(g, loss->ndim, loss->shape, 1.0f);
    tmap_put(&grad, loss, seed);
    clones = calloc((size_t)(nn ? nn : 1), sizeof *clones);
    if (!clones || tmap_init(&replayed, vkl_graph_tensor_count(g) + 16)) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    int replayed_segment = 0;
    for (int i = nn - 1; i >= 0; i--) {
        if (!active[i]) continue;
        vkl_node *n = vkl_graph_node_at(g, i);
        if (n->segment && n->segment != replayed_segment) {
            /* recompute the whole checkpoint segment from its inputs, now,
             * so its activations live only while it is differentiated */
            int first = i;
            while (first > 0 && vkl_graph_node_at(g, first - 1)->segment == n->segment) first--;
            for (int k = first; k <= i; k++) {
                vkl_node *f = vkl_graph_node_at(g, k);
                vkl_tensor *src[VKL_NODE_MAX_SRC];
                for (int s = 0; s < f->nsrc; s++) {
                    vkl_tensor *r = tmap_get(&replayed, f->src[s]);
                    src[s] = r ? r : f->src[s];
                }
                vkl_tensor *y = vkl_graph_replay_node(g, f, src);
                if (!y) {
                    vkl_fail(e, "recomputing a checkpoint segment: %s", vkl_graph_error(g));
                    goto done;
                }
                tmap_put(&replayed, f->dst, y);
                clones[k] = vkl_graph_node_at(g, vkl_graph_node_count(g) - 1);
            }
            replayed_segment = n->segment;
        }
        vkl_node *rule = n->segment ? clones[i] : n;
        vkl_tensor *dy = tmap_get(&grad, n->dst);
        if (!dy) continue;
        int need[VKL_NODE_MAX_SRC] = {0};
        vkl_tensor *dsrc[VKL_NODE_MAX_SRC] = {0};
        int any = 0;
        for (int s = 0; s < n->nsrc; s++) any |= need[s] = tmap_get(&needs, n->src[s]) != NULL;
        if (!any) continue;
        if (!n->backward) {
            char d[96];
            vkl_tensor_describe(n->dst, d, sizeof d);
            vkl_fail(e, "op %s (computing %s) has no gradient rule, but a gradient is needed through it", n->op, d);
            goto done;
        }
        if (rule->backward(g, rule, dy, need, dsrc) || vkl_graph_failed(g)) {
            vkl_fail(e, "backward of op %s: %s", n->op, vkl_graph_error(g));
            goto done;
        }
        for (int s = 0; s < n->nsrc; s++) {
            if (!need[s] || !dsrc[s]) continue;
            vkl_tensor *prev = tmap_get(&grad, n->src[s]);
            tmap_put(&grad, n->src[s], prev ? vkl_add(g, prev, dsrc[s]) : dsrc[s]);
        }
    }
    for (int i = 0; i < nwrt; i++) {
        vkl_tensor *d = wrt[i] ? tmap_get(&grad, wrt[i]) : NULL;
        /* gradients come back contiguous f32 in the parameter's shape */
        if (d && d->dtype != VKL_F32) d = vkl_scale(g, d, 1.0f);
        /* a strided view (a permute's gradient): the windowed strided copy,
         * since elementwise ops bind such an operand whole */
        if (d && !vkl_tensor_is_contiguous(d)) d = vkl_contiguous(g, d);
        grads[i] = d;
    }
    if (vkl_graph_failed(g)) {
        vkl_fail(e, "backward: %s", vkl_graph_error(g));
        goto done;
    }
    rc = 0;
done:
    free(active);
    free(clones);
    tmap_free(&replayed);
    tmap_free(&needs);
    tmap_free(&grad);
    return rc;
}
