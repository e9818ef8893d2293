/* AdamW with 8-bit blockwise state (state_bits 8) against the CPU reference
 * vkl_ref_adamw8: every step starts the reference from the device's state, so
 * each step's codes, absmax and parameters are checked on their own (odd
 * sizes, a tensor small enough to stay f32, clipping, rate multipliers, and
 * binding windows of 64 KiB); a NaN gradient skips without touching the
 * state; a toy quadratic converges about as well as with f32 moments; the
 * maps are bitsandbytes' (known entries). */
#include "vkl_test.h"
#include "optim.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NP = 3 };
static const int64_t sizes[NP] = {5000, 70007, 300};
/* rows of at most 10001 elements: the gradient norm sums rows within a binding */
static const int64_t rows_of[NP] = {5, 7, 3};

static int64_t blocks(int64_t n) { return (n + VKL_ADAMW8_BLOCK - 1) / VKL_ADAMW8_BLOCK; }

static void maps_are_bitsandbytes(void **state)
{
    (void)state;
    float s[256], u[256];
    vkl_adamw8_map(1, s);
    vkl_adamw8_map(0, u);
    for (int i = 1; i < 256; i++) {
        assert_true(s[i] > s[i - 1]);
        assert_true(u[i] > u[i - 1]);
    }
    /* signed: 127 negatives, 0, 127 positives, 1; unsigned: 0, 254 positives, 1 */
    assert_true(s[127] == 0.0f && s[255] == 1.0f && u[0] == 0.0f && u[255] == 1.0f);
    /* smallest magnitudes: 1e-6 * midpoint of linspace(0.1, 1, 2) = 0.55e-6, and
     * 1e-6 * midpoint of the first interval of linspace(0.1, 1, 3) = 0.325e-6 */
    assert_true(fabsf(s[128] - 0.55e-6f) < 1e-12f && s[126] == -s[128]);
    assert_true(fabsf(u[1] - 0.325e-6f) < 1e-12f);
    /* largest below 1: midpoint of the last interval of linspace(0.1, 1, 65) */
    assert_true(fabsf(s[254] - (1.0f - 0.9f / 128)) < 1e-6f);
    assert_true(fabsf(u[254] - (1.0f - 0.9f / 256)) < 1e-6f);
    assert_true(s[0] == -s[254]);
}

typedef struct {
    vkl_ctx *c;
    vkl_tensor *P[NP], *G[NP];
    vkl_adamw *a;
    vkl_graph *g;
} rig;

static void rig_new(rig *r, const char *profile, const vkl_adamw_opts *o, const float *mult, const int64_t *sz, int np)
{
    vkl_err e = {{0}};
    r->c = vkl_test_ctx(profile);
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 11);
    for (int i = 0; i < np; i++) {
        float *x = malloc(sizeof(float) * (size_t)sz[i]);
        vkl_test_fill(&rng, x, (size_t)sz[i], -0.5f, 0.5f);
        int64_t shape[2] = {sz == sizes ? rows_of[i] : 1, 0};
        shape[1] = sz[i] / shape[0];
        assert_int_equal(shape[0] * shape[1], sz[i]);
        r->P[i] = vkl_tensor_new(r->c, VKL_F32, 2, shape, &e);
        r->G[i] = vkl_tensor_new(r->c, VKL_F32, 2, shape, &e);
        assert_non_null(r->G[i]);
        assert_int_equal(vkl_tensor_upload(r->c, r->P[i], x, VKL_F32, &e), 0);
        free(x);
    }
    r->a = vkl_adamw_new(r->c, r->P, np, mult, o, &e);
    assert_non_null(r->a);
    r->g = vkl_graph_new(r->c);
    int rc = vkl_adamw_append(r->a, r->g, r->G, &e) || vkl_graph_plan(r->g, &e);
    if (rc) print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
}

static void rig_free(rig *r, int np)
{
    vkl_graph_free(r->g);
    vkl_adamw_free(r->a);
    for (int i = 0; i < np; i++) {
        vkl_tensor_free(r->P[i]);
        vkl_tensor_free(r->G[i]);
    }
    vkl_test_ctx_done(r->c);
}

