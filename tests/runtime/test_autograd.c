/* Autograd and the backward rules of the core ops (views included: permutes,
 * reshapes, slices), against central finite differences of a double-precision
 * CPU evaluation of the same function. */
#include "vkl_test.h"
#include "ops.h"
#include "ref/vkl_ref.h"
#include "vkl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static vkl_tensor *up(vkl_ctx *c, int nd, const int64_t *shape, const float *x)
{
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, nd, shape, &e);
    assert_non_null(t);
    assert_int_equal(vkl_tensor_upload(c, t, x, VKL_F32, &e), 0);
    return t;
}

static void down(vkl_ctx *c, vkl_tensor *t, float *out)
{
    vkl_err e = {{0}};
    assert_non_null(t);
    assert_int_equal(vkl_tensor_download(c, t, out, VKL_F32, &e), 0);
}

/* Central differences of f (double) at x for every element of x. */
typedef double (*loss_fn)(void *user);
static void finite_diff(loss_fn f, void *user, double *x, int64_t n, double h, double *grad)
{
    for (int64_t i = 0; i < n; i++) {
        double keep = x[i];
        x[i] = keep + h;
        double lp = f(user);
        x[i] = keep - h;
        double lm = f(user);
        x[i] = keep;
        grad[i] = (lp - lm) / (2 * h);
    }
}

static void compare_grad(const char *what, const float *got, const double *want, int64_t n)
{
    float *w = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) w[i] = (float)want[i];
    vkl_test_assert_scaled(what, got, w, (size_t)n, 2e-4);
    free(w);
}

static double act(int op, double v) { return vkl_ref_unary1(op, v); }

/* ---- case 1: loss = sum(act(x W^T + b) * r), x [2,5,7], W [3,7], b [3] */
typedef struct { double x[70], w[21], b[3], r[30]; int op; } lin_case;

static double lin_loss(void *u)
{
    lin_case *c = u;
    double s = 0;
    for (int bt = 0; bt < 10; bt++)
        for (int o = 0; o < 3; o++) {
            double y = c->b[o];
            for (int k = 0; k < 7; k++) y += c->x[bt * 7 + k] * c->w[o * 7 + k];
            s += act(c->op, y) * c->r[bt * 3 + o];
        }
    return s;
}

static void linear_activation_grads(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 21);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        int ops[] = {VKL_UNARY_SILU, VKL_UNARY_GELU, VKL_UNARY_QUICK_GELU, VKL_UNARY_GELU_TANH, VKL_UNARY_TANH};
        for (size_t oi = 0; oi < sizeof ops / sizeof *ops; oi++) {
            lin_case lc;
            lc.op = ops[oi];
            float xf[70], wf[21], bf[3], rf[30];
            vkl_test_fill(&rng, xf, 70, -1, 1);
            vkl_test_fill(&rng, wf, 21, -1, 1);
            vkl_test_fill(&rng, bf, 3, -1, 1);
            vkl_test_fill(&rng, rf, 30, -1, 1);
            for (int i = 0; i < 70; i++) lc.x[i] = xf[i];
            for (int i = 0; i < 21; i++) lc.w[i] = wf[i];
            for (int i = 0; i < 3; i++) lc.b[i] = bf[i];
            for (int i = 0; i < 30; i++) lc.r[i] = rf[i];
            vkl_tensor *X = up(c, 3, (int64_t[]){2, 5, 7}, xf), *W = up(c, 2, (int64_t[]){3, 7}, wf),
                       *B = up(c, 1, (int64_t[]){3}, bf), *R = up(c, 3, (int64_t[]){2, 5, 3}, rf);
            vkl_graph *g = vkl_graph_new(c);
            vkl_tensor *y = vkl_unary(g, vkl_linear(g, X, W, B), (vkl_unary_op)lc.op, 1, 0);
            vkl_tensor *l = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, y, R), 2, (int64_t[]){1, 30}));
            vkl_tensor *wrt[3] = {X, W, B}, *gr[3];
            vkl_err e = {{0}};
            if (vkl_graph_backward(g, l, NULL, wrt, 3, gr, &e)) {
                print_error("%s\n", e.msg);
                fail();
            }
            for (int i = 0; i < 3; i++) vkl_graph_keep(g, gr[i]);
            vkl_graph_keep(g, l);
            if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
                print_error("%s\n", e.msg);
                fail();
            }
            float got[70];
            double want[70];
            char what[64];
            down(c, gr[0], got);
            finite_diff(lin_loss, &lc, lc.x, 70, 1e-5, want);
            snprintf(what, sizeof what, "d x (%s)", vkl_unary_name((vkl_unary_op)lc.op));
            compare_grad(what, got, want, 70);
            down(c, gr[1], got);
            finite_diff(lin_loss, &lc, lc.w, 21, 1e-5, want);
            snprintf(what, sizeof what, "d W (%s)", vkl_unary_name((vkl_unary_op)lc.op));
            compare_grad(what, got, want, 21);
            down(c, gr[2], got);
            finite_diff(lin_loss, &lc, lc.b, 3, 1e-5, want);
            snprintf(what, sizeof what, "d b (%s)", vkl_unary_name((vkl_unary_op)lc.op));
            compare_grad(what, got, want, 3);
            float lv;
            down(c, l, &lv);
            assert_true(fabs(lv - lin_loss(&lc)) < 1e-4 * (1 + fabs(lin_loss(&lc))));
            vkl_graph_free(g);
            vkl_tensor_free(X); vkl_tensor_free(W); vkl_tensor_free(B); vkl_tensor_free(R);
        }
        vkl_test_ctx_done(c);
    }
}

