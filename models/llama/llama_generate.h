/* Greedy generation with a KV cache.
 *
 * The prompt runs as one graph (positions 0..P-1, keys/values written into
 * the cache); then each new token runs a one-position decode graph that
 * writes its key/value at position p and attends over cache positions 0..p
 * through views. Decode graphs are built and planned per position: the
 * position is part of the RoPE node and of the cache views' shapes, and a
 * plan costs only host time here (pipelines are cached by the context),
 * which for small models is far below the device time of a step. A
 * fixed-size graph would need the attention and RoPE kernels to take the
 * length from a run-time value. */
#ifndef VKL_LLAMA_GENERATE_H
#define VKL_LLAMA_GENERATE_H

#include "llama/llama.h"
#include "llama/lm_sample.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_llama_gen_opts {
    const vkl_lora_set *lora;
    const vkl_llama_dora *dora;
    const vkl_llama_ia3 *ia3;
    int max_new;     /* new tokens at most */
    int max_len;     /* stop when this many positions have been fed (0: prompt + max_new) */
    int stop_id;     /* stop after generating this id (e.g. eos); -1: never */
    float *step_logits; /* if not NULL: [max_new, V], the logits each new token was taken from */
    const vkl_lm_sampling *sampling; /* NULL: greedy (lm_sample.h) */
    /* called after each new token (may be NULL); returning non-zero stops */
    int (*on_token)(void *user, int32_t id);
    void *user;
} vkl_llama_gen_opts;

/* prompt: n_prompt >= 1 ids. out: room for max_new ids; *n_out = new ids made. */
int vkl_llama_generate(const vkl_llama *m, const int32_t *prompt, int n_prompt, const vkl_llama_gen_opts *o,
                       int32_t *out, int *n_out, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
