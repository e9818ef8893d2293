#ifndef VKL_BENCH_TRAIN_H
#define VKL_BENCH_TRAIN_H
/* vklora bench train-step --family sd1.5 --width W --height H [--rank 16]
 * [--checkpointing 0|1] [--batch 1] [--steps N]: one full LoRA training step
 * (forward, backward, AdamW) of a full-size UNet with random weights and
 * adapters on every attention projection; seconds per step (median), the
 * activation arena and peak device memory. */
int vkl_bench_train_step(int argc, char **argv);
#endif
