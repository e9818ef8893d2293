#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

double vkl_bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int vkl_bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int vkl_bench_args(const char *name, const vkl_arg *table, int n, int argc, char **argv)
{
    char cmd[64];
    snprintf(cmd, sizeof cmd, "bench %s", name);
    int rc = vkl_args_parse(cmd, table, n, argc, argv, NULL);
    if (rc) {
        FILE *f = rc == VKL_ARGS_HELP ? stdout : stderr;
        fprintf(f, "usage: vklora bench %s [options]\n", name);
        vkl_args_help(f, table, n);
    }
    return rc;
}

int vkl_bench_time_graph_ex(vkl_graph *g, int min_reps, double min_seconds, double *median, int *reps_out,
                            double *first, vkl_err *e)
{
    double t = vkl_bench_now();
    if (vkl_graph_run(g, e)) return -1;
    if (first) *first = vkl_bench_now() - t;
    double times[200];
    int reps = 0;
    double start = vkl_bench_now();
    while (reps < 200 && (reps < min_reps || vkl_bench_now() - start < min_seconds)) {
        double t0 = vkl_bench_now();
        if (vkl_graph_run(g, e)) return -1;
        times[reps++] = vkl_bench_now() - t0;
    }
    qsort(times, (size_t)reps, sizeof *times, vkl_bench_cmp_double);
    *median = times[reps / 2];
    *reps_out = reps;
    return 0;
}

int vkl_bench_time_graph(vkl_graph *g, int min_reps, double min_seconds, double *median, int *reps_out, vkl_err *e)
{
    return vkl_bench_time_graph_ex(g, min_reps, min_seconds, median, reps_out, NULL, e);
}
