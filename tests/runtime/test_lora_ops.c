/* LoRA ops: the fused linear layer against the CPU reference and against
 * the same adapters merged into the weight, multipliers changed by
 * re-uploading rank_scale without re-planning, and merge followed by unmerge
 * giving the weight back (f32 bit for bit, f16 within one ulp). */
#include "vkl_test.h"
#include "ops.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static vkl_tensor *upload(vkl_ctx *c, vkl_dtype dt, int nd, const int64_t *shape, const float *data)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, shape, &e);
    if (!t || vkl_tensor_upload(c, t, data, VKL_F32, &e)) {
        print_error("upload: %s\n", e.msg);
        fail();
    }
    return t;
}

static float *download(vkl_ctx *c, const vkl_tensor *t)
{
    vkl_err e = {{0}};
    float *out = malloc(sizeof(float) * (size_t)vkl_tensor_nelem(t));
    if (vkl_tensor_download(c, t, out, VKL_F32, &e)) {
        print_error("download: %s\n", e.msg);
        fail();
    }
    return out;
}

static void plan_run(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("graph: %s\n", e.msg);
        fail();
    }
}

static void run(vkl_graph *g)
{
    vkl_err e = {{0}};
    if (vkl_graph_run(g, &e)) {
        print_error("run: %s\n", e.msg);
        fail();
    }
}

static void round_to(vkl_dtype dt, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (dt == VKL_F16) x[i] = vkl_f16_to_f32(vkl_f32_to_f16(x[i]));
}

/* A layer with nad adapters of the given ranks, concatenated along the rank. */
typedef struct {
    int64_t T, in, out, R, nad, rank[3];
    float mult[3];
    float *x, *w, *bias, *a, *b, *scale;
} layer;

static void layer_make(layer *L, vkl_test_rng *r, int64_t T, int64_t in, int64_t out, int nad, const int *ranks,
                       vkl_dtype wdt)
{
    memset(L, 0, sizeof *L);
    L->T = T, L->in = in, L->out = out, L->nad = nad;
    for (int i = 0; i < nad; i++) L->rank[i] = ranks[i], L->R += ranks[i], L->mult[i] = 0.7f + 0.4f * i;
    L->x = malloc(sizeof(float) * T * in);
    L->w = malloc(sizeof(float) * out * in);
    L->bias = malloc(sizeof(float) * out);
    L->a = malloc(sizeof(float) * L->R * in);
    L->b = malloc(sizeof(float) * out * L->R);
    L->scale = malloc(sizeof(float) * L->R);
    vkl_test_fill(r, L->x, (size_t)(T * in), -1, 1);
    vkl_test_fill(r, L->w, (size_t)(out * in), -0.5f, 0.5f);
    vkl_test_fill(r, L->bias, (size_t)out, -1, 1);
    vkl_test_fill(r, L->a, (size_t)(L->R * in), -0.3f, 0.3f);
    vkl_test_fill(r, L->b, (size_t)(out * L->R), -0.3f, 0.3f);
    round_to(wdt, L->w, (size_t)(out * in));
    for (int i = 0, row = 0; i < nad; i++) /* multiplier * alpha / rank, alpha = 2 * rank + 1 */
        for (int k = 0; k < ranks[i]; k++) L->scale[row++] = L->mult[i] * (2.0f * ranks[i] + 1) / ranks[i];
}

static void layer_free(layer *L)
{
    free(L->x); free(L->w); free(L->bias); free(L->a); free(L->b); free(L->scale);
}

/* Rows of adapter i: down [rank_i, in] from a_cat, up [out, rank_i] from b_cat. */
static void adapter_slices(const layer *L, int i, float *down, float *up, float *s)
{
    int64_t r0 = 0;
    for (int k = 0; k < i; k++) r0 += L->rank[k];
    memcpy(down, L->a + r0 * L->in, sizeof(float) * L->rank[i] * L->in);
    for (int64_t o = 0; o < L->out; o++)
        for (int64_t k = 0; k < L->rank[i]; k++) up[o * L->rank[i] + k] = L->b[o * L->R + r0 + k];
    *s = L->scale[r0];
}