/* Downloads tensor t (any dtype) into a malloc'd buffer of its own type. */
static void *fetch(vkl_ctx *c, vkl_tensor *t)
{
    size_t bytes = (size_t)vkl_tensor_nelem(t) * vkl_dtype_size(t->dtype);
    void *x = malloc(bytes);
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_download(c, t, x, t->dtype, &e), 0);
    return x;
}

static void matches_reference_in(const char *profile)
{
    vkl_adamw_opts o;
    vkl_adamw_opts_default(&o);
    o.lr = 2e-3f;
    o.weight_decay = 0.01f;
    o.max_grad_norm = 5.0f;
    o.state_bits = 8;
    const float mult[NP] = {1.0f, 4.0f, 1.0f};
    rig r;
    rig_new(&r, profile, &o, mult, sizes, NP);
    vkl_err e = {{0}};
    /* the small tensor keeps f32 moments, the others have 8-bit state */
    assert_null(vkl_adamw_m(r.a, 0));
    assert_null(vkl_adamw_v(r.a, 1));
    assert_non_null(vkl_adamw_m(r.a, 2));
    if (!strcmp(profile, "binding=64K")) /* 70007 f32 do not fit one 64 KiB window */
        assert_true(vkl_graph_dispatch_count(r.g) > 8);
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 5);
    long mismatched = 0, total_codes = 0, far = 0;
    float *m2 = calloc((size_t)sizes[2], sizeof(float)), *v2 = calloc((size_t)sizes[2], sizeof(float));
    for (int t = 1; t <= 6; t++) {
        /* steps 1-3 are clipped (norm well over 5), later ones not */
        float scale = t <= 3 ? 0.1f : 0.002f;
        float *grad[NP], *p[NP], *amax[NP];
        uint8_t *codes[NP];
        for (int i = 0; i < NP; i++) {
            grad[i] = malloc(sizeof(float) * (size_t)sizes[i]);
            vkl_test_fill(&rng, grad[i], (size_t)sizes[i], -scale, scale);
            /* a block of zeros, and a block with one large entry */
            if (sizes[i] > 4096) {
                memset(grad[i] + 256, 0, 256 * sizeof(float));
                grad[i][600] = 40 * scale;
            }
            assert_int_equal(vkl_tensor_upload(r.c, r.G[i], grad[i], VKL_F32, &e), 0);
            p[i] = fetch(r.c, r.P[i]);
            vkl_tensor *st[2];
            const char *nm[2];
            assert_int_equal(vkl_adamw_state(r.a, i, st, nm), 2);
            codes[i] = i < 2 ? fetch(r.c, st[0]) : NULL;
            amax[i] = i < 2 ? fetch(r.c, st[1]) : NULL;
        }
        assert_int_equal(vkl_adamw_prepare(r.a, t, o.lr, &e), 0);
        assert_int_equal(vkl_graph_run(r.g, &e), 0);
        float norm;
        int skipped;
        assert_int_equal(vkl_adamw_result(r.a, &norm, &skipped, &e), 0);
        assert_false(skipped);
        float clip = fminf(1.0f, o.max_grad_norm / (norm + 1e-6f));
        if (t <= 3) assert_true(clip < 0.5f);
        else assert_true(clip == 1.0f);
        for (int i = 0; i < NP; i++) {
            int64_t n = sizes[i];
            float lr = o.lr * mult[i];
            if (i < 2) {
                vkl_ref_adamw8(p[i], grad[i], n, codes[i], amax[i], lr, o.beta1, o.beta2, o.eps, o.weight_decay, clip,
                               t);
                vkl_tensor *st[2];
                const char *nm[2];
                vkl_adamw_state(r.a, i, st, nm);
                assert_string_equal(nm[0], "codes");
                uint8_t *gc = fetch(r.c, st[0]);
                float *ga = fetch(r.c, st[1]);
                int64_t nc = blocks(n) * 2 * VKL_ADAMW8_BLOCK;
                for (int64_t k = 0; k < nc; k++) {
                    if (gc[k] == codes[i][k]) continue;
                    mismatched++;
                    /* only a neighbouring code, from a value on a midpoint */
                    if (abs((int)gc[k] - (int)codes[i][k]) != 1) {
                        print_error("step %d, tensor %d, code %ld: %d, reference %d\n", t, i, (long)k, gc[k], codes[i][k]);
                        far++;
                    }
                }
                total_codes += (long)nc;
                vkl_test_assert_close("absmax", ga, amax[i], (size_t)(blocks(n) * 2), 0, 1e-6f);
                free(gc);
                free(ga);
            } else {
                /* f32 moments: torch's AdamW in f32 */
                float bc1 = (float)(1.0 - pow(o.beta1, t)), bc2 = (float)(1.0 - pow(o.beta2, t));
                for (int64_t k = 0; k < n; k++) {
                    float gk = grad[i][k] * clip;
                    m2[k] = o.beta1 * m2[k] + (1 - o.beta1) * gk;
                    v2[k] = o.beta2 * v2[k] + (1 - o.beta2) * gk * gk;
                    p[i][k] = p[i][k] * (1 - lr * o.weight_decay) - lr * (m2[k] / bc1) / (sqrtf(v2[k] / bc2) + o.eps);
                }
            }
            float *gp = fetch(r.c, r.P[i]);
            vkl_test_assert_close("parameters", gp, p[i], (size_t)n, 1e-9f, 1e-6f);
            free(gp);
            free(grad[i]);
            free(p[i]);
            free(codes[i]);
            free(amax[i]);
        }
    }
    print_message("%s: %ld of %ld codes differ from the reference (neighbours at midpoints)\n", profile, mismatched,
                  total_codes);
    assert_int_equal(far, 0);
    assert_true(mismatched * 1000 <= total_codes);
    free(m2);
    free(v2);
    rig_free(&r, NP);
}

