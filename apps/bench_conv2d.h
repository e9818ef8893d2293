/* vklora bench conv2d: GFLOP/s of vkl_conv2d (or vkl_conv2d_lora) on one shape. */
#ifndef VKL_BENCH_CONV2D_H
#define VKL_BENCH_CONV2D_H

/* argv[0] is "conv2d"; returns the exit status (0 ok, 1 error, 2 usage). */
int vkl_bench_conv2d(int argc, char **argv);

#endif