static void fused_matches_reference_and_merged(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 21);
    static const int one[] = {4}, three[] = {2, 5, 8};
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 4; trial++) {
            int nad = trial < 2 ? 1 : 3;
            vkl_dtype wdt = trial % 2 ? VKL_F16 : VKL_F32;
            layer L;
            int64_t T = trial % 2 ? 50 : 74, in = trial % 2 ? 23 : 44, out = 36 + trial;
            layer_make(&L, &r, T, in, out, nad, nad == 1 ? one : three, wdt);
            int64_t xs[3] = {2, T / 2, in}, ws[2] = {out, in}, as[2] = {L.R, in}, bs[2] = {out, L.R}, os[1] = {out},
                    rs[1] = {L.R};
            vkl_tensor *X = upload(c, VKL_F32, 3, xs, L.x), *W = upload(c, wdt, 2, ws, L.w),
                       *BI = upload(c, VKL_F32, 1, os, L.bias), *A = upload(c, wdt, 2, as, L.a),
                       *B = upload(c, wdt, 2, bs, L.b), *S = upload(c, VKL_F32, 1, rs, L.scale);
            round_to(wdt, L.a, (size_t)(L.R * in));
            round_to(wdt, L.b, (size_t)(out * L.R));
            vkl_graph *g = vkl_graph_new(c);
            vkl_tensor *y = vkl_linear_lora(g, X, W, BI, A, B, S);
            vkl_graph_keep(g, y);
            plan_run(g);
            float *got = download(c, y), *want = malloc(sizeof(float) * T * out);
            vkl_ref_linear_lora(L.x, T, in, L.w, out, L.bias, L.a, L.b, L.scale, L.R, want);
            char what[96];
            snprintf(what, sizeof what, "linear_lora %d adapters %s weights", nad, vkl_dtype_name(wdt));
            vkl_test_assert_close(what, got, want, (size_t)(T * out), 1e-4f, 1e-5f);

            /* the same adapters merged into a copy of the weight, then a plain linear */
            vkl_tensor *WM = upload(c, wdt, 2, ws, L.w);
            for (int i = 0; i < nad; i++) {
                float *down = malloc(sizeof(float) * L.rank[i] * in), *up = malloc(sizeof(float) * out * L.rank[i]), s;
                adapter_slices(&L, i, down, up, &s);
                int64_t ds[2] = {L.rank[i], in}, us[2] = {out, L.rank[i]};
                vkl_tensor *D = upload(c, wdt, 2, ds, down), *U = upload(c, wdt, 2, us, up);
                vkl_err e = {{0}};
                assert_int_equal(vkl_lora_merge(c, WM, D, U, s, &e), 0);
                vkl_tensor_free(D);
                vkl_tensor_free(U);
                free(down);
                free(up);
            }
            vkl_graph *gm = vkl_graph_new(c);
            vkl_tensor *ym = vkl_linear(gm, X, WM, BI);
            vkl_graph_keep(gm, ym);
            plan_run(gm);
            float *merged = download(c, ym);
            /* f16 weights: the merged weight is itself rounded to f16 (2^-11 relative) */
            snprintf(what, sizeof what, "fused vs merged, %d adapters %s weights", nad, vkl_dtype_name(wdt));
            vkl_test_assert_close(what, got, merged, (size_t)(T * out), wdt == VKL_F16 ? 1e-2f : 1e-4f,
                                  wdt == VKL_F16 ? 2e-3f : 1e-5f);
            free(got); free(want); free(merged);
            vkl_graph_free(g);
            vkl_graph_free(gm);
            vkl_tensor_free(X); vkl_tensor_free(W); vkl_tensor_free(BI); vkl_tensor_free(A);
            vkl_tensor_free(B); vkl_tensor_free(S); vkl_tensor_free(WM);
            layer_free(&L);
        }
        vkl_test_ctx_done(c);
    }
}