static void matches_reference(void **state)
{
    (void)state;
    matches_reference_in("default");
}

static void matches_reference_in_64k_windows(void **state)
{
    (void)state;
    matches_reference_in("binding=64K");
}

static void nan_skips_without_touching_state(void **state)
{
    (void)state;
    vkl_adamw_opts o;
    vkl_adamw_opts_default(&o);
    o.lr = 1e-2f;
    o.state_bits = 8;
    rig r;
    rig_new(&r, NULL, &o, NULL, sizes, 2);
    vkl_err e = {{0}};
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 9);
    for (int t = 1; t <= 2; t++) {
        for (int i = 0; i < 2; i++) {
            float *x = malloc(sizeof(float) * (size_t)sizes[i]);
            vkl_test_fill(&rng, x, (size_t)sizes[i], -1, 1);
            if (t == 2 && i == 1) x[12345] = NAN;
            assert_int_equal(vkl_tensor_upload(r.c, r.G[i], x, VKL_F32, &e), 0);
            free(x);
        }
        void *before[2][3];
        for (int i = 0; i < 2; i++) {
            vkl_tensor *st[2];
            const char *nm[2];
            vkl_adamw_state(r.a, i, st, nm);
            before[i][0] = fetch(r.c, r.P[i]);
            before[i][1] = fetch(r.c, st[0]);
            before[i][2] = fetch(r.c, st[1]);
        }
        assert_int_equal(vkl_adamw_prepare(r.a, t, o.lr, &e), 0);
        assert_int_equal(vkl_graph_run(r.g, &e), 0);
        int skipped;
        assert_int_equal(vkl_adamw_result(r.a, NULL, &skipped, &e), 0);
        assert_int_equal(skipped, t == 2);
        for (int i = 0; i < 2; i++) {
            vkl_tensor *st[2];
            const char *nm[2];
            vkl_adamw_state(r.a, i, st, nm);
            vkl_tensor *ts[3] = {r.P[i], st[0], st[1]};
            for (int k = 0; k < 3; k++) {
                void *now = fetch(r.c, ts[k]);
                size_t bytes = (size_t)vkl_tensor_nelem(ts[k]) * vkl_dtype_size(ts[k]->dtype);
                /* step 1 changes everything (absmax from 0), the skipped step nothing */
                if (t == 2) assert_memory_equal(now, before[i][k], bytes);
                else assert_memory_not_equal(now, before[i][k], bytes);
                free(now);
                free(before[i][k]);
            }
        }
    }
    rig_free(&r, 2);
}

