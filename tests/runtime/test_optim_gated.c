/* Rank-gated AdamW (DyLoRA's optimiser rule) against the per-row update
 * written out here: rows whose count is 0 keep parameter and moments; the
 * others take AdamW with their own step count in the bias corrections; the
 * gradient of frozen rows is left out of the global norm that clipping uses.
 * A down-like [R, in] and an up-like [out, R] parameter beside an ungated
 * one; the second case with 64 KiB bindings, so the update runs in windows. */
#include "vkl_test.h"
#include "optim.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NP 3

typedef struct host_p {
    int64_t n, rows, inner, R; /* rank row of element i: (i / inner) % R; R 0: ungated */
    float *p, *m, *v, *g;
} host_p;

static float rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(*s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static void run_case(const char *profile, int64_t in)
{
    vkl_ctx *c = vkl_test_ctx(profile);
    vkl_err e = {{0}};
    const int R = 4, out = 3;
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f, maxn = 0.1f;
    int64_t shapes[NP][2] = {{R, in}, {out, R}, {5, 1}};
    host_p h[NP] = {{R * in, R, in, R, 0, 0, 0, 0}, {out * R, out, 1, R, 0, 0, 0, 0}, {5, 5, 1, 0, 0, 0, 0, 0}};
    vkl_tensor *P[NP], *G[NP];
    uint64_t seed = 7;
    for (int i = 0; i < NP; i++) {
        h[i].p = malloc(sizeof(float) * (size_t)h[i].n);
        h[i].m = calloc((size_t)h[i].n, sizeof(float));
        h[i].v = calloc((size_t)h[i].n, sizeof(float));
        h[i].g = malloc(sizeof(float) * (size_t)h[i].n);
        for (int64_t k = 0; k < h[i].n; k++) h[i].p[k] = rnd(&seed);
        P[i] = vkl_tensor_new(c, VKL_F32, 2, shapes[i], &e);
        G[i] = vkl_tensor_new(c, VKL_F32, 2, shapes[i], &e);
        assert_non_null(G[i]);
        assert_int_equal(vkl_tensor_upload(c, P[i], h[i].p, VKL_F32, &e), 0);
    }
    vkl_tensor *count = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){R}, &e);
    vkl_tensor *mask = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){R}, &e);
    vkl_adamw_opts o;
    vkl_adamw_opts_default(&o);
    o.lr = lr;
    o.weight_decay = wd;
    o.max_grad_norm = maxn;
    vkl_adamw *a = vkl_adamw_new(c, P, NP, NULL, &o, &e);
    assert_non_null(a);
    assert_int_equal(vkl_adamw_set_rank_gate(a, 0, count, mask, 0, &e), 0);
    assert_int_equal(vkl_adamw_set_rank_gate(a, 1, count, mask, 1, &e), 0);
    /* a gate of the wrong length is refused */
    assert_int_not_equal(vkl_adamw_set_rank_gate(a, 2, count, mask, 0, &e), 0);
    vkl_graph *g = vkl_graph_new(c);
    assert_int_equal(vkl_adamw_append(a, g, G, &e), 0);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    /* blocks of unit 2: which block each step trains */
    const int block[5] = {1, 0, 1, 1, 0};
    int steps[2] = {0, 0};
    double worst = 0;
    for (int t = 1; t <= 5; t++) {
        int k = block[t - 1], cnt = ++steps[k];
        float cnt_h[4], mask_h[4];
        for (int r = 0; r < R; r++) {
            int on = r / 2 == k;
            cnt_h[r] = on ? (float)cnt : 0.0f;
            mask_h[r] = on ? 1.0f : 0.0f;
        }
        assert_int_equal(vkl_tensor_upload(c, count, cnt_h, VKL_F32, &e), 0);
        assert_int_equal(vkl_tensor_upload(c, mask, mask_h, VKL_F32, &e), 0);
        double sq = 0;
        for (int i = 0; i < NP; i++) {
            for (int64_t j = 0; j < h[i].n; j++) {
                h[i].g[j] = rnd(&seed) * (i == 2 ? 0.05f : 0.2f);
                int row = h[i].R ? (int)((j / h[i].inner) % h[i].R) : -1;
                if (row < 0 || mask_h[row] != 0) sq += (double)h[i].g[j] * h[i].g[j];
            }
            assert_int_equal(vkl_tensor_upload(c, G[i], h[i].g, VKL_F32, &e), 0);
        }
        assert_int_equal(vkl_adamw_prepare(a, t, lr, &e), 0);
        assert_int_equal(vkl_graph_run(g, &e), 0);
        double norm = sqrt(sq), clip = fmin(1.0, maxn / (norm + 1e-6));
        float got_norm;
        int skipped;
        assert_int_equal(vkl_adamw_result(a, &got_norm, &skipped, &e), 0);
        assert_false(skipped);
        assert_true(fabs(got_norm - norm) <= 1e-5 * norm);
        assert_true(clip < 1.0); /* the case exercises clipping */
        for (int i = 0; i < NP; i++) {
            for (int64_t j = 0; j < h[i].n; j++) {
                int row = h[i].R ? (int)((j / h[i].inner) % h[i].R) : -1;
                double c_row = row < 0 ? t : cnt_h[row];
                if (c_row == 0) continue; /* frozen: unchanged */
                double gj = h[i].g[j] * clip;
                double pv = h[i].p[j] * (1.0 - lr * wd);
                h[i].m[j] = (float)(b1 * h[i].m[j] + (1 - b1) * gj);
                h[i].v[j] = (float)(b2 * h[i].v[j] + (1 - b2) * gj * gj);
                double mh = h[i].m[j] / (1 - pow(b1, c_row)), vh = h[i].v[j] / (1 - pow(b2, c_row));
                h[i].p[j] = (float)(pv - lr * mh / (sqrt(vh) + eps));
            }
            float *got = malloc(sizeof(float) * (size_t)h[i].n);
            assert_int_equal(vkl_tensor_download(c, P[i], got, VKL_F32, &e), 0);
            for (int64_t j = 0; j < h[i].n; j++) worst = fmax(worst, fabs((double)got[j] - h[i].p[j]));
            free(got);
        }
    }
    print_message("gated AdamW (%s, in %lld): max |diff| %.3g over 5 steps\n", profile ? profile : "default",
                  (long long)in, worst);
    assert_true(worst <= 2e-6);
    vkl_graph_free(g);
    vkl_adamw_free(a);
    vkl_tensor_free(count);
    vkl_tensor_free(mask);
    for (int i = 0; i < NP; i++) {
        vkl_tensor_free(P[i]);
        vkl_tensor_free(G[i]);
        free(h[i].p);
        free(h[i].m);
        free(h[i].v);
        free(h[i].g);
    }
    vkl_test_ctx_done(c);
}

static void gated_rows_follow_their_own_counts(void **state)
{
    (void)state;
    run_case(NULL, 7);
}

static void gated_update_in_windows(void **state)
{
    (void)state;
    run_case("binding=64K", 10000); /* 40000 floats: three 64 KiB windows */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(gated_rows_follow_their_own_counts),
        cmocka_unit_test(gated_update_in_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