static void rank_scale_reupload_without_replan(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 22);
    static const int three[] = {3, 1, 6};
    vkl_ctx *c = vkl_test_ctx(NULL);
    layer L;
    layer_make(&L, &r, 40, 32, 24, 3, three, VKL_F32);
    int64_t xs[2] = {40, 32}, ws[2] = {24, 32}, as[2] = {L.R, 32}, bs[2] = {24, L.R}, rs[1] = {L.R};
    vkl_tensor *X = upload(c, VKL_F32, 2, xs, L.x), *W = upload(c, VKL_F32, 2, ws, L.w),
               *A = upload(c, VKL_F32, 2, as, L.a), *B = upload(c, VKL_F32, 2, bs, L.b),
               *S = upload(c, VKL_F32, 1, rs, L.scale);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_linear_lora(g, X, W, NULL, A, B, S);
    vkl_graph_keep(g, y);
    plan_run(g);
    float *first = download(c, y), *want = malloc(sizeof(float) * 40 * 24);
    vkl_ref_linear_lora(L.x, 40, 32, L.w, 24, NULL, L.a, L.b, L.scale, L.R, want);
    vkl_test_assert_close("linear_lora before", first, want, 40 * 24, 1e-4f, 1e-5f);
    /* adapter 0 off, adapter 2 doubled */
    for (int k = 0; k < 3; k++) L.scale[k] = 0;
    for (int k = 4; k < 10; k++) L.scale[k] *= 2;
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_upload(c, S, L.scale, VKL_F32, &e), 0);
    run(g);
    float *second = download(c, y);
    vkl_ref_linear_lora(L.x, 40, 32, L.w, 24, NULL, L.a, L.b, L.scale, L.R, want);
    vkl_test_assert_close("linear_lora after re-upload", second, want, 40 * 24, 1e-4f, 1e-5f);
    assert_true(vkl_test_max_abs_diff(first, second, 40 * 24) > 1e-2f);
    free(first); free(second); free(want);
    vkl_graph_free(g);
    vkl_tensor_free(X); vkl_tensor_free(W); vkl_tensor_free(A); vkl_tensor_free(B); vkl_tensor_free(S);
    layer_free(&L);
    vkl_test_ctx_done(c);
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* w in +-[lo, hi); shape linear [out, in] (kh = 0) or conv [out, in, kh, kh] */
static void merge_unmerge_case(vkl_ctx *c, vkl_test_rng *r, vkl_dtype wdt, int64_t out, int64_t in, int64_t kh,
                               int64_t rank, float lo, float hi, float dscale, int whole_exact)
{
    int64_t fan = in * (kh ? kh * kh : 1), n = out * fan;
    float *w = malloc(sizeof(float) * n), *down = malloc(sizeof(float) * rank * fan), *up = malloc(sizeof(float) * out * rank);
    for (int64_t i = 0; i < n; i++) {
        float m = vkl_test_rng_uniform(r, lo, hi);
        w[i] = vkl_test_rng_int(r, 0, 1) ? m : -m;
    }
    vkl_test_fill(r, down, (size_t)(rank * fan), -1, 1);
    vkl_test_fill(r, up, (size_t)(out * rank), -1, 1);
    round_to(wdt, w, (size_t)n);
    int64_t ws4[4] = {out, in, kh, kh}, ds4[4] = {rank, in, kh, kh}, us4[4] = {out, rank, 1, 1};
    int64_t ws2[2] = {out, in}, ds2[2] = {rank, in}, us2[2] = {out, rank};
    int nd = kh ? 4 : 2;
    vkl_tensor *W = upload(c, wdt, nd, kh ? ws4 : ws2, w), *D = upload(c, VKL_F32, nd, kh ? ds4 : ds2, down),
               *U = upload(c, VKL_F32, nd, kh ? us4 : us2, up);
    float scale = dscale / (float)rank;
    vkl_err e = {{0}};
    assert_int_equal(vkl_lora_merge(c, W, D, U, scale, &e), 0);
    float *merged = download(c, W), *delta = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
    vkl_ref_lora_delta(up, down, out, rank, fan, scale, delta);
    for (int64_t i = 0; i < n; i++) want[i] = w[i] + delta[i];
    vkl_test_assert_close("merged weight", merged, want, (size_t)n, wdt == VKL_F16 ? 2e-3f : 1e-6f,
                          wdt == VKL_F16 ? 1e-3f : 1e-6f);
    assert_int_equal(vkl_lora_unmerge(c, W, D, U, scale, &e), 0);
    char what[96];
    snprintf(what, sizeof what, "%s weight [%lld, %lld, %lld] merge+unmerge", vkl_dtype_name(wdt), (long long)out,
             (long long)in, (long long)kh);
    /* Exact wherever the merged value stayed in w's binade or went down; where
     * it moved up, the coarser grid there cannot hold w, and the result is
     * within one ulp of the merged value (one ulp of w when it moved one binade). */
    int mant = wdt == VKL_F32 ? 23 : 10;
    float *back = download(c, W);
    int64_t moved_up = 0;
    for (int64_t i = 0; i < n; i++) {
        int up_binade = ilogbf(merged[i]) > ilogbf(w[i]) || (bits(merged[i]) ^ bits(w[i])) >> 31;
        float tol = up_binade ? ldexpf(1.0f, ilogbf(merged[i]) - mant) : 0.0f;
        if (fabsf(back[i] - w[i]) > tol || (!up_binade && bits(back[i]) != bits(w[i]))) {
            print_error("%s: element %lld is %a, was %a (merged %a)\n", what, (long long)i, back[i], w[i], merged[i]);
            fail();
        }
        moved_up += up_binade;
    }
    if (whole_exact) {
        assert_int_equal(moved_up, 0);
        assert_memory_equal(back, w, sizeof(float) * n);
    }
    free(back);
    vkl_log(VKL_LOG_INFO, "%s: %lld of %lld elements moved up a binade", what, (long long)moved_up, (long long)n);
    free(w); free(down); free(up); free(merged); free(delta); free(want);
    vkl_tensor_free(W);
    vkl_tensor_free(D);
    vkl_tensor_free(U);
}