/* Minimises sum a_k (x_k - c_k)^2 / 2 with curvatures a_k spread over 0.1..10;
 * returns the loss after `steps` steps from x = 0. */
static double quadratic(int bits, int steps, double *start)
{
    enum { N = 8192 };
    const int64_t n = N;
    vkl_adamw_opts o;
    vkl_adamw_opts_default(&o);
    o.lr = 2e-2f;
    o.weight_decay = 0;
    o.state_bits = bits;
    rig r;
    rig_new(&r, NULL, &o, NULL, &n, 1);
    static float x[N], a[N], c[N], gr[N];
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 3);
    for (int k = 0; k < N; k++) {
        a[k] = powf(10.0f, vkl_test_rng_uniform(&rng, -1, 1));
        c[k] = vkl_test_rng_uniform(&rng, -1, 1);
        x[k] = 0;
    }
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_upload(r.c, r.P[0], x, VKL_F32, &e), 0);
    double loss = 0;
    for (int t = 1; t <= steps + 1; t++) {
        loss = 0;
        for (int k = 0; k < N; k++) {
            gr[k] = a[k] * (x[k] - c[k]);
            loss += 0.5 * a[k] * (x[k] - c[k]) * (x[k] - c[k]);
        }
        if (t == 1) *start = loss;
        if (t > steps) break;
        assert_int_equal(vkl_tensor_upload(r.c, r.G[0], gr, VKL_F32, &e), 0);
        assert_int_equal(vkl_adamw_prepare(r.a, t, o.lr, &e), 0);
        assert_int_equal(vkl_graph_run(r.g, &e), 0);
        assert_int_equal(vkl_tensor_download(r.c, r.P[0], x, VKL_F32, &e), 0);
    }
    rig_free(&r, 1);
    return loss;
}

static void quadratic_converges_like_f32(void **state)
{
    (void)state;
    double s32, s8, l32 = quadratic(32, 150, &s32), l8 = quadratic(8, 150, &s8);
    print_message("toy quadratic, loss from %.4g after 150 steps: f32 moments %.4g, 8-bit %.4g\n", s32, l32, l8);
    assert_true(s8 == s32);
    assert_true(l32 < 0.01 * s32);
    assert_true(l8 < 0.01 * s8);
    assert_true(l8 < 1.5 * l32 && l32 < 1.5 * l8);
}

static void state_sizes_and_bad_bits(void **state)
{
    (void)state;
    vkl_adamw_opts o;
    vkl_adamw_opts_default(&o);
    o.state_bits = 8;
    rig r;
    rig_new(&r, NULL, &o, NULL, sizes, NP);
    /* 8-bit: 2 codes + 2 absmax floats per block of 256; f32: 8 bytes per element */
    uint64_t want = (uint64_t)(blocks(5000) + blocks(70007)) * (2 * 256 + 8) + 300 * 8;
    assert_int_equal(vkl_adamw_state_bytes(r.a), want);
    vkl_tensor *st[2];
    const char *nm[2];
    assert_int_equal(vkl_adamw_state(r.a, 1, st, nm), 2);
    assert_int_equal(st[0]->dtype, VKL_U8);
    assert_int_equal(vkl_tensor_nelem(st[0]), blocks(70007) * 512);
    assert_string_equal(nm[1], "absmax");
    assert_int_equal(vkl_tensor_nelem(st[1]), blocks(70007) * 2);
    assert_int_equal(vkl_adamw_state(r.a, 2, st, nm), 2);
    assert_string_equal(nm[0], "m");
    assert_int_equal(vkl_adamw_state(r.a, 3, st, nm), 0);
    vkl_err e = {{0}};
    o.state_bits = 16;
    assert_null(vkl_adamw_new(r.c, r.P, 1, NULL, &o, &e));
    assert_non_null(strstr(e.msg, "state_bits"));
    rig_free(&r, NP);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(maps_are_bitsandbytes),
        cmocka_unit_test(matches_reference),
        cmocka_unit_test(matches_reference_in_64k_windows),
        cmocka_unit_test(nan_skips_without_touching_state),
        cmocka_unit_test(quadratic_converges_like_f32),
        cmocka_unit_test(state_sizes_and_bad_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
