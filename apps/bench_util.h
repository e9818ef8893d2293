/* Helpers every benchmark uses: a monotonic clock, medians, positive-integer
 * options, and timing a planned graph. Benchmarks print figures and never
 * assert on time. */
#ifndef VKL_BENCH_UTIL_H
#define VKL_BENCH_UTIL_H

#include "args.h"
#include "vkl.h"

double vkl_bench_now(void);
/* qsort comparator for doubles */
int vkl_bench_cmp_double(const void *a, const void *b);
/* Reads benchmark NAME's options against its table (apps/args.h); a refusal
 * is named and followed by the benchmark's options with their defaults.
 * VKL_ARGS_OK, VKL_ARGS_HELP (the list printed on stdout) or VKL_ARGS_USAGE. */
int vkl_bench_args(const char *name, const vkl_arg *table, int n, int argc, char **argv);
/* Runs g once to warm up, then at least min_reps times and for at least
 * min_seconds (at most 200 runs); the median run time in *median. */
int vkl_bench_time_graph(vkl_graph *g, int min_reps, double min_seconds, double *median, int *reps, vkl_err *e);
/* The same, also giving the warm-up run's time (pipeline compilation included) in *first. */
int vkl_bench_time_graph_ex(vkl_graph *g, int min_reps, double min_seconds, double *median, int *reps, double *first,
                            vkl_err *e);

#endif