/* ---- case 2: broadcasting binary ops, loss = sum((a*b + a/b - b) * r);
 * a [3,1,5], b [4,5] -> [3,4,5] */
typedef struct { double a[15], b[20], r[60]; } bin_case;

static double bin_loss(void *u)
{
    bin_case *c = u;
    double s = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 5; k++) {
                double a = c->a[i * 5 + k], b = c->b[j * 5 + k];
                s += (a * b + a / b - b) * c->r[(i * 4 + j) * 5 + k];
            }
    return s;
}

static void broadcast_binary_grads(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 22);
    vkl_ctx *c = vkl_test_ctx(NULL);
    bin_case bc;
    float af[15], bf[20], rf[60];
    vkl_test_fill(&rng, af, 15, -1, 1);
    vkl_test_fill(&rng, bf, 20, 0.5f, 1.5f);
    vkl_test_fill(&rng, rf, 60, -1, 1);
    for (int i = 0; i < 15; i++) bc.a[i] = af[i];
    for (int i = 0; i < 20; i++) bc.b[i] = bf[i];
    for (int i = 0; i < 60; i++) bc.r[i] = rf[i];
    vkl_tensor *A = up(c, 3, (int64_t[]){3, 1, 5}, af), *Bt = up(c, 2, (int64_t[]){4, 5}, bf),
               *R = up(c, 3, (int64_t[]){3, 4, 5}, rf);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_sub(g, vkl_add(g, vkl_mul(g, A, Bt), vkl_div(g, A, Bt)), Bt);
    vkl_tensor *l = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, y, R), 2, (int64_t[]){1, 60}));
    vkl_tensor *wrt[2] = {A, Bt}, *gr[2];
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, l, NULL, wrt, 2, gr, &e), 0);
    vkl_graph_keep(g, gr[0]);
    vkl_graph_keep(g, gr[1]);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float got[20];
    double want[20];
    down(c, gr[0], got);
    finite_diff(bin_loss, &bc, bc.a, 15, 1e-6, want);
    compare_grad("d a (broadcast)", got, want, 15);
    down(c, gr[1], got);
    finite_diff(bin_loss, &bc, bc.b, 20, 1e-6, want);
    compare_grad("d b (broadcast)", got, want, 20);
    vkl_graph_free(g);
    vkl_tensor_free(A); vkl_tensor_free(Bt); vkl_tensor_free(R);
    vkl_test_ctx_done(c);
}

/* ---- case 3: batched matmul through permuted views with a broadcast operand:
 * loss = sum((A^T-view . B) * r); A stored [2,3,6,4] used as [2,3,4,6], B [6,5] */
