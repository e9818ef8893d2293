/* Helpers every benchmark uses: a monotonic clock, medians, positive-integer
 * options, and timing a planned graph. Benchmarks print figures and never
 * assert on time. */
#ifndef VKL_BENCH_UTIL_H
#define VKL_BENCH_UTIL_H

#include "vkl.h"

double vkl_bench_now(void);
/* qsort comparator for doubles */
int vkl_bench_cmp_double(const void *a, const void *b);
/* Parses a positive integer; -1 when s is not one. */
int vkl_bench_parse_pos(const char *s, int64_t *out);
/* A whole decimal integer in [lo, hi], or -1. */
int vkl_bench_parse_int(const char *s, int lo, int hi, int *out);
/* Runs g once to warm up, then at least min_reps times and for at least
 * min_seconds (at most 200 runs); the median run time in *median. */
int vkl_bench_time_graph(vkl_graph *g, int min_reps, double min_seconds, double *median, int *reps, vkl_err *e);
/* The same, also giving the warm-up run's time (pipeline compilation included) in *first. */
int vkl_bench_time_graph_ex(vkl_graph *g, int min_reps, double min_seconds, double *median, int *reps, double *first,
                            vkl_err *e);

#endif
