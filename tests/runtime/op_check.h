/* Small helpers for op tests: upload host floats as a tensor of any float
 * dtype, run a graph, download as f32, and round host data the way a 16-bit
 * tensor stores it (so the CPU reference sees what the device sees), read
 * shared reference tensors. */
#ifndef VKL_OP_CHECK_H
#define VKL_OP_CHECK_H

#include "vkl_test.h"
#include "vkl.h"

#include <stdlib.h>

static inline vkl_tensor *opc_upload(vkl_ctx *c, vkl_dtype dt, int nd, const int64_t *shape, const void *data,
                                     vkl_dtype src_dt)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, shape, &e);
    if (!t || vkl_tensor_upload(c, t, data, src_dt, &e)) {
        print_error("upload: %s\n", e.msg);
        fail();
    }
    return t;
}

static inline vkl_tensor *opc_upload_f32(vkl_ctx *c, vkl_dtype dt, int nd, const int64_t *shape, const float *data)
{
    return opc_upload(c, dt, nd, shape, data, VKL_F32);
}

static inline void opc_run(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_failed(g)) {
        print_error("graph build: %s\n", vkl_graph_error(g));
        fail();
    }
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
}

static inline float *opc_download(vkl_ctx *c, const vkl_tensor *t)
{
    vkl_err e = {{0}};
    float *out = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    if (!out || vkl_tensor_download(c, t, out, VKL_F32, &e)) {
        print_error("download: %s\n", e.msg);
        fail();
    }
    return out;
}

static inline void opc_round_to(vkl_dtype dt, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == VKL_F16) x[i] = vkl_f16_to_f32(vkl_f32_to_f16(x[i]));
        if (dt == VKL_BF16) x[i] = vkl_bf16_to_f32(vkl_f32_to_bf16(x[i]));
    }
}

/* y [M, N] = x W^T + sum_q sc[q] (x A^T)[., q] B[., q]^T in double (LoRA's
 * fused product on a base W [N, K] given as f32 values; A [R, K], B [N, R]). */
static inline void opc_ref_linear_lora(const float *x, const float *w, const float *a, const float *b, const float *sc,
                                       int64_t M, int64_t N, int64_t K, int64_t R, float *y)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += (double)x[m * K + k] * w[n * K + k];
            for (int64_t q = 0; q < R; q++) {
                double h = 0;
                for (int64_t k = 0; k < K; k++) h += (double)x[m * K + k] * a[q * K + k];
                s += sc[q] * h * b[n * R + q];
            }
            y[m * N + n] = (float)s;
        }
}

/* n random floats in [lo, hi), rounded to dt; malloc'd. */
static inline float *opc_random(vkl_test_rng *r, vkl_dtype dt, size_t n, float lo, float hi)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    vkl_test_fill(r, x, n, lo, hi);
    opc_round_to(dt, x, n);
    return x;
}

/* Reference tensor `name` of the shared safetensors file `rel` as f32,
 * checked to hold n elements; malloc'd. */
static inline float *opc_ref(const char *rel, const char *name, int64_t n)
{
    int64_t got = 0;
    float *x = vkl_test_ref_f32(rel, name, &got);
    if (got != n) {
        print_error("reference tensor %s in %s has %lld elements, expected %lld\n", name, rel, (long long)got,
                    (long long)n);
        fail();
    }
    return x;
}

#endif
