/* vklora bench linear-lora: the LoRA-fused linear layer beside the plain one. */
#ifndef VKL_BENCH_LORA_H
#define VKL_BENCH_LORA_H

/* argv[0] is the benchmark name; returns the process exit status. */
int vkl_bench_linear_lora(int argc, char **argv);

#endif
