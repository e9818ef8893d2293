#include "llama/lm_sample.h"

#include "rng.h"

#include <math.h>
#include <stdlib.h>

enum { LM_SAMPLE_STREAM = 2 }; /* beside the image streams of rng.h */

void vkl_lm_sampling_default(vkl_lm_sampling *s)
{
    *s = (vkl_lm_sampling){.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0, .repeat_penalty = 1, .seed = 0};
}

void vkl_lm_repeat_penalty(float *logits, int V, const int32_t *history, int n, float penalty)
{
    if (penalty == 1.0f) return;
    unsigned char *seen = calloc((size_t)V, 1);
    for (int i = 0; i < n; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= V) continue;
        if (seen) {
            if (seen[id]) continue; /* each id once, as the gather/scatter of transformers */
            seen[id] = 1;
        } else {
            int dup = 0;
            for (int j = 0; j < i && !dup; j++) dup = history[j] == id;
            if (dup) continue;
        }
        logits[id] = logits[id] < 0 ? logits[id] * penalty : logits[id] / penalty;
    }
    free(seen);
}

typedef struct ranked {
    double v;
    int id;
} ranked;

static int by_value_desc(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->v != y->v) return x->v > y->v ? -1 : 1;
    return x->id - y->id;
}

/* softmax of x (-inf = dropped) into p */
static void softmax(const double *x, int V, double *p)
{
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < V; i++) sum += (p[i] = isinf(x[i]) ? 0 : exp(x[i] - mx));
    for (int i = 0; i < V; i++) p[i] /= sum;
}

int vkl_lm_sample_probs(const vkl_lm_sampling *s, const float *logits, int V, double *probs)
{
    if (V < 1) return -1;
    double *x = malloc(sizeof(double) * (size_t)V);
    ranked *r = malloc(sizeof(ranked) * (size_t)V);
    if (!x || !r) {
        free(x);
        free(r);
        return -1;
    }
    for (int i = 0; i < V; i++) x[i] = (double)logits[i] / (double)s->temperature;
    if (s->top_k > 0 && s->top_k < V) {
        for (int i = 0; i < V; i++) r[i] = (ranked){x[i], i};
        qsort(r, (size_t)V, sizeof *r, by_value_desc);
        double kth = r[s->top_k - 1].v;
        for (int i = 0; i < V; i++)
            if (x[i] < kth) x[i] = -INFINITY;
    }
    if (s->top_p < 1) {
        softmax(x, V, probs);
        for (int i = 0; i < V; i++) r[i] = (ranked){probs[i], i};
        qsort(r, (size_t)V, sizeof *r, by_value_desc);
        double above = 0;
        for (int i = 0; i < V; i++) {
            if (above >= s->top_p && i > 0) x[r[i].id] = -INFINITY;
            above += r[i].v;
        }
    }
    if (s->min_p > 0) {
        softmax(x, V, probs);
        double top = 0;
        for (int i = 0; i < V; i++) top = probs[i] > top ? probs[i] : top;
        for (int i = 0; i < V; i++)
            if (probs[i] < s->min_p * top) x[i] = -INFINITY;
    }
    softmax(x, V, probs);
    free(x);
    free(r);
    return 0;
}

int32_t vkl_lm_sample_pick(const double *probs, int V, double u)
{
    double c = 0;
    int32_t last = 0;
    for (int i = 0; i < V; i++) {
        if (probs[i] <= 0) continue;
        c += probs[i];
        last = i;
        if (c > u) return i;
    }
    return last; /* u beyond the rounded total: the last token kept */
}

double vkl_lm_sample_uniform(uint64_t seed, uint64_t k)
{
    uint32_t ctr[4] = {(uint32_t)k, (uint32_t)(k >> 32), LM_SAMPLE_STREAM, 0}, key[2] = {(uint32_t)seed,
                                                                                        (uint32_t)(seed >> 32)};
    uint32_t out[4];
    vkl_philox4x32_10(ctr, key, out);
    uint64_t bits = ((uint64_t)out[0] << 21) | (out[1] >> 11); /* 53 bits */
    return (double)(bits & ((1ull << 53) - 1)) / 9007199254740992.0;
}

int32_t vkl_lm_sample(const vkl_lm_sampling *s, float *logits, int V, const int32_t *history, int n_history,
                      uint64_t k)
{
    vkl_lm_repeat_penalty(logits, V, history, n_history, s->repeat_penalty);
    if (!(s->temperature > 0)) {
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i; /* first maximum, as torch.argmax */
        return best;
    }
    double *p = malloc(sizeof(double) * (size_t)V);
    if (!p || vkl_lm_sample_probs(s, logits, V, p)) {
        free(p);
        return -1;
    }
    int32_t id = vkl_lm_sample_pick(p, V, vkl_lm_sample_uniform(s->seed, k));
    free(p);
    return id;
}
