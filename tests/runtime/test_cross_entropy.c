/* Cross-entropy op: forward (per-row logsumexp, mean over non-ignored rows)
 * and backward against the double-precision CPU reference, the reference
 * backward against central finite differences, in both profiles, with
 * ignored rows (-100 and out-of-range targets), strided logits, windows under
 * a 64 KiB binding, and a batch whose every row is ignored (NaN as torch). */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

typedef struct ce_case {
    const double *x;
    const int32_t *t;
    int64_t rows, V;
} ce_case;

static double ce_loss64(void *user)
{
    const ce_case *c = user;
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t r = 0; r < c->rows; r++) {
        int32_t t = c->t[r];
        if (t < 0 || t >= c->V || t == -100) continue;
        const double *x = c->x + r * c->V;
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < c->V; v++) m = x[v] > m ? x[v] : m;
        for (int64_t v = 0; v < c->V; v++) s += exp(x[v] - m);
        sum += m + log(s) - x[t];
        cnt++;
    }
    return sum / (double)cnt;
}

static int32_t *targets(vkl_test_rng *r, int64_t rows, int64_t V)
{
    int32_t *t = malloc(sizeof(int32_t) * (size_t)rows);
    for (int64_t i = 0; i < rows; i++) {
        int k = vkl_test_rng_int(r, 0, 9);
        t[i] = k == 0 ? -100 : k == 1 ? (int32_t)V + 3 : vkl_test_rng_int(r, 0, (int)V - 1);
    }
    t[0] = (int32_t)V - 1;
    return t;
}

static void test_reference_fd(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 11);
    int64_t rows = 7, V = 13;
    float *x = opc_random(&r, VKL_F32, (size_t)(rows * V), -3, 3);
    int32_t *t = targets(&r, rows, V);
    float *dx = malloc(sizeof(float) * (size_t)(rows * V));
    vkl_ref_cross_entropy_backward(x, rows, V, t, -100, 1.0, dx);
    double *xd = gc_f64(x, rows * V), *dd = gc_f64(dx, rows * V);
    ce_case c = {xd, t, rows, V};
    assert_true(fabs(ce_loss64(&c) - vkl_ref_cross_entropy(x, rows, V, t, -100, NULL)) < 1e-12);
    gc_fd_check("cross_entropy reference backward", ce_loss64, &c, xd, rows * V, dd, 1e-5, 1e-6);
    free(x);
    free(t);
    free(dx);
    free(xd);
    free(dd);
}

/* Forward and backward on the device vs the reference. strided: logits are a
 * transposed view. */
static void run_case(const char *profile, int64_t rows, int64_t V, int strided, uint64_t seed)
{
    vkl_ctx *c = vkl_test_ctx(profile);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, seed);
    float *x = opc_random(&r, VKL_F32, (size_t)(rows * V), -4, 4);
    int32_t *t = targets(&r, rows, V);
    /* stored transposed [V, rows] when strided */
    float *xs = malloc(sizeof(float) * (size_t)(rows * V));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t v = 0; v < V; v++) xs[strided ? v * rows + i : i * V + v] = x[i * V + v];
    vkl_tensor *tx = opc_upload_f32(c, VKL_F32, 2, strided ? (int64_t[]){V, rows} : (int64_t[]){rows, V}, xs);
    vkl_tensor *tt = opc_upload(c, VKL_I32, 1, &rows, t, VKL_I32);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *in = strided ? vkl_permute(g, tx, (const int[]){1, 0}) : tx;
    vkl_tensor *loss = vkl_cross_entropy(g, in, tt, -100);
    vkl_graph_keep(g, loss);
    float *dx = NULL;
    vkl_tensor *wrt[1] = {tx};
    gc_run_backward(c, g, loss, NULL, wrt, 1, &dx);
    float *got = opc_download(c, loss);
    double want = vkl_ref_cross_entropy(x, rows, V, t, -100, NULL);
    print_message("%s rows %lld V %lld%s: loss %.7f want %.7f\n", profile ? profile : "default", (long long)rows,
                  (long long)V, strided ? " strided" : "", got[0], want);
    assert_true(fabs(got[0] - want) <= 2e-6 * (1 + fabs(want)));
    float *rdx = malloc(sizeof(float) * (size_t)(rows * V));
    vkl_ref_cross_entropy_backward(x, rows, V, t, -100, 1.0, rdx);
    double *want_dx = malloc(sizeof(double) * (size_t)(rows * V));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t v = 0; v < V; v++) want_dx[strided ? v * rows + i : i * V + v] = rdx[i * V + v];
    gc_assert("d logits", dx, want_dx, rows * V, 1e-5);
    free(x);
    free(xs);
    free(t);
    free(dx);
    free(got);
    free(rdx);
    free(want_dx);
    vkl_graph_free(g);
    vkl_tensor_free(tx);
    vkl_tensor_free(tt);
    vkl_test_ctx_done(c);
}

static void test_device(void **state)
{
    (void)state;
    for (int p = 0; p < vkl_test_profile_count; p++) {
        run_case(vkl_test_profiles[p], 37, 1003, 0, 5 + (uint64_t)p);
        run_case(vkl_test_profiles[p], 9, 5, 1, 7 + (uint64_t)p);
    }
}

static void test_windows(void **state)
{
    (void)state;
    run_case("binding=64K", 45, 3001, 0, 21);
}

static void test_all_ignored(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t rows = 3, V = 4;
    float x[12] = {0};
    int32_t t[3] = {-100, -100, 9};
    vkl_tensor *tx = opc_upload_f32(c, VKL_F32, 2, (int64_t[]){rows, V}, x);
    vkl_tensor *tt = opc_upload(c, VKL_I32, 1, &rows, t, VKL_I32);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *loss = vkl_cross_entropy(g, tx, tt, -100);
    vkl_graph_keep(g, loss);
    opc_run(g);
    float *got = opc_download(c, loss);
    assert_true(isnan(got[0]));
    /* shape errors name the tensors */
    vkl_graph *g2 = vkl_graph_new(c);
    assert_null(vkl_cross_entropy(g2, tx, tx, -100));
    print_message("error: %s\n", vkl_graph_error(g2));
    assert_non_null(strstr(vkl_graph_error(g2), "targets"));
    free(got);
    vkl_graph_free(g);
    vkl_graph_free(g2);
    vkl_tensor_free(tx);
    vkl_tensor_free(tt);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reference_fd),
        cmocka_unit_test(test_device),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_all_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
