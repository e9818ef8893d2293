/* vklora bench group-norm: timing of the group norm (SD UNet shape by default). */
#ifndef VKL_BENCH_NORM_H
#define VKL_BENCH_NORM_H

int vkl_bench_group_norm(int argc, char **argv);

#endif
