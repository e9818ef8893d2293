#include "vkl_test.h"
#include "vkl.h"

#include <stdlib.h>

vkl_tensor *vkl_test_upload(vkl_ctx *c, vkl_dtype dt, int nd, const int64_t *shape, const float *data)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, shape, &e);
    if (!t || vkl_tensor_upload(c, t, data, VKL_F32, &e)) {
        print_error("upload: %s\n", e.msg);
        fail();
    }
    return t;
}

void vkl_test_run_graph(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
}

float *vkl_test_download(vkl_ctx *c, const vkl_tensor *t)
{
    vkl_err e = {{0}};
    float *out = malloc(sizeof(float) * (size_t)(vkl_tensor_nelem(t) ? vkl_tensor_nelem(t) : 1));
    if (!out || vkl_tensor_download(c, t, out, VKL_F32, &e)) {
        print_error("download: %s\n", e.msg);
        fail();
    }
    return out;
}

void vkl_test_round_to(vkl_dtype dt, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == VKL_F16) x[i] = vkl_f16_to_f32(vkl_f32_to_f16(x[i]));
        if (dt == VKL_BF16) x[i] = vkl_bf16_to_f32(vkl_f32_to_bf16(x[i]));
    }
}
