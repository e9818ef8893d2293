/* Backward of GEGLU and SwiGLU: the double-precision CPU backward
 * (runtime/ref/ref_glu.c) against central finite differences, and the device
 * gradients (loss = sum(op(x) * r)) against it on random odd shapes,
 * f32/f16/bf16 inputs, transposed (permuted) operands, one operand frozen, in
 * every device profile and under a 64 KiB binding limit. */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

typedef struct { int swiglu; int64_t rows, F; double *x, *up, *r, *y; } fd_case;

static double fd_loss(void *u)
{
    fd_case *k = u;
    int64_t n = k->rows * k->F;
    if (k->swiglu) vkl_ref_swiglu_f64(k->x, k->up, n, k->y);
    else vkl_ref_geglu_f64(k->x, k->rows, k->F, k->y);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += k->y[i] * k->r[i];
    return s;
}

static void reference_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 501);
    for (int trial = 0; trial < 6; trial++) {
        fd_case k = {trial & 1, vkl_test_rng_int(&rng, 1, 4), vkl_test_rng_int(&rng, 1, 9), 0, 0, 0, 0};
        int64_t n = k.rows * k.F, nx = k.swiglu ? n : 2 * n;
        float *xf = opc_random(&rng, VKL_F32, (size_t)nx, -4, 4), *uf = opc_random(&rng, VKL_F32, (size_t)n, -2, 2);
        float *rf = opc_random(&rng, VKL_F32, (size_t)n, -1, 1);
        k.x = gc_f64(xf, nx);
        k.up = gc_f64(uf, n);
        k.r = gc_f64(rf, n);
        k.y = malloc(sizeof(double) * (size_t)n);
        double *dx = malloc(sizeof(double) * (size_t)nx), *du = malloc(sizeof(double) * (size_t)n);
        if (k.swiglu) vkl_ref_swiglu_backward(k.x, k.up, n, k.r, dx, du);
        else vkl_ref_geglu_backward(k.x, k.rows, k.F, k.r, dx);
        gc_fd_check(k.swiglu ? "swiglu d gate" : "geglu dx", fd_loss, &k, k.x, nx, dx, 1e-6, 1e-7);
        if (k.swiglu) gc_fd_check("swiglu d up", fd_loss, &k, k.up, n, du, 1e-6, 1e-7);
        free(xf); free(uf); free(rf); free(k.x); free(k.up); free(k.r); free(k.y); free(dx); free(du);
    }
}

/* x logically [B, R, 2F]; stored [B, 2F, R] and permuted when transposed. */
static void check_geglu(vkl_ctx *c, vkl_test_rng *r, int64_t B, int64_t R, int64_t F, vkl_dtype dt, int transposed)
{
    int64_t n = B * R * 2 * F, ny = B * R * F;
    float *x = opc_random(r, dt, (size_t)n, -4, 4), *rr = opc_random(r, VKL_F32, (size_t)ny, -1, 1);
    float *stored = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < R; i++)
            for (int64_t k = 0; k < 2 * F; k++)
                stored[transposed ? (b * 2 * F + k) * R + i : (b * R + i) * 2 * F + k] = x[(b * R + i) * 2 * F + k];
    int64_t shape[3] = {B, R, 2 * F}, tshape[3] = {B, 2 * F, R}, yshape[3] = {B, R, F};
    vkl_tensor *X = opc_upload_f32(c, dt, 3, transposed ? tshape : shape, stored);
    vkl_tensor *Rt = opc_upload_f32(c, VKL_F32, 3, yshape, rr);
    vkl_graph *g = vkl_graph_new(c);
    int perm[3] = {0, 2, 1};
    vkl_tensor *y = vkl_geglu(g, transposed ? vkl_permute(g, X, perm) : X);
    float *got[1];
    gc_run_backward(c, g, y, Rt, &X, 1, got);
    double *xd = gc_f64(x, n), *rd = gc_f64(rr, ny), *dx = malloc(sizeof(double) * n);
    vkl_ref_geglu_backward(xd, B * R, F, rd, dx);
    float *dxl = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < R; i++)
            for (int64_t k = 0; k < 2 * F; k++)
                dxl[(b * R + i) * 2 * F + k] = got[0][transposed ? (b * 2 * F + k) * R + i : (b * R + i) * 2 * F + k];
    char what[128];
    snprintf(what, sizeof what, "geglu dx [%lld,%lld,%lld] %s transposed %d (%s)", (long long)B, (long long)R,
             (long long)(2 * F), vkl_dtype_name(dt), transposed, vkl_ctx_caps(c)->profile);
    gc_assert(what, dxl, dx, n, 2e-6);
    free(x); free(rr); free(stored); free(got[0]); free(xd); free(rd); free(dx); free(dxl);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(Rt);
}

