/* Choosing the next token from a language model's logits, on the host, as
 * transformers' generate() does with do_sample:
 *   1. repetition penalty over every id seen so far (prompt included): a
 *      positive logit is divided by the penalty, a negative one multiplied;
 *   2. temperature: logits / T (T = 0: the first maximum, greedy);
 *   3. top-k: keep the k highest (and every token tied with the k-th);
 *   4. top-p: keep a token when the probability of the tokens ranked above
 *      it is below p (so at least the top token stays);
 *   5. min-p: drop tokens whose probability is below min_p x the top one's;
 *   6. draw from the softmax of what is kept with a uniform number u:
 *      the first id (vocabulary order) whose cumulative probability exceeds u.
 * u for the k-th new token is Philox4x32-10 (runtime/rng.h) with key = seed and
 * counter (k, 0, stream 2, 0): the draws depend on the seed and the token's
 * index only, so a seed gives the same choices on every device (up to logits
 * that differ at the decision boundary). */
#ifndef VKL_LM_SAMPLE_H
#define VKL_LM_SAMPLE_H

#include <stdint.h>

typedef struct vkl_lm_sampling {
    float temperature;    /* 0: greedy */
    int top_k;            /* 0: off */
    float top_p;          /* 1: off */
    float min_p;          /* 0: off */
    float repeat_penalty; /* 1: off */
    uint64_t seed;
} vkl_lm_sampling;

void vkl_lm_sampling_default(vkl_lm_sampling *s); /* greedy, every filter off */

/* Step 1 in place (history: the ids so far, duplicates allowed). */
void vkl_lm_repeat_penalty(float *logits, int V, const int32_t *history, int n, float penalty);
/* Steps 2-5: probs[V] gets the distribution drawn from (0 for dropped ids).
 * Needs T > 0. Returns -1 when out of memory. */
int vkl_lm_sample_probs(const vkl_lm_sampling *s, const float *logits, int V, double *probs);
/* Step 6 for a given u in [0, 1). */
int32_t vkl_lm_sample_pick(const double *probs, int V, double u);
/* The uniform number of new token k (53 bits, in [0, 1)). */
double vkl_lm_sample_uniform(uint64_t seed, uint64_t k);
/* All steps; logits are changed (penalty). Returns the id, or -1 when out of memory. */
int32_t vkl_lm_sample(const vkl_lm_sampling *s, float *logits, int V, const int32_t *history, int n_history,
                      uint64_t k);

#endif
