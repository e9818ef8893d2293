#ifndef VKL_BENCH_ALLREDUCE_H
#define VKL_BENCH_ALLREDUCE_H
/* [mpirun -np N] vklora bench allreduce [--family sd1.5|sd2.1|sdxl]
 * [--rank 16] [--bucket-mib 4] [--reps 10]: the per-step gradient sum of
 * data-parallel training on an adapter of every attention projection of a
 * full-size UNet; seconds per sum and bytes per second. */
int vkl_bench_allreduce(int argc, char **argv);
#endif