typedef struct { double a[144], b[30], r[120]; } mm_case;

static double mm_loss(void *u)
{
    mm_case *c = u;
    double s = 0;
    for (int z = 0; z < 6; z++)
        for (int m = 0; m < 4; m++)
            for (int n = 0; n < 5; n++) {
                double y = 0;
                for (int k = 0; k < 6; k++) y += c->a[z * 24 + k * 4 + m] * c->b[k * 5 + n];
                s += y * y * c->r[(z * 4 + m) * 5 + n];
            }
    return s;
}

static void matmul_view_grads(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 23);
    vkl_ctx *c = vkl_test_ctx(NULL);
    mm_case mc;
    float af[144], bf[30], rf[120];
    vkl_test_fill(&rng, af, 144, -1, 1);
    vkl_test_fill(&rng, bf, 30, -1, 1);
    vkl_test_fill(&rng, rf, 120, -1, 1);
    for (int i = 0; i < 144; i++) mc.a[i] = af[i];
    for (int i = 0; i < 30; i++) mc.b[i] = bf[i];
    for (int i = 0; i < 120; i++) mc.r[i] = rf[i];
    vkl_tensor *A = up(c, 4, (int64_t[]){2, 3, 6, 4}, af), *B = up(c, 2, (int64_t[]){6, 5}, bf),
               *R = up(c, 4, (int64_t[]){2, 3, 4, 5}, rf);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_matmul(g, vkl_permute(g, A, (int[]){0, 1, 3, 2}), B);
    vkl_tensor *l = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, vkl_mul(g, y, y), R), 2, (int64_t[]){1, 120}));
    vkl_tensor *wrt[2] = {A, B}, *gr[2];
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, l, NULL, wrt, 2, gr, &e), 0);
    vkl_graph_keep(g, gr[0]);
    vkl_graph_keep(g, gr[1]);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float got[144];
    double want[144];
    down(c, gr[0], got);
    finite_diff(mm_loss, &mc, mc.a, 144, 1e-6, want);
    compare_grad("d A (permuted, batched)", got, want, 144);
    down(c, gr[1], got);
    finite_diff(mm_loss, &mc, mc.b, 30, 1e-6, want);
    compare_grad("d B (broadcast over batch)", got, want, 30);
    vkl_graph_free(g);
    vkl_tensor_free(A); vkl_tensor_free(B); vkl_tensor_free(R);
    vkl_test_ctx_done(c);
}

/* ---- slices: loss = sum(a^2 * ra) + sum(exp(b) * rb) with a = x[:, 0:2] and
 * b = x[:, 3:6] strided views of x [2,6,3,4] (the VAE's moments split into
 * mean and log-variance); channel 2 gets no gradient. A view that is not a
 * slice along one dimension has none and says so. */
typedef struct { double x[144], ra[48], rb[72]; } slice_case;

static double slice_loss(void *u)
{
    slice_case *k = u;
    double s = 0;
    for (int n = 0; n < 2; n++)
        for (int ch = 0; ch < 6; ch++)
            for (int i = 0; i < 12; i++) {
                double v = k->x[(n * 6 + ch) * 12 + i];
                if (ch < 2) s += v * v * k->ra[(n * 2 + ch) * 12 + i];
                else if (ch >= 3) s += exp(v) * k->rb[(n * 3 + ch - 3) * 12 + i];
            }
    return s;
}

