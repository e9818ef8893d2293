/* Helpers shared by the LLaMA tests: the tiny reference model, id uploads,
 * graph runs and comparisons against the refkit's vectors. */
#ifndef VKL_LLAMA_CHECK_H
#define VKL_LLAMA_CHECK_H

#include "vkl_test.h"
#include "llama/llama.h"
#include "ops.h"

#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LM_DIR "refkit/lm"

static inline vkl_llama *lm_load(vkl_ctx *c, const char *rel, vkl_dtype dt)
{
    vkl_err e = {{0}};
    vkl_llama *m = NULL;
    if (vkl_llama_load(c, vkl_test_shared_path(rel), dt, &m, &e)) {
        print_error("load %s: %s\n", rel, e.msg);
        fail();
    }
    return m;
}

static inline vkl_tensor *lm_ids(vkl_ctx *c, const int32_t *ids, int B, int L)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){B, L}, &e);
    if (!t || vkl_tensor_upload(c, t, ids, VKL_I32, &e)) {
        print_error("ids: %s\n", e.msg);
        fail();
    }
    return t;
}

static inline vkl_tensor *lm_mask(vkl_ctx *c, int B, int L, int pos0, const int *attn)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_llama_mask(c, B, L, pos0, attn, &e);
    if (!t) {
        print_error("mask: %s\n", e.msg);
        fail();
    }
    return t;
}

static inline void lm_plan(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_failed(g)) {
        print_error("graph: %s\n", vkl_graph_error(g));
        fail();
    }
    if (vkl_graph_plan(g, &e)) {
        print_error("plan: %s\n", e.msg);
        fail();
    }
}

static inline void lm_run(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_run(g, &e)) {
        print_error("run: %s\n", e.msg);
        fail();
    }
}

static inline float *lm_download(vkl_ctx *c, const vkl_tensor *t)
{
    vkl_err e = {{0}};
    float *out = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    assert_non_null(out);
    if (vkl_tensor_download(c, t, out, VKL_F32, &e)) {
        print_error("download: %s\n", e.msg);
        fail();
    }
    return out;
}

/* max |got - want| <= tol, printing the figure. */
static inline void lm_expect(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double md = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= md)) md = d;
    }
    printf("  %-40s max |diff| %.3g (tolerance %.1g)\n", what, md, tol);
    if (!(md <= tol)) {
        print_error("%s: max |diff| %g > %g\n", what, md, tol);
        fail();
    }
}

/* i64 ids of a reference file as i32. */
static inline int32_t *lm_ref_ids(const char *rel, const char *name, int64_t *n)
{
    return vkl_test_ref_i32(rel, name, n);
}

#endif
