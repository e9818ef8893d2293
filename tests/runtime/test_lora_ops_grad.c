/* Backward of the fused LoRA layer vkl_linear_lora (two matmul nodes:
 * backward_matmul with its second product and per-rank column scale): the
 * device gradients of loss = sum(y * r) with respect to x, the down
 * projections a_cat and the up projections b_cat against central finite
 * differences of the same loss in double precision, written out here. */
#include "grad_check.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

enum { T = 5, IN = 7, OUT = 6, R = 3 };

typedef struct {
    double x[T * IN], w[OUT * IN], bias[OUT], a[R * IN], b[OUT * R], s[R], r[T * OUT];
} lora_case;

/* y = x w^T + bias + ((x a^T) * s) b^T; the loss sum(y * r) */
static double loss(void *u)
{
    const lora_case *k = u;
    double total = 0;
    for (int t = 0; t < T; t++) {
        double h[R];
        for (int q = 0; q < R; q++) {
            double d = 0;
            for (int i = 0; i < IN; i++) d += k->x[t * IN + i] * k->a[q * IN + i];
            h[q] = d * k->s[q];
        }
        for (int o = 0; o < OUT; o++) {
            double y = k->bias[o];
            for (int i = 0; i < IN; i++) y += k->x[t * IN + i] * k->w[o * IN + i];
            for (int q = 0; q < R; q++) y += h[q] * k->b[o * R + q];
            total += y * k->r[t * OUT + o];
        }
    }
    return total;
}

static float *as_f32(const double *d, int n)
{
    float *f = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) f[i] = (float)d[i];
    return f;
}

static void gradients_match_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 77);
    lora_case k;
    double *all[] = {k.x, k.w, k.bias, k.a, k.b, k.s, k.r};
    int sizes[] = {T * IN, OUT * IN, OUT, R * IN, OUT * R, R, T * OUT};
    float *f[7];
    for (int i = 0; i < 7; i++) {
        for (int j = 0; j < sizes[i]; j++) all[i][j] = (double)vkl_test_rng_uniform(&rng, -1, 1);
        f[i] = as_f32(all[i], sizes[i]); /* the device gets these values, exactly */
        for (int j = 0; j < sizes[i]; j++) all[i][j] = (double)f[i][j];
    }
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_tensor *X = opc_upload_f32(c, VKL_F32, 2, (int64_t[]){T, IN}, f[0]);
    vkl_tensor *W = opc_upload_f32(c, VKL_F32, 2, (int64_t[]){OUT, IN}, f[1]);
    vkl_tensor *BI = opc_upload_f32(c, VKL_F32, 1, (int64_t[]){OUT}, f[2]);
    vkl_tensor *A = opc_upload_f32(c, VKL_F32, 2, (int64_t[]){R, IN}, f[3]);
    vkl_tensor *B = opc_upload_f32(c, VKL_F32, 2, (int64_t[]){OUT, R}, f[4]);
    vkl_tensor *S = opc_upload_f32(c, VKL_F32, 1, (int64_t[]){R}, f[5]);
    vkl_tensor *RR = opc_upload_f32(c, VKL_F32, 2, (int64_t[]){T, OUT}, f[6]);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear_lora(g, X, W, BI, A, B, S);
    vkl_tensor *wrt[3] = {X, A, B};
    float *grads[3];
    gc_run_backward(c, g, y, RR, wrt, 3, grads);
    double *targets[3] = {k.x, k.a, k.b};
    int n[3] = {T * IN, R * IN, OUT * R};
    const char *what[3] = {"d/dx", "d/da_cat", "d/db_cat"};
    for (int i = 0; i < 3; i++) {
        double *an = gc_f64(grads[i], n[i]);
        gc_fd_check(what[i], loss, &k, targets[i], n[i], an, 1e-4, 1e-4);
        free(an);
        free(grads[i]);
    }
    vkl_graph_free(g);
    vkl_tensor *ts[] = {X, W, BI, A, B, S, RR};
    for (int i = 0; i < 7; i++) {
        vkl_tensor_free(ts[i]);
        free(f[i]);
    }
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gradients_match_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
