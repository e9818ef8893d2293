/* Element-wise ops on strided views larger than one storage binding: each
 * output window binds only the part of the input it reads, so a transposed
 * view of a tensor bigger than the device's binding limit (the binding=64K
 * profile here) maps like any other (it used to bind the whole view and fail). */
#include "vkl_test.h"
#include "ops.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>

static void transposed_view_beyond_one_binding(void **state)
{
    (void)state;
    enum { R = 256, C = 160 }; /* 160 KiB of f32: above a 64 KiB binding */
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    float *x = malloc(sizeof(float) * R * C), *w = malloc(sizeof(float) * R * C);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 5);
    for (int i = 0; i < R * C; i++) x[i] = vkl_test_rng_uniform(&r, -1, 1), w[i] = vkl_test_rng_uniform(&r, -1, 1);
    vkl_tensor *X = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){R, C}, x);
    vkl_tensor *W = vkl_test_upload(c, VKL_F32, 2, (int64_t[]){C, R}, w);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *t = vkl_permute(g, X, (const int[]){1, 0}); /* [C, R], strides (1, C) */
    vkl_tensor *s = vkl_scale(g, t, 2.0f);
    vkl_tensor *sum = vkl_add(g, t, W);
    vkl_tensor *sq = vkl_unary(g, t, VKL_UNARY_SQUARE, 1, 0);
    vkl_graph_keep(g, s);
    vkl_graph_keep(g, sum);
    vkl_graph_keep(g, sq);
    vkl_test_run_graph(g);
    float *ys = vkl_test_download(c, s), *ya = vkl_test_download(c, sum), *yq = vkl_test_download(c, sq);
    double worst = 0;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < R; j++) {
            float v = x[j * C + i];
            worst = fmax(worst, fabs(ys[i * R + j] - 2 * v));
            worst = fmax(worst, fabs(ya[i * R + j] - (v + w[i * R + j])));
            worst = fmax(worst, fabs(yq[i * R + j] - v * v));
        }
    print_message("max error %g over %d elements in %d dispatches\n", worst, R * C, vkl_graph_dispatch_count(g));
    assert_true(worst < 1e-6);
    assert_true(vkl_graph_dispatch_count(g) > 3); /* windows, not one dispatch per op */
    free(ys);
    free(ya);
    free(yq);
    free(x);
    free(w);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(W);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(transposed_view_beyond_one_binding)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
