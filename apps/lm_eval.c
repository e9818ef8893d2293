#include "lm_eval.h"

#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IGNORE (-100)

struct vkl_app_lm_eval {
    const vkl_llama *m;
    int L;
    vkl_graph *g;
    vkl_tensor *ids, *mask, *logits;
    float *lg, *mh;
};

void vkl_app_lm_eval_free(vkl_app_lm_eval *ev)
{
    if (!ev) return;
    vkl_graph_free(ev->g);
    vkl_tensor_free(ev->ids);
    vkl_tensor_free(ev->mask);
    free(ev->lg);
    free(ev->mh);
    free(ev);
}

int vkl_app_lm_eval_new(const vkl_llama *m, const vkl_lora_set *set, const vkl_llama_dora *dora,
                        const vkl_llama_ia3 *ia3, int L, vkl_app_lm_eval **out, vkl_err *e)
{
    return vkl_app_lm_eval_new_ada(m, set, dora, ia3, NULL, L, out, e);
}

int vkl_app_lm_eval_new_ada(const vkl_llama *m, const vkl_lora_set *set, const vkl_llama_dora *dora,
                            const vkl_llama_ia3 *ia3, const struct vkl_llama_adalora *ada, int L,
                            vkl_app_lm_eval **out, vkl_err *e)
{
    vkl_app_lm_eval *ev = calloc(1, sizeof *ev);
    *out = NULL;
    if (!ev) return vkl_fail(e, "out of host memory");
    ev->m = m;
    ev->L = L;
    ev->lg = malloc(sizeof(float) * (size_t)L * m->cfg.vocab);
    ev->mh = malloc(sizeof(float) * (size_t)L * L);
    ev->ids = vkl_tensor_new(m->ctx, VKL_I32, 2, (int64_t[]){1, L}, e);
    ev->mask = ev->ids ? vkl_llama_mask(m->ctx, 1, L, 0, NULL, e) : NULL;
    if (!ev->lg || !ev->mh || !ev->mask) {
        if (!ev->lg || !ev->mh) vkl_fail(e, "out of host memory");
        vkl_app_lm_eval_free(ev);
        return -1;
    }
    ev->g = vkl_graph_new(m->ctx);
    if (dora) vkl_llama_dora_norms(ev->g, m, dora);
    vkl_llama_fwd f = {.lora = set, .dora = dora, .ia3 = ia3, .adalora = ada, .mask = ev->mask, .explicit_attn = 1};
    ev->logits = vkl_llama_forward(ev->g, m, ev->ids, &f);
    vkl_graph_keep(ev->g, ev->logits);
    if (vkl_graph_failed(ev->g)) {
        vkl_fail(e, "evaluation graph: %s", vkl_graph_error(ev->g));
        vkl_app_lm_eval_free(ev);
        return -1;
    }
    if (vkl_graph_plan(ev->g, e)) {
        vkl_app_lm_eval_free(ev);
        return -1;
    }
    *out = ev;
    return 0;
}

int vkl_app_lm_eval_run(vkl_app_lm_eval *ev, const vkl_app_lm_data *d, double *loss, long long *tokens, vkl_err *e)
{
    int L = ev->L, V = ev->m->cfg.vocab;
    if (d->L != L) return vkl_fail(e, "evaluation rows of %d tokens, not %d", d->L, L);
    double sum = 0;
    long long n = 0;
    for (int r = 0; r < d->n; r++) {
        const int32_t *ids = d->ids + (size_t)r * L, *lab = d->labels + (size_t)r * L;
        vkl_llama_mask_values(1, L, 0, d->attn + (size_t)r * L, ev->mh);
        if (vkl_tensor_upload(ev->m->ctx, ev->ids, ids, VKL_I32, e) ||
            vkl_tensor_upload(ev->m->ctx, ev->mask, ev->mh, VKL_F32, e) || vkl_graph_run(ev->g, e) ||
            vkl_tensor_download(ev->m->ctx, ev->logits, ev->lg, VKL_F32, e))
            return -1;
        /* position t predicts the label at t + 1, as the training loss */
        for (int t = 0; t + 1 < L; t++) {
            int32_t y = lab[t + 1];
            if (y == IGNORE || y < 0 || y >= V) continue;
            const float *row = ev->lg + (size_t)t * V;
            double mx = row[0], z = 0;
            for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            for (int v = 0; v < V; v++) z += exp((double)row[v] - mx);
            sum += mx + log(z) - row[y];
            n++;
        }
    }
    if (!n) return vkl_fail(e, "the held-out samples have no labelled token");
    *loss = sum / (double)n;
    *tokens = n;
    return 0;
}