static void merge_unmerge_restores(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 23);
    const char *profiles[] = {"default", "portable", "binding=64K"};
    for (int p = 0; p < 3; p++) {
        vkl_ctx *c = vkl_test_ctx(profiles[p]);
        /* weights in one binade band, deltas that keep them there: exact everywhere */
        merge_unmerge_case(c, &r, VKL_F32, 67, 45, 0, 4, 0.55f, 0.9f, 0.05f, 1);
        merge_unmerge_case(c, &r, VKL_F16, 67, 45, 0, 4, 0.55f, 0.9f, 0.05f, 1);
        /* general weights, linear and 3x3 conv (larger than 64K under binding=64K) */
        merge_unmerge_case(c, &r, VKL_F32, 160, 150, 0, 8, 0.01f, 1.0f, 0.2f, 0);
        merge_unmerge_case(c, &r, VKL_F32, 33, 20, 3, 5, 0.01f, 1.0f, 0.2f, 0);
        merge_unmerge_case(c, &r, VKL_F16, 33, 21, 3, 5, 0.01f, 1.0f, 0.2f, 0);
        vkl_test_ctx_done(c);
    }
}

/* Full deltas through vkl_delta_merge: w + scale * delta, and back exactly
 * when every element stays in its binade. */
static void delta_case(vkl_ctx *c, vkl_test_rng *r, vkl_dtype wdt, int nd, const int64_t *shape, float scale)
{
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *w = malloc(sizeof(float) * n), *d = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) {
        float m = vkl_test_rng_uniform(r, 0.55f, 0.9f);
        w[i] = vkl_test_rng_int(r, 0, 1) ? m : -m;
    }
    vkl_test_fill(r, d, (size_t)n, -0.05f, 0.05f);
    round_to(wdt, w, (size_t)n);
    vkl_tensor *W = upload(c, wdt, nd, shape, w), *D = upload(c, VKL_F32, nd, shape, d);
    vkl_err e = {{0}};
    assert_int_equal(vkl_delta_merge(c, W, D, scale, &e), 0);
    for (int64_t i = 0; i < n; i++) want[i] = w[i] + scale * d[i];
    float *merged = download(c, W);
    char what[96];
    snprintf(what, sizeof what, "%s weight, %d-D, %lld elements, delta merge x%g", vkl_dtype_name(wdt), nd,
             (long long)n, scale);
    vkl_test_assert_close(what, merged, want, (size_t)n, wdt == VKL_F16 ? 1e-3f : 1e-7f, wdt == VKL_F16 ? 1e-3f : 1e-6f);
    assert_int_equal(vkl_delta_unmerge(c, W, D, scale, &e), 0);
    float *back = download(c, W);
    assert_memory_equal(back, w, sizeof(float) * n);
    free(w); free(d); free(want); free(merged); free(back);
    vkl_tensor_free(W);
    vkl_tensor_free(D);
}

