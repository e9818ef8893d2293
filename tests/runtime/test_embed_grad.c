/* Backward of the embedding lookup (deterministic scatter-add into a
 * trainable table): CPU backward (runtime/ref/ref_embed.c) against central
 * finite differences, device gradients against it in every device profile
 * and under a 64 KiB binding limit, repeated and out-of-range ids, bit-equal
 * repeated runs; the timestep embedding has no gradient rule (RoPE's
 * backward: test_rope_grad.c). */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

typedef struct { int64_t D, V, n; double *x, *r; const int32_t *ids; } fd_case;

static double embed_loss(void *u)
{
    fd_case *k = u;
    double s = 0;
    for (int64_t i = 0; i < k->n; i++)
        if (k->ids[i] >= 0 && k->ids[i] < k->V)
            for (int64_t d = 0; d < k->D; d++) s += k->x[k->ids[i] * k->D + d] * k->r[i * k->D + d];
    return s;
}

static void reference_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 601);
    int32_t ids[9] = {3, 0, 3, -1, 6, 7, 3, 0, 2};
    fd_case k = {5, 7, 9, 0, 0, ids};
    float *xf = opc_random(&rng, VKL_F32, 35, -2, 2), *rf = opc_random(&rng, VKL_F32, 45, -1, 1);
    k.x = gc_f64(xf, 35);
    k.r = gc_f64(rf, 45);
    double dt[35];
    vkl_ref_embedding_backward(ids, 9, 7, 5, k.r, dt);
    gc_fd_check("embedding dtable", embed_loss, &k, k.x, 35, dt, 1e-6, 1e-7);
    free(xf); free(rf); free(k.x); free(k.r);
}

static void check_embedding(vkl_ctx *c, vkl_test_rng *r, int64_t V, int64_t D, int64_t n)
{
    float *table = opc_random(r, VKL_F32, (size_t)(V * D), -1, 1), *rr = opc_random(r, VKL_F32, (size_t)(n * D), -1, 1);
    int32_t *ids = malloc(sizeof(int32_t) * n);
    for (int64_t i = 0; i < n; i++) {
        /* repeats of a few hot rows, some out-of-range ids */
        int k = vkl_test_rng_int(r, 0, 9);
        ids[i] = k == 0 ? -1 : k == 1 ? (int32_t)V : k < 5 ? (int32_t)(k % 3) : vkl_test_rng_int(r, 0, (int)V - 1);
    }
    int64_t ts[2] = {V, D}, is[2] = {2, n / 2}, ys[3] = {2, n / 2, D};
    vkl_tensor *T = opc_upload_f32(c, VKL_F32, 2, ts, table), *I = opc_upload(c, VKL_I32, 2, is, ids, VKL_I32);
    vkl_tensor *Rt = opc_upload_f32(c, VKL_F32, 3, ys, rr);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_embedding(g, T, I);
    float *got[1];
    vkl_tensor *gt = NULL;
    gc_run_backward_t(c, g, y, Rt, &T, 1, got, &gt);
    double *rd = gc_f64(rr, n * D), *want = malloc(sizeof(double) * V * D);
    vkl_ref_embedding_backward(ids, n, V, D, rd, want);
    char what[256];
    snprintf(what, sizeof what, "embedding dtable [%lld,%lld] %lld ids (%s)", (long long)V, (long long)D,
             (long long)n, vkl_ctx_caps(c)->profile);
    gc_assert(what, got[0], want, V * D, 1e-6);
    /* a rerun gives the same bits */
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_run(g, &e), 0);
    float *again = opc_download(c, gt);
    assert_memory_equal(again, got[0], sizeof(float) * V * D);
    free(again);
    free(table); free(rr); free(ids); free(got[0]); free(rd); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(T); vkl_tensor_free(I); vkl_tensor_free(Rt);
}

static void embed_grads_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 602);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 4; trial++) {
            check_embedding(c, &r, vkl_test_rng_int(&r, 1, 97), vkl_test_rng_int(&r, 1, 67), 2 * vkl_test_rng_int(&r, 1, 60));
        }
        vkl_test_ctx_done(c);
    }
}

static void embed_grads_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 603);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    check_embedding(c, &r, 701, 37, 122);
    vkl_test_ctx_done(c);
}

/* The timestep embedding has no backward rule: asking for a gradient through
 * it is a clear error naming the op. */
static void timestep_embedding_has_no_gradient(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    float t[2] = {1, 500};
    int64_t n = 2;
    vkl_tensor *Tt = opc_upload_f32(c, VKL_F32, 1, &n, t);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_timestep_embedding(g, Tt, 8, 1, 0, 10000), *gr = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, y, NULL, &Tt, 1, &gr, &e), -1);
    assert_non_null(strstr(e.msg, "timestep_embedding"));
    vkl_graph_free(g);
    vkl_tensor_free(Tt);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_matches_finite_differences),
        cmocka_unit_test(embed_grads_random),
        cmocka_unit_test(embed_grads_small_binding),
        cmocka_unit_test(timestep_embedding_has_no_gradient),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
