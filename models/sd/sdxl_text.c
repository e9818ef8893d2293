#include "sd/sdxl_text.h"

#include "lora/lora_apply.h"
#include "ops.h"

#include <stdlib.h>

void vkl_clip_pool_rows(const vkl_sd_text_config *c, const int32_t *ids, int B, int L, int32_t *rows)
{
    for (int b = 0; b < B; b++) {
        const int32_t *r = ids + (size_t)b * L;
        int at = 0;
        if (c->eos_id == 2) {
            for (int i = 1; i < L; i++)
                if (r[i] > r[at]) at = i;
        } else {
            for (int i = 0; i < L; i++)
                if (r[i] == c->eos_id) {
                    at = i;
                    break;
                }
        }
        rows[b] = b * L + at;
    }
}

vkl_tensor *vkl_clip_text_pooled(vkl_graph *g, const vkl_clip_text *m, vkl_tensor *normed, vkl_tensor *rows)
{
    if (!normed || !rows || vkl_graph_failed(g)) return NULL;
    int64_t B = normed->shape[0], L = normed->shape[1], D = normed->shape[2];
    if (rows->ndim != 1 || rows->shape[0] != B || rows->dtype != VKL_I32)
        return vkl_graph_set_error(g, "text encoder: pooling needs i32 rows [%lld]", (long long)B);
    /* the flat [B*L, D] states are an embedding table the rows pick from */
    vkl_tensor *flat = vkl_reshape(g, vkl_contiguous(g, normed), 2, (int64_t[]){B * L, D});
    vkl_tensor *x = vkl_embedding(g, flat, rows);
    if (m->cfg->projection_dim <= 0) return x;
    char name[300];
    snprintf(name, sizeof name, "%stext_projection", m->prefix);
    vkl_tensor *w = vkl_weights_need(m->w, g, "%s.weight", name);
    if (!w) return NULL;
    return vkl_lora_linear(g, m->lora, name, x, w, NULL);
}

vkl_tensor *vkl_sdxl_text_forward(vkl_graph *g, const vkl_clip_text *te1, const vkl_clip_text *te2, vkl_tensor *ids1,
                                  vkl_tensor *ids2, vkl_tensor *pool_rows, int skip, vkl_tensor **pooled)
{
    if (pooled) *pooled = NULL;
    if (!ids1 || !ids2 || vkl_graph_failed(g)) return NULL;
    int n1 = te1->cfg->layers, n2 = te2->cfg->layers;
    if (skip < 0 || skip > n1 - 2 || skip > n2 - 2)
        return vkl_graph_set_error(g, "text encoders: clip skip %d needs %d layers in each encoder (they have %d and %d)",
                                   skip + 1, skip + 2, n1, n2);
    /* hidden_states[-(2+skip)] is the output of layer n-1-skip */
    vkl_tensor *h1 = vkl_clip_text_forward(g, te1, ids1, 1 + skip, 0, NULL);
    vkl_tensor **layers = calloc((size_t)n2, sizeof *layers);
    if (!layers) return vkl_graph_set_error(g, "out of host memory");
    vkl_tensor *last = vkl_clip_text_forward(g, te2, ids2, 0, pooled != NULL, layers);
    vkl_tensor *h2 = last ? layers[n2 - 2 - skip] : NULL;
    free(layers);
    if (pooled) *pooled = vkl_clip_text_pooled(g, te2, last, pool_rows);
    return vkl_concat(g, h1, h2, 2);
}