static void delta_merge_unmerge(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 29);
    const char *profiles[] = {"default", "portable", "binding=64K"};
    int64_t lin[2] = {67, 45}, conv[4] = {33, 21, 3, 3}, big[2] = {160, 150};
    for (int p = 0; p < 3; p++) {
        vkl_ctx *c = vkl_test_ctx(profiles[p]);
        delta_case(c, &r, VKL_F32, 2, lin, 1.0f);
        delta_case(c, &r, VKL_F16, 2, lin, 0.7f);
        delta_case(c, &r, VKL_F32, 4, conv, 0.7f);
        delta_case(c, &r, VKL_F16, 4, conv, 1.0f);
        delta_case(c, &r, VKL_F32, 2, big, 1.3f); /* more than 64K: several windows under binding=64K */
        vkl_err e = {{0}};
        vkl_tensor *W = vkl_tensor_new(c, VKL_F32, 2, lin, &e), *D = vkl_tensor_new(c, VKL_F32, 4, conv, &e);
        assert_int_equal(vkl_delta_merge(c, W, D, 1.0f, &e), -1);
        assert_non_null(strstr(e.msg, "does not fit weight"));
        vkl_tensor_free(W);
        vkl_tensor_free(D);
        vkl_test_ctx_done(c);
    }
}

static void lora_bad_input(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int64_t ws[2] = {8, 6}, ds[2] = {2, 5}, us[2] = {8, 2}, xs[2] = {3, 6}, rs[1] = {3};
    vkl_tensor *W = vkl_tensor_new(c, VKL_F32, 2, ws, &e), *D = vkl_tensor_new(c, VKL_F32, 2, ds, &e),
               *U = vkl_tensor_new(c, VKL_F32, 2, us, &e), *X = vkl_tensor_new(c, VKL_F32, 2, xs, &e),
               *S = vkl_tensor_new(c, VKL_F32, 1, rs, &e), *WB = vkl_tensor_new(c, VKL_BF16, 2, ws, &e);
    assert_int_equal(vkl_lora_merge(c, W, D, U, 1.0f, &e), -1);
    assert_non_null(strstr(e.msg, "do not fit weight"));
    assert_int_equal(vkl_lora_unmerge(c, WB, D, U, 1.0f, &e), -1);
    assert_non_null(strstr(e.msg, "f32 or f16"));
    vkl_graph *g = vkl_graph_new(c);
    assert_null(vkl_linear_lora(g, X, W, NULL, D, U, S));
    assert_non_null(strstr(vkl_graph_error(g), "down weights"));
    vkl_graph_free(g);
    vkl_tensor_free(W); vkl_tensor_free(D); vkl_tensor_free(U); vkl_tensor_free(X); vkl_tensor_free(S);
    vkl_tensor_free(WB);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fused_matches_reference_and_merged),
        cmocka_unit_test(rank_scale_reupload_without_replan),
        cmocka_unit_test(merge_unmerge_restores),
        cmocka_unit_test(delta_merge_unmerge),
        cmocka_unit_test(lora_bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