static void slice_view_grads(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 41);
    vkl_ctx *c = vkl_test_ctx(NULL);
    slice_case k;
    float xf[144], raf[48], rbf[72];
    vkl_test_fill(&rng, xf, 144, -1, 1);
    vkl_test_fill(&rng, raf, 48, -1, 1);
    vkl_test_fill(&rng, rbf, 72, -1, 1);
    for (int i = 0; i < 144; i++) k.x[i] = xf[i];
    for (int i = 0; i < 48; i++) k.ra[i] = raf[i];
    for (int i = 0; i < 72; i++) k.rb[i] = rbf[i];
    vkl_tensor *X = up(c, 4, (int64_t[]){2, 6, 3, 4}, xf), *RA = up(c, 4, (int64_t[]){2, 2, 3, 4}, raf),
               *RB = up(c, 4, (int64_t[]){2, 3, 3, 4}, rbf);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *a = vkl_view(g, X, 4, (int64_t[]){2, 2, 3, 4}, X->stride, 0);
    vkl_tensor *b = vkl_view(g, X, 4, (int64_t[]){2, 3, 3, 4}, X->stride, 3 * 12);
    vkl_tensor *la = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, vkl_mul(g, a, a), RA), 2, (int64_t[]){1, 48}));
    vkl_tensor *lb = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, vkl_unary(g, b, VKL_UNARY_EXP, 1, 0), RB), 2,
                                                 (int64_t[]){1, 72}));
    vkl_tensor *l = vkl_add(g, la, lb), *gr;
    vkl_err e = {{0}};
    if (vkl_graph_backward(g, l, NULL, &X, 1, &gr, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    vkl_graph_keep(g, gr);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    float got[144];
    double want[144];
    down(c, gr, got);
    finite_diff(slice_loss, &k, k.x, 144, 1e-6, want);
    compare_grad("d x through two channel slices", got, want, 144);
    for (int n = 0; n < 2; n++)
        for (int i = 0; i < 12; i++) assert_true(got[(n * 6 + 2) * 12 + i] == 0.0f);
    vkl_graph_free(g);

    /* every other element of the last dimension: not a slice */
    g = vkl_graph_new(c);
    vkl_tensor *odd = vkl_view(g, X, 4, (int64_t[]){2, 6, 3, 2}, (int64_t[]){72, 12, 4, 2}, 1);
    l = vkl_sum_rows(g, vkl_reshape(g, vkl_contiguous(g, odd), 2, (int64_t[]){1, 72}));
    assert_int_equal(vkl_graph_backward(g, l, NULL, &X, 1, &gr, &e), -1);
    assert_non_null(strstr(e.msg, "strided view"));
    vkl_graph_free(g);
    vkl_tensor_free(X); vkl_tensor_free(RA); vkl_tensor_free(RB);
    vkl_test_ctx_done(c);
}

/* Frozen weights get no gradient and no gradient work; inputs still do. */
static void frozen_weights_get_nothing(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    float x[6] = {1, 2, 3, 4, 5, 6}, w[6] = {1, 0, -1, 2, 1, 0}, b2[3] = {0.5f, -1, 2};
    vkl_tensor *X = up(c, 2, (int64_t[]){2, 3}, x), *W = up(c, 2, (int64_t[]){2, 3}, w),
               *U = up(c, 1, (int64_t[]){3}, b2);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *h = vkl_linear(g, X, W, NULL);  /* [2,2] */
    vkl_tensor *l = vkl_sum_rows(g, vkl_reshape(g, h, 2, (int64_t[]){1, 4}));
    vkl_tensor *wrt[2] = {X, U}, *gr[2];
    vkl_err e = {{0}};
    int before = vkl_graph_node_count(g);
    assert_int_equal(vkl_graph_backward(g, l, NULL, wrt, 2, gr, &e), 0);
    assert_non_null(gr[0]);
    assert_null(gr[1]); /* U is not used by the loss */
    /* no product computing dW was added: only dX = dy W (one matmul) */
    int matmuls = 0;
    (void)before;
    vkl_graph_keep(g, gr[0]);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    assert_int_equal(vkl_graph_run(g, &e), 0);
    float got[6];
    down(c, gr[0], got);
    /* d/dx sum(x W^T) = column sums of W */
    float want[6] = {3, 1, -1, 3, 1, -1};
    vkl_test_assert_close("dX", got, want, 6, 1e-6f, 0);
    (void)matmuls;
    vkl_graph_free(g);
    vkl_tensor_free(X); vkl_tensor_free(W); vkl_tensor_free(U);
    vkl_test_ctx_done(c);
}

/* vkl_convert's rule passes the gradient through in the source's dtype:
 * d/dx sum(c * f32(f16(x))) = c, the closed form (c exact in f16). */
static void convert_grads(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    float x[6] = {0.3f, -1.7f, 2.25f, 5.0f, -0.01f, 100.5f}, k[6] = {1, -2, 0.5f, 4, -0.25f, 3};
    vkl_tensor *X = up(c, 2, (int64_t[]){2, 3}, x), *C = up(c, 2, (int64_t[]){2, 3}, k);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *h = vkl_convert(g, vkl_convert(g, X, VKL_F16), VKL_F32);
    vkl_tensor *l = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, h, C), 2, (int64_t[]){1, 6}));
    vkl_tensor *gr = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, l, NULL, &X, 1, &gr, &e), 0);
    vkl_graph_keep(g, gr);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    assert_int_equal(vkl_graph_run(g, &e), 0);
    float got[6];
    down(c, gr, got);
    vkl_test_assert_close("d/dx", got, k, 6, 0, 0);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_tensor_free(C);
    vkl_test_ctx_done(c);
}

