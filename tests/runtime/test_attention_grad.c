/* Gradient of causal attention through attention's backward rule (the flash
 * kernels of runtime/ops/attention_flash_grad.c at these shapes): q, k and v
 * gradients of loss = sum(attention(q, k, v) * r) against central finite
 * differences of a double-precision causal attention, for self attention
 * (Lq = Lk), keys ahead of the queries (Lk > Lq, the KV-cache case) and
 * queries that see no key (Lk < Lq); also non-causal, and the CPU reference
 * mask on known values. */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

typedef struct {
    int64_t B, H, Lq, Lk, D;
    int causal;
    double *q, *k, *v, *r;
} attn;

static double attn_loss(void *u)
{
    attn *a = u;
    double scale = 1.0 / sqrt((double)a->D), total = 0;
    double s[64];
    for (int64_t bh = 0; bh < a->B * a->H; bh++)
        for (int64_t i = 0; i < a->Lq; i++) {
            const double *qi = a->q + (bh * a->Lq + i) * a->D;
            double mx = -1e300;
            int any = 0;
            for (int64_t j = 0; j < a->Lk; j++) {
                if (a->causal && j > i + a->Lk - a->Lq) continue;
                double d = 0;
                for (int64_t x = 0; x < a->D; x++) d += qi[x] * a->k[(bh * a->Lk + j) * a->D + x];
                s[j] = d * scale;
                if (s[j] > mx) mx = s[j];
                any = 1;
            }
            if (!any) continue; /* the forward gives zeros */
            double sum = 0;
            for (int64_t j = 0; j < a->Lk; j++)
                if (!(a->causal && j > i + a->Lk - a->Lq)) sum += exp(s[j] - mx);
            for (int64_t x = 0; x < a->D; x++) {
                double o = 0;
                for (int64_t j = 0; j < a->Lk; j++)
                    if (!(a->causal && j > i + a->Lk - a->Lq))
                        o += exp(s[j] - mx) / sum * a->v[(bh * a->Lk + j) * a->D + x];
                total += o * a->r[(bh * a->Lq + i) * a->D + x];
            }
        }
    return total;
}

static void check_case(vkl_ctx *c, int64_t Lq, int64_t Lk, int causal, uint64_t seed)
{
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, seed);
    attn a = {1, 2, Lq, Lk, 5, causal, NULL, NULL, NULL, NULL};
    int64_t nq = a.B * a.H * Lq * a.D, nk = a.B * a.H * Lk * a.D;
    float *q = opc_random(&rng, VKL_F32, (size_t)nq, -1.5f, 1.5f), *k = opc_random(&rng, VKL_F32, (size_t)nk, -1.5f, 1.5f);
    float *v = opc_random(&rng, VKL_F32, (size_t)nk, -1, 1), *r = opc_random(&rng, VKL_F32, (size_t)nq, -1, 1);
    a.q = gc_f64(q, nq);
    a.k = gc_f64(k, nk);
    a.v = gc_f64(v, nk);
    a.r = gc_f64(r, nq);
    int64_t qs[4] = {a.B, a.H, Lq, a.D}, ks[4] = {a.B, a.H, Lk, a.D};
    vkl_tensor *Q = opc_upload_f32(c, VKL_F32, 4, qs, q), *K = opc_upload_f32(c, VKL_F32, 4, ks, k);
    vkl_tensor *V = opc_upload_f32(c, VKL_F32, 4, ks, v), *R = opc_upload_f32(c, VKL_F32, 4, qs, r);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_attention(g, Q, K, V, 1.0f / sqrtf((float)a.D), causal);
    vkl_tensor *wrt[3] = {Q, K, V};
    float *grads[3];
    gc_run_backward(c, g, y, R, wrt, 3, grads);
    double *vals[3] = {a.q, a.k, a.v};
    int64_t cnt[3] = {nq, nk, nk};
    const char *names[3] = {"dq", "dk", "dv"};
    for (int i = 0; i < 3; i++) {
        double *an = gc_f64(grads[i], cnt[i]);
        char what[96];
        snprintf(what, sizeof what, "%s%s Lq=%lld Lk=%lld", names[i], causal ? " causal" : "", (long long)Lq,
                 (long long)Lk);
        gc_fd_check(what, attn_loss, &a, vals[i], cnt[i], an, 1e-4, 1e-3);
        free(an);
        free(grads[i]);
    }
    vkl_graph_free(g);
    vkl_tensor_free(Q);
    vkl_tensor_free(K);
    vkl_tensor_free(V);
    vkl_tensor_free(R);
    free(q); free(k); free(v); free(r);
    free(a.q); free(a.k); free(a.v); free(a.r);
}

static void causal_gradients(void **state)
{
    (void)state;
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        check_case(c, 7, 7, 1, 1);
        check_case(c, 4, 9, 1, 2);
        check_case(c, 9, 5, 1, 3);
        check_case(c, 6, 11, 0, 4);
        vkl_test_ctx_done(c);
    }
}

static void reference_mask(void **state)
{
    (void)state;
    float x[2 * 2 * 3], y[12];
    for (int i = 0; i < 12; i++) x[i] = (float)(i + 1);
    vkl_ref_causal_mask(x, 12, 2, 3, 0, -5, y); /* two [2, 3] blocks: row 0 sees column 0, row 1 columns 0-1 */
    const float want[12] = {1, -5, -5, 4, 5, -5, 7, -5, -5, 10, 11, -5};
    assert_memory_equal(y, want, sizeof want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(causal_gradients),
        cmocka_unit_test(reference_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
