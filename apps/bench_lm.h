#ifndef VKL_BENCH_LM_H
#define VKL_BENCH_LM_H
/* vklora bench lm-train [--base-dtype f32|f16|nf4] [shape options] [--steps N]:
 * LoRA training steps (forward, backward, AdamW) of a LLaMA of the given
 * shape with random weights; the base's bytes, peak device memory and
 * seconds per step. The default shape is TinyLlama-1.1B's. */
int vkl_bench_lm_train(int argc, char **argv);
/* vklora bench lm --shape tinyllama|llama3-8b|tiny: prefill and decode
 * tokens/s of greedy generation with the KV cache and peak device memory,
 * random weights of the named shape; --steps 0 builds and plans the prefill
 * graph only (its memory, no run). */
int vkl_bench_lm(int argc, char **argv);
#endif
