/* Data-parallel training: a thin communicator. Each process drives one
 * device; the trainers call it only at the gradient boundary (sum the
 * gradients of every process, agree on a few per-step values). The
 * library holds no implementation of a transport: a program supplies one
 * (vklora's is MPI, apps/dist_mpi.c) by filling the function pointers. A
 * NULL communicator, or one of size 1, is a single process and every call
 * below is a no-op that succeeds, so trainers need no second code path.
 *
 * Every rank must make the same calls in the same order (collectives). */
#ifndef VKL_DIST_H
#define VKL_DIST_H

#include "vkl.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_dist vkl_dist;
struct vkl_dist {
    int rank, size;             /* this process and how many share the work */
    int local_rank, local_size; /* the same on this machine (device choice) */
    /* In-place element-wise sums / maxima over all ranks; every rank gets the
     * same bits. Return 0, or -1 with e filled (a timeout or a lost rank). */
    int (*sum_f32)(vkl_dist *d, float *buf, size_t n, vkl_err *e);
    int (*sum_f64)(vkl_dist *d, double *buf, size_t n, vkl_err *e);
    int (*max_f64)(vkl_dist *d, double *buf, size_t n, vkl_err *e);
    /* buf of `bytes` from rank `root` to every rank. */
    int (*bcast)(vkl_dist *d, void *buf, size_t bytes, int root, vkl_err *e);
    void *impl;
    /* what the gradient sums cost so far (vkl_dist_sum_tensors): wall time
     * inside the transport, and wall time including the device copies */
    double comm_seconds, sync_seconds;
    uint64_t comm_bytes;
};

/* size > 1: several processes. */
int vkl_dist_active(const vkl_dist *d);
/* rank 0 (or no communicator): the process that writes files. */
int vkl_dist_is_root(const vkl_dist *d);

int vkl_dist_sum_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e);
int vkl_dist_max_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e);
int vkl_dist_bcast(vkl_dist *d, void *buf, size_t bytes, int root, vkl_err *e);
/* Whether a flag (any nonzero value) is set on any rank. */
int vkl_dist_any(vkl_dist *d, int flag, int *any, vkl_err *e);
/* Fails (same message on every rank) unless v holds the same value on every
 * rank: the guard that all ranks took the same optimiser step. */
int vkl_dist_check_same(vkl_dist *d, const double *v, size_t n, const char *what, vkl_err *e);

/* Default bound of one host staging bucket (bytes). */
#define VKL_DIST_BUCKET_BYTES (4u << 20)

/* t[i] (f32 device tensors) = sum over ranks of scale * t[i]: downloaded
 * into a host bucket of at most bucket_bytes (a larger single tensor gets a
 * bucket of its own size), summed across ranks, uploaded back, bucket by
 * bucket, so the host never holds a copy of all the tensors at once. A
 * non-finite value on any rank makes the sum non-finite on every rank (the
 * optimiser's NaN skip then agrees); scale 0 adds zeros whatever t holds.
 * bucket_bytes 0: VKL_DIST_BUCKET_BYTES. */
int vkl_dist_sum_tensors(vkl_dist *d, vkl_ctx *c, vkl_tensor *const *t, int n, float scale, size_t bucket_bytes,
                         vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
