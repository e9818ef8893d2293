#include "llama/llama_condition.h"

#include "ops.h"

#include <string.h>

typedef struct keep_final {
    vkl_tensor *fin;
} keep_final;

static void tap_final(void *user, int layer, const char *name, vkl_tensor *t)
{
    if (layer == -1 && !strcmp(name, "final_norm_out")) ((keep_final *)user)->fin = t;
}

int vkl_llama_mean_hidden(const vkl_llama *m, const int32_t *ids, int n, float *out, vkl_err *e)
{
    const vkl_llama_config *cfg = &m->cfg;
    if (n < 2) return vkl_fail(e, "condition text: no token after BOS");
    if (n > cfg->max_pos) return vkl_fail(e, "condition text: %d tokens, more than the model's %d positions", n, cfg->max_pos);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= cfg->vocab) return vkl_fail(e, "condition text: token id %d outside the vocabulary", ids[i]);
    vkl_ctx *c = m->ctx;
    vkl_tensor *tid = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){1, n}, e);
    if (!tid) return -1;
    vkl_graph *g = NULL;
    vkl_tensor *mask = vkl_llama_mask(c, 1, n, 0, NULL, e);
    int rc = !mask || vkl_tensor_upload(c, tid, ids, VKL_I32, e);
    if (!rc) {
        g = vkl_graph_new(c);
        keep_final k = {0};
        vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1, .tap = tap_final, .tap_user = &k};
        vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
        vkl_tensor *mean = NULL;
        if (logits && k.fin) {
            /* the positions after BOS, summed on the device and divided by their count */
            int64_t D = cfg->hidden;
            vkl_tensor *text = vkl_view(g, k.fin, 2, (int64_t[]){n - 1, D}, (int64_t[]){D, 1}, D);
            mean = vkl_scale(g, vkl_sum_to(g, text, 2, (int64_t[]){1, D}), 1.0f / (float)(n - 1));
            vkl_graph_keep(g, mean);
        }
        if (vkl_graph_failed(g) || !mean)
            rc = vkl_fail(e, "condition graph: %s", vkl_graph_failed(g) ? vkl_graph_error(g) : "no final hidden state");
        rc = rc || vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(c, mean, out, VKL_F32, e);
    }
    vkl_graph_free(g);
    vkl_tensor_free(mask);
    vkl_tensor_free(tid);
    return rc ? -1 : 0;
}
