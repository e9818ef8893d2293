#ifndef VKL_BENCH_LM_H
#define VKL_BENCH_LM_H
/* vklora bench lm-train [--base-dtype f32|f16|nf4] [shape options] [--steps N]:
 * LoRA training steps (forward, backward, AdamW) of a LLaMA of the given
 * shape with random weights; the base's bytes, peak device memory and
 * seconds per step. The default shape is TinyLlama-1.1B's. */
int vkl_bench_lm_train(int argc, char **argv);
#endif
