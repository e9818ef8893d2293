#ifndef VKL_BENCH_LM_H
#define VKL_BENCH_LM_H
/* vklora bench lm --shape tinyllama|llama3-8b|tiny: prefill and decode
 * tokens/s of greedy generation with the KV cache and peak device memory,
 * random weights of the named shape; --steps 0 builds and plans the prefill
 * graph only (its memory, no run). */
int vkl_bench_lm(int argc, char **argv);
#endif
