/* Backward of RoPE (rotation by the negative angle): the CPU backward
 * (runtime/ref/ref_rope.c) against central finite differences, device
 * gradients against it in every device profile and under a 64 KiB binding
 * limit, permuted inputs. */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

typedef struct { int64_t rows, L, D, pos0; double theta, *x, *r, *y; } fd_case;

static double rope_loss(void *u)
{
    fd_case *k = u;
    vkl_ref_rope_f64(k->x, k->rows, k->L, k->D, k->pos0, k->theta, 0, k->y);
    double s = 0;
    for (int64_t i = 0; i < k->rows * k->L * k->D; i++) s += k->y[i] * k->r[i];
    return s;
}

static void reference_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 601);
    for (int trial = 0; trial < 4; trial++) {
        fd_case k = {vkl_test_rng_int(&rng, 1, 3), vkl_test_rng_int(&rng, 1, 7), 2 * vkl_test_rng_int(&rng, 1, 9),
                     vkl_test_rng_int(&rng, 0, 300), 10000.0, 0, 0, 0};
        int64_t n = k.rows * k.L * k.D;
        float *xf = opc_random(&rng, VKL_F32, (size_t)n, -2, 2), *rf = opc_random(&rng, VKL_F32, (size_t)n, -1, 1);
        k.x = gc_f64(xf, n);
        k.r = gc_f64(rf, n);
        k.y = malloc(sizeof(double) * n);
        double *dx = malloc(sizeof(double) * n);
        vkl_ref_rope_f64(k.r, k.rows, k.L, k.D, k.pos0, k.theta, 1, dx);
        gc_fd_check("rope dx", rope_loss, &k, k.x, n, dx, 1e-6, 1e-7);
        free(xf); free(rf); free(k.x); free(k.r); free(k.y); free(dx);
    }
}

/* x logically [B, H, L, D]; stored [B, L, H, D] and permuted when permuted. */
static void check_rope(vkl_ctx *c, vkl_test_rng *r, int64_t B, int64_t H, int64_t L, int64_t D, int pos0,
                       vkl_dtype dt, int permuted)
{
    int64_t n = B * H * L * D;
    float *x = opc_random(r, dt, (size_t)n, -2, 2), *rr = opc_random(r, VKL_F32, (size_t)n, -1, 1);
    float *stored = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t l = 0; l < L; l++)
                for (int64_t d = 0; d < D; d++)
                    stored[permuted ? ((b * L + l) * H + h) * D + d : ((b * H + h) * L + l) * D + d] =
                        x[((b * H + h) * L + l) * D + d];
    int64_t shape[4] = {B, H, L, D}, pshape[4] = {B, L, H, D};
    vkl_tensor *X = opc_upload_f32(c, dt, 4, permuted ? pshape : shape, stored);
    vkl_tensor *Rt = opc_upload_f32(c, VKL_F32, 4, shape, rr);
    vkl_graph *g = vkl_graph_new(c);
    int perm[4] = {0, 2, 1, 3};
    vkl_tensor *y = vkl_rope(g, permuted ? vkl_permute(g, X, perm) : X, pos0, 10000.0f);
    float *got[1];
    gc_run_backward(c, g, y, Rt, &X, 1, got);
    /* reference: dy rotated by the negative float32 angles transformers uses */
    int64_t P = pos0 + L;
    float *inv = malloc(sizeof(float) * (D / 2)), *ct = malloc(sizeof(float) * P * D), *st = malloc(sizeof(float) * P * D);
    vkl_ref_rope_inv_freq(D, 10000.0f, inv);
    vkl_ref_rope_make_tables(P, D, inv, ct, st);
    for (int64_t i = 0; i < P * D; i++) st[i] = -st[i];
    float *want = malloc(sizeof(float) * n), *dxl = malloc(sizeof(float) * n);
    vkl_ref_rope_tables(rr, B * H, L, D, pos0, ct, st, want);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t l = 0; l < L; l++)
                for (int64_t d = 0; d < D; d++)
                    dxl[((b * H + h) * L + l) * D + d] =
                        got[0][permuted ? ((b * L + l) * H + h) * D + d : ((b * H + h) * L + l) * D + d];
    double *wd = gc_f64(want, n);
    char what[256];
    snprintf(what, sizeof what, "rope dx [%lld,%lld,%lld,%lld] pos0 %d %s permuted %d (%s)", (long long)B,
             (long long)H, (long long)L, (long long)D, pos0, vkl_dtype_name(dt), permuted, vkl_ctx_caps(c)->profile);
    gc_assert(what, dxl, wd, n, 2e-6);
    free(x); free(rr); free(stored); free(got[0]); free(inv); free(ct); free(st); free(want); free(dxl); free(wd);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(Rt);
}

static void rope_grads_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 602);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 4; trial++)
            check_rope(c, &r, vkl_test_rng_int(&r, 1, 2), vkl_test_rng_int(&r, 1, 3), vkl_test_rng_int(&r, 1, 37),
                       2 * vkl_test_rng_int(&r, 1, 40), vkl_test_rng_int(&r, 0, 500), (vkl_dtype)(trial % 3), trial & 1);
        vkl_test_ctx_done(c);
    }
}

static void rope_grads_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 603);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    check_rope(c, &r, 2, 3, 53, 128, 7, VKL_F32, 0);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_matches_finite_differences),
        cmocka_unit_test(rope_grads_random),
        cmocka_unit_test(rope_grads_small_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
