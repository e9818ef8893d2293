#include "vkl_test.h"
#include "quant.h"
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

static void nf4_round(vkl_dtype dt, float *x, size_t n)
{
    uint64_t nb = ((uint64_t)n + 63) / 64;
    uint8_t *packed = malloc((n + 1) / 2);
    float *absmax = malloc(sizeof(float) * (size_t)nb);
    vkl_err e = {{0}};
    if (!packed || !absmax || vkl_nf4_quantize(x, (uint64_t)n, packed, absmax, &e)) {
        print_error("nf4 round: %s\n", e.msg);
        fail();
    }
    if (dt == VKL_NF4_DQ) {
        uint8_t *q = malloc((size_t)nb);
        float *a2 = malloc(sizeof(float) * (size_t)((nb + 255) / 256)), off;
        vkl_nf4_double_quant(absmax, nb, &off, q, a2);
        vkl_nf4_double_dequant(q, a2, off, nb, absmax);
        free(q);
        free(a2);
    }
    vkl_nf4_dequantize(packed, absmax, (uint64_t)n, x);
    free(packed);
    free(absmax);
}

void vkl_test_round_to(vkl_dtype dt, float *x, size_t n)
{
    if (dt == VKL_NF4 || dt == VKL_NF4_DQ) {
        nf4_round(dt, x, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (dt == VKL_F16) x[i] = vkl_f16_to_f32(vkl_f32_to_f16(x[i]));
        if (dt == VKL_BF16) x[i] = vkl_bf16_to_f32(vkl_f32_to_bf16(x[i]));
    }
}