/* gate logically [R, D], stored transposed when transposed; up contiguous;
 * need: bit 0 gate, bit 1 up. */
static void check_swiglu(vkl_ctx *c, vkl_test_rng *r, int64_t R, int64_t D, vkl_dtype gdt, vkl_dtype udt,
                         int transposed, int need)
{
    int64_t n = R * D;
    float *gate = opc_random(r, gdt, (size_t)n, -6, 6), *up = opc_random(r, udt, (size_t)n, -2, 2);
    float *rr = opc_random(r, VKL_F32, (size_t)n, -1, 1), *stored = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < R; i++)
        for (int64_t d = 0; d < D; d++) stored[transposed ? d * R + i : i * D + d] = gate[i * D + d];
    int64_t shape[2] = {R, D}, tshape[2] = {D, R};
    vkl_tensor *G = opc_upload_f32(c, gdt, 2, transposed ? tshape : shape, stored);
    vkl_tensor *U = opc_upload_f32(c, udt, 2, shape, up), *Rt = opc_upload_f32(c, VKL_F32, 2, shape, rr);
    vkl_graph *g = vkl_graph_new(c);
    int perm[2] = {1, 0};
    vkl_tensor *y = vkl_swiglu(g, transposed ? vkl_permute(g, G, perm) : G, U);
    vkl_tensor *wrt[2] = {need & 1 ? G : NULL, need & 2 ? U : NULL};
    float *got[2];
    gc_run_backward(c, g, y, Rt, wrt, 2, got);
    double *gd = gc_f64(gate, n), *ud = gc_f64(up, n), *rd = gc_f64(rr, n);
    double *dg = malloc(sizeof(double) * n), *du = malloc(sizeof(double) * n);
    vkl_ref_swiglu_backward(gd, ud, n, rd, dg, du);
    char what[128];
    snprintf(what, sizeof what, "[%lld,%lld] %s x %s transposed %d (%s)", (long long)R, (long long)D,
             vkl_dtype_name(gdt), vkl_dtype_name(udt), transposed, vkl_ctx_caps(c)->profile);
    char w2[160];
    if (got[0]) {
        float *l = malloc(sizeof(float) * n);
        for (int64_t i = 0; i < R; i++)
            for (int64_t d = 0; d < D; d++) l[i * D + d] = got[0][transposed ? d * R + i : i * D + d];
        snprintf(w2, sizeof w2, "swiglu d gate %s", what);
        gc_assert(w2, l, dg, n, 2e-6);
        free(l);
    }
    if (got[1]) {
        snprintf(w2, sizeof w2, "swiglu d up %s", what);
        gc_assert(w2, got[1], du, n, 2e-6);
    }
    assert_true((got[0] != NULL) == ((need & 1) != 0) && (got[1] != NULL) == ((need & 2) != 0));
    free(gate); free(up); free(rr); free(stored); free(got[0]); free(got[1]);
    free(gd); free(ud); free(rd); free(dg); free(du);
    vkl_graph_free(g);
    vkl_tensor_free(G); vkl_tensor_free(U); vkl_tensor_free(Rt);
}

static void glu_grad_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 502);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 6; trial++) {
            check_geglu(c, &r, vkl_test_rng_int(&r, 1, 3), vkl_test_rng_int(&r, 1, 37), vkl_test_rng_int(&r, 1, 301),
                        (vkl_dtype)(trial % 3), (trial / 3) & 1);
            check_swiglu(c, &r, vkl_test_rng_int(&r, 1, 37), vkl_test_rng_int(&r, 1, 301), (vkl_dtype)(trial % 3),
                         (vkl_dtype)((trial / 3) % 3), trial & 1, 1 + trial % 3);
        }
        vkl_test_ctx_done(c);
    }
}

static void glu_grad_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 503);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    check_geglu(c, &r, 2, 41, 299, VKL_F32, 0);
    check_geglu(c, &r, 1, 9, 77, VKL_BF16, 1);
    check_swiglu(c, &r, 151, 301, VKL_F32, VKL_F16, 0, 3);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_matches_finite_differences),
        cmocka_unit_test(glu_grad_random),
        cmocka_unit_test(glu_grad_small_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
