#include "llama/llama_generate.h"

#include "ops.h"

#include <stdlib.h>
#include <string.h>

static int32_t argmax(const float *x, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i; /* first maximum, as torch.argmax */
    return best;
}

/* Runs positions pos0..pos0+L-1 with ids, writing the cache; the logits of
 * the last position go to last [V]. */
static int run_positions(const vkl_llama *m, const vkl_llama_gen_opts *o, vkl_llama_kv *kv, const int32_t *ids, int L,
                         int pos0, float *last, vkl_err *e)
{
    vkl_ctx *c = m->ctx;
    int V = m->cfg.vocab;
    vkl_tensor *tid = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){1, L}, e);
    vkl_tensor *mask = tid && L > 1 ? vkl_llama_mask(c, 1, L, pos0, NULL, e) : NULL;
    vkl_graph *g = NULL;
    float *all = NULL;
    int rc = !tid || (L > 1 && !mask) || vkl_tensor_upload(c, tid, ids, VKL_I32, e) ? -1 : 0;
    if (!rc) {
        g = vkl_graph_new(c);
        vkl_llama_fwd f = {.lora = o->lora, .dora = o->dora, .ia3 = o->ia3, .mask = mask, .explicit_attn = 1, .kv = kv, .pos0 = pos0};
        if (o->dora) vkl_llama_dora_norms(g, m, o->dora);
        vkl_tensor *logits = vkl_llama_forward(g, m, tid, &f);
        vkl_graph_keep(g, logits);
        if (vkl_graph_failed(g)) rc = vkl_fail(e, "generation graph: %s", vkl_graph_error(g));
        all = rc ? NULL : malloc(sizeof(float) * (size_t)L * V);
        if (!rc && !all) rc = vkl_fail(e, "out of host memory");
        rc = rc || vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(c, logits, all, VKL_F32, e);
        if (!rc) memcpy(last, all + (size_t)(L - 1) * V, sizeof(float) * (size_t)V);
    }
    free(all);
    vkl_graph_free(g);
    vkl_tensor_free(mask);
    vkl_tensor_free(tid);
    return rc;
}

int vkl_llama_generate(const vkl_llama *m, const int32_t *prompt, int n_prompt, const vkl_llama_gen_opts *o,
                       int32_t *out, int *n_out, vkl_err *e)
{
    *n_out = 0;
    int V = m->cfg.vocab;
    if (n_prompt < 1) return vkl_fail(e, "generation needs at least one prompt token");
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return vkl_fail(e, "prompt token %d (at %d) is outside the vocabulary of %d", prompt[i], i, V);
    int max_len = o->max_len > 0 ? o->max_len : n_prompt + o->max_new;
    if (n_prompt > max_len) return vkl_fail(e, "the prompt has %d tokens, more than the %d positions allowed", n_prompt, max_len);
    if (o->max_new < 1) return 0;
    vkl_llama_kv *kv = NULL;
    float *logits = malloc(sizeof(float) * (size_t)V);
    int32_t *hist = malloc(sizeof(int32_t) * (size_t)(n_prompt + o->max_new)); /* what the penalty looks at */
    if (!logits || !hist) {
        free(logits);
        free(hist);
        return vkl_fail(e, "out of host memory");
    }
    memcpy(hist, prompt, sizeof(int32_t) * (size_t)n_prompt);
    if (vkl_llama_kv_new(m, 1, max_len, &kv, e)) {
        free(logits);
        free(hist);
        return -1;
    }
    int rc = run_positions(m, o, kv, prompt, n_prompt, 0, logits, e);
    int pos = n_prompt;
    while (!rc) {
        if (o->step_logits) memcpy(o->step_logits + (size_t)*n_out * V, logits, sizeof(float) * (size_t)V);
        int32_t id = o->sampling ? vkl_lm_sample(o->sampling, logits, V, hist, n_prompt + *n_out, (uint64_t)*n_out)
                                 : argmax(logits, V);
        if (id < 0) {
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        hist[n_prompt + *n_out] = id;
        out[(*n_out)++] = id;
        if ((o->on_token && o->on_token(o->user, id)) || id == o->stop_id || *n_out >= o->max_new || pos >= max_len)
            break;
        rc = run_positions(m, o, kv, &id, 1, pos++, logits, e);
    }
    vkl_llama_kv_free(kv);
    free(logits);
    free(hist);
    return rc;
}
