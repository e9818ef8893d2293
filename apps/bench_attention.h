/* vklora bench attention: timing of vkl_attention (flash style). */
#ifndef VKL_BENCH_ATTENTION_H
#define VKL_BENCH_ATTENTION_H

int vkl_bench_attention(int argc, char **argv);

#endif