static void missing_rule_is_reported(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    float x[6] = {1, 2, 3, 4, 5, 6};
    vkl_tensor *X = up(c, 2, (int64_t[]){2, 3}, x);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *m = vkl_max_rows(g, X);
    vkl_tensor *gr;
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, m, NULL, &X, 1, &gr, &e), -1);
    assert_non_null(strstr(e.msg, "max_rows"));
    vkl_graph_free(g);
    vkl_tensor_free(X);
    vkl_test_ctx_done(c);
}

/* The same deep chain with and without checkpoint segments: equal gradients,
 * and the checkpointed plan holds fewer activations at once. */
static uint64_t chain_grads(vkl_ctx *c, int checkpoint, float *gw_out)
{
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 31);
    enum { T = 64, D = 48, LAYERS = 6 };
    float x[T * D], w[LAYERS][D * D];
    vkl_test_fill(&rng, x, T * D, -1, 1);
    for (int l = 0; l < LAYERS; l++) vkl_test_fill(&rng, w[l], D * D, -0.2f, 0.2f);
    vkl_tensor *X = up(c, 2, (int64_t[]){T, D}, x), *W[LAYERS];
    for (int l = 0; l < LAYERS; l++) W[l] = up(c, 2, (int64_t[]){D, D}, w[l]);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *h = X;
    for (int l = 0; l < LAYERS; l++) {
        if (checkpoint) vkl_graph_segment_begin(g);
        vkl_tensor *a = vkl_silu(g, vkl_linear(g, h, W[l], NULL));
        h = vkl_add(g, h, vkl_gelu(g, vkl_scale(g, a, 0.5f)));
        if (checkpoint) vkl_graph_segment_end(g);
    }
    vkl_tensor *l = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, h, h), 2, (int64_t[]){1, T * D}));
    vkl_tensor *gr[LAYERS];
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, l, NULL, W, LAYERS, gr, &e), 0);
    vkl_graph_keep(g, gr[0]);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    assert_int_equal(vkl_graph_run(g, &e), 0);
    down(c, gr[0], gw_out);
    uint64_t arena = vkl_graph_arena_bytes(g);
    vkl_graph_free(g);
    vkl_tensor_free(X);
    for (int i = 0; i < LAYERS; i++) vkl_tensor_free(W[i]);
    return arena;
}

static void checkpoint_segments(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    float plain[48 * 48], ckpt[48 * 48];
    uint64_t a0 = chain_grads(c, 0, plain), a1 = chain_grads(c, 1, ckpt);
    vkl_test_assert_close("checkpointed gradient", ckpt, plain, 48 * 48, 1e-6f, 1e-5f);
    print_message("activation arena: %llu bytes plain, %llu checkpointed\n", (unsigned long long)a0,
                  (unsigned long long)a1);
    assert_true(a1 < a0);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(linear_activation_grads),
        cmocka_unit_test(broadcast_binary_grads),
        cmocka_unit_test(matmul_view_grads),
        cmocka_unit_test(slice_view_grads),
        cmocka_unit_test(frozen_weights_get_nothing),
        cmocka_unit_test(convert_grads),
        cmocka_unit_test(missing_rule_is_reported),
        cmocka_unit_test(checkpoint_segments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
