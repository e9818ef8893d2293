/* Backward of group norm (with and without SiLU), layer norm, RMS norm and
 * softmax: (1) the double-precision CPU backward (runtime/ref/ref_norm_grad.c)
 * against central finite differences of the CPU forward; (2) the device
 * gradients (vkl_graph_backward with dy = r, i.e. loss = sum(op(x) * r))
 * against the CPU backward, on random odd shapes, f32/f16/bf16 inputs, f16
 * parameters, parameters absent / present / frozen, channel-last and
 * transposed (permuted) inputs, segments over several statistics chunks, in
 * every device profile (subgroup and shared-memory reductions) and under a
 * 64 KiB binding limit; and the SD UNet group norm shape, timed. */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

/* The scale of the terms of dx: max over segments of rstd * max|dy| * max|gamma|
 * (mode 0 mean/var, 1 RMS; segments of len contiguous elements). */
static double dx_floor(const double *x, int64_t nseg, int64_t len, int mode, double eps, const double *dy,
                       double gmax)
{
    double f = 0, dmax = 0;
    for (int64_t i = 0; i < nseg * len; i++)
        if (fabs(dy[i]) > dmax) dmax = fabs(dy[i]);
    for (int64_t s = 0; s < nseg; s++) {
        double m = 0, q = 0;
        if (mode == 0) {
            for (int64_t e = 0; e < len; e++) m += x[s * len + e];
            m /= (double)len;
        }
        for (int64_t e = 0; e < len; e++) q += (x[s * len + e] - m) * (x[s * len + e] - m);
        double r = 1 / sqrt(q / (double)len + eps);
        if (r * dmax * gmax > f) f = r * dmax * gmax;
    }
    return f;
}

/* ------------------------------------------------ (1) reference vs finite differences */

typedef struct {
    int kind;   /* 0 group norm, else row norm of mode kind - 1 */
    int64_t N, C, S, rows, D;
    int groups, silu;
    double eps, *x, *gamma, *beta, *r, *y;
} fd_case;

static double fd_loss(fd_case *k)
{
    int64_t n;
    if (k->kind == 0) {
        n = k->N * k->C * k->S;
        vkl_ref_group_norm_f64(k->x, k->N, k->C, k->S, k->groups, k->eps, k->gamma, k->beta, k->silu, k->y);
    } else {
        n = k->rows * k->D;
        vkl_ref_row_norm_f64(k->kind - 1, k->x, k->rows, k->D, k->gamma, k->beta, k->eps, k->y);
    }
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += k->y[i] * k->r[i];
    return s;
}

static double fd_loss_cb(void *u) { return fd_loss(u); }

static void fd_check(const char *what, fd_case *k, double *v, int64_t n, const double *analytic)
{
    gc_fd_check(what, fd_loss_cb, k, v, n, analytic, 1e-6, 1e-6);
}

static void reference_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 401);
    for (int trial = 0; trial < 16; trial++) {
        fd_case k;
        memset(&k, 0, sizeof k);
        k.kind = trial < 8 ? 0 : 1 + trial % 3;
        int64_t n, P;
        if (k.kind == 0) {
            k.groups = vkl_test_rng_int(&rng, 1, 8);
            k.C = k.groups * vkl_test_rng_int(&rng, 1, 3);
            k.N = vkl_test_rng_int(&rng, 1, 2);
            k.S = vkl_test_rng_int(&rng, 1, 4) * 2 + 1;
            k.silu = trial & 1;
            k.eps = 1e-5;
            n = k.N * k.C * k.S;
            P = k.C;
        } else {
            static const int64_t lens[] = {1, 37, 5, 12};
            k.D = lens[trial % 4];
            k.rows = vkl_test_rng_int(&rng, 1, 3);
            k.eps = k.kind == 3 ? 0.7 : 1e-5;   /* softmax scale */
            n = k.rows * k.D;
            P = k.D;
        }
        float *xf = opc_random(&rng, VKL_F32, (size_t)n, -2, 2), *gf = opc_random(&rng, VKL_F32, (size_t)P, 0.5f, 1.5f);
        float *bf = opc_random(&rng, VKL_F32, (size_t)P, -0.5f, 0.5f), *rf = opc_random(&rng, VKL_F32, (size_t)n, -1, 1);
        k.x = gc_f64(xf, n);
        k.r = gc_f64(rf, n);
        int affine = trial % 4 != 3;
        k.gamma = affine ? gc_f64(gf, P) : NULL;
        k.beta = affine && k.kind != 2 ? gc_f64(bf, P) : NULL;
        k.y = malloc(sizeof(double) * (size_t)n);
        double *dx = malloc(sizeof(double) * (size_t)n), *dg = malloc(sizeof(double) * (size_t)P),
               *db = malloc(sizeof(double) * (size_t)P);
        if (k.kind == 0)
            vkl_ref_group_norm_backward(k.x, k.N, k.C, k.S, k.groups, k.eps, k.gamma, k.beta, k.silu, k.r, dx, dg, db);
        else
            vkl_ref_row_norm_backward(k.kind - 1, k.x, k.rows, k.D, k.gamma, k.beta, k.eps, k.r, dx, dg, db);
        static const char *names[] = {"group_norm", "layer_norm", "rms_norm", "softmax"};
        char what[96];
        snprintf(what, sizeof what, "%s trial %d: dx", names[k.kind], trial);
        fd_check(what, &k, k.x, n, dx);
        if (k.gamma && k.kind != 3) {
            snprintf(what, sizeof what, "%s trial %d: dgamma", names[k.kind], trial);
            fd_check(what, &k, k.gamma, P, dg);
        }
        if (k.beta) {
            snprintf(what, sizeof what, "%s trial %d: dbeta", names[k.kind], trial);
            fd_check(what, &k, k.beta, P, db);
        }
        free(xf); free(gf); free(bf); free(rf);
        free(k.x); free(k.r); free(k.gamma); free(k.beta); free(k.y); free(dx); free(dg); free(db);
    }
}

/* ------------------------------------------------ (2) device vs reference */

typedef struct {
    int64_t N, C, H, W;
    int nd, groups;
    vkl_dtype xdt, pdt;
    int gamma, beta, silu;     /* present */
    int need_x, need_g, need_b;
    int channels_last;
    float lo, hi;
} gn_case;

static double check_group_norm(vkl_ctx *c, vkl_test_rng *r, const gn_case *k, double tol)
{
    int64_t S = k->H * k->W, n = k->N * k->C * S;
    float *x = opc_random(r, k->xdt, (size_t)n, k->lo, k->hi), *rr = opc_random(r, VKL_F32, (size_t)n, -1, 1);
    float *stored = malloc(sizeof(float) * n);
    int cl = k->channels_last && k->nd >= 3;
    for (int64_t b = 0; b < k->N; b++)
        for (int64_t ch = 0; ch < k->C; ch++)
            for (int64_t s = 0; s < S; s++)
                stored[cl ? (b * S + s) * k->C + ch : (b * k->C + ch) * S + s] = x[(b * k->C + ch) * S + s];
    int64_t shape[4] = {k->N, k->C, k->H, k->W}, sshape[4] = {k->N, k->H, k->W, k->C};
    if (k->nd == 3) {
        shape[2] = S;
        sshape[1] = S;
        sshape[2] = k->C;
    }
    float *gm = opc_random(r, k->pdt, (size_t)k->C, 0.5f, 1.5f), *bt = opc_random(r, k->pdt, (size_t)k->C, -0.5f, 0.5f);
    vkl_tensor *X = opc_upload_f32(c, k->xdt, k->nd, cl ? sshape : shape, stored);
    vkl_tensor *G = opc_upload_f32(c, k->pdt, 1, &k->C, gm), *B = opc_upload_f32(c, k->pdt, 1, &k->C, bt);
    vkl_tensor *R = opc_upload_f32(c, VKL_F32, k->nd, shape, rr);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *xv = X;
    if (cl) {
        int p4[4] = {0, 3, 1, 2}, p3[3] = {0, 2, 1};
        xv = vkl_permute(g, X, k->nd == 4 ? p4 : p3);
    }
    vkl_tensor *y = vkl_group_norm(g, xv, k->groups, 1e-5f, k->gamma ? G : NULL, k->beta ? B : NULL, k->silu);
    vkl_tensor *wrt[3] = {k->need_x ? X : NULL, k->gamma && k->need_g ? G : NULL, k->beta && k->need_b ? B : NULL};
    float *got[3];
    double ms = gc_run_backward(c, g, y, R, wrt, 3, got);

    double *xd = gc_f64(x, n), *gd = gc_f64(gm, k->C), *bd = gc_f64(bt, k->C), *rd = gc_f64(rr, n);
    double *dx = malloc(sizeof(double) * n), *dg = malloc(sizeof(double) * k->C), *db = malloc(sizeof(double) * k->C);
    vkl_ref_group_norm_backward(xd, k->N, k->C, S, k->groups, 1e-5, k->gamma ? gd : NULL, k->beta ? bd : NULL,
                                k->silu, rd, dx, dg, db);
    char what[200];
    snprintf(what, sizeof what, "group_norm [%lld,%lld,%lld,%lld]/%d nd%d x %s p %s g%d b%d silu%d cl%d (%s)",
             (long long)k->N, (long long)k->C, (long long)k->H, (long long)k->W, k->groups, k->nd,
             vkl_dtype_name(k->xdt), vkl_dtype_name(k->pdt), k->gamma, k->beta, k->silu, cl, vkl_ctx_caps(c)->profile);
    char w2[240];
    if (got[0]) {
        /* the device's dx is in X's stored layout */
        float *dxl = malloc(sizeof(float) * n);
        for (int64_t b = 0; b < k->N; b++)
            for (int64_t ch = 0; ch < k->C; ch++)
                for (int64_t s = 0; s < S; s++)
                    dxl[(b * k->C + ch) * S + s] = got[0][cl ? (b * S + s) * k->C + ch : (b * k->C + ch) * S + s];
        snprintf(w2, sizeof w2, "dx %s", what);
        double gmax = 1;
        for (int64_t i = 0; k->gamma && i < k->C; i++) gmax = i == 0 || fabs(gd[i]) > gmax ? fabs(gd[i]) : gmax;
        gc_assert_floor(w2, dxl, dx, n, tol, dx_floor(xd, k->N * k->groups, n / (k->N * k->groups), 0, 1e-5, rd, gmax));
        free(dxl);
    }
    if (got[1]) {
        snprintf(w2, sizeof w2, "dgamma %s", what);
        gc_assert(w2, got[1], dg, k->C, tol);
    }
    if (got[2]) {
        snprintf(w2, sizeof w2, "dbeta %s", what);
        gc_assert(w2, got[2], db, k->C, tol);
    }
    for (int i = 0; i < 3; i++) free(got[i]);
    free(x); free(rr); free(stored); free(gm); free(bt);
    free(xd); free(gd); free(bd); free(rd); free(dx); free(dg); free(db);
    vkl_graph_free(g);
    vkl_tensor_free(X); vkl_tensor_free(G); vkl_tensor_free(B); vkl_tensor_free(R);
    return ms;
}

static void group_norm_grad_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 402);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 16; trial++) {
            gn_case k;
            memset(&k, 0, sizeof k);
            k.groups = vkl_test_rng_int(&r, 1, 8);
            k.C = k.groups * vkl_test_rng_int(&r, 1, 5);
            k.N = vkl_test_rng_int(&r, 1, 3);
            k.nd = 2 + trial % 3;
            k.H = k.nd == 4 ? 2 * vkl_test_rng_int(&r, 0, 11) + 1 : 1;
            k.W = k.nd >= 3 ? 2 * vkl_test_rng_int(&r, 0, 20) + 1 : 1;
            k.xdt = (vkl_dtype)(trial % 3);
            k.pdt = trial & 2 ? VKL_F16 : VKL_F32;
            k.gamma = trial % 4 != 1;
            k.beta = trial % 4 != 2;
            k.silu = trial & 1;
            k.channels_last = (trial / 2) & 1;
            k.need_x = trial % 5 != 4;
            k.need_g = trial % 3 != 2;
            k.need_b = trial % 7 != 3;
            k.lo = -2;
            k.hi = 3;
            check_group_norm(c, &r, &k, 2e-5);
        }
        /* groups over several statistics chunks and apply blocks, far from zero mean */
        gn_case big = {.N = 2, .C = 12, .H = 37, .W = 111, .nd = 4, .groups = 3, .xdt = VKL_F32, .pdt = VKL_F16,
                       .gamma = 1, .beta = 1, .silu = 1, .need_x = 1, .need_g = 1, .need_b = 1,
                       .channels_last = p == 1, .lo = 40, .hi = 44};
        check_group_norm(c, &r, &big, 5e-5);
        vkl_test_ctx_done(c);
    }
}

/* The SD UNet shape (2x320x64x64, 32 groups: 40960 elements per group),
 * fused SiLU, f16 parameters; prints the time of one replay of forward +
 * backward. */
static void group_norm_grad_sd_shape(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 403);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        gn_case k = {.N = 2, .C = 320, .H = 64, .W = 64, .nd = 4, .groups = 32, .xdt = VKL_F32, .pdt = VKL_F16,
                     .gamma = 1, .beta = 1, .silu = 1, .need_x = 1, .need_g = 1, .need_b = 1, .lo = -3, .hi = 5};
        double ms = check_group_norm(c, &r, &k, 5e-5);
        print_message("group norm + SiLU forward and backward at 2x320x64x64 (%s, %s): %.1f ms\n",
                      vkl_ctx_caps(c)->name, vkl_ctx_caps(c)->profile, ms);
        vkl_test_ctx_done(c);
    }
}

/* layer norm, RMS norm, softmax over rows (mode 0, 1, 2) */
static void check_rows(vkl_ctx *c, vkl_test_rng *r, int mode, int64_t B, int64_t Rn, int64_t D, vkl_dtype xdt,
                       vkl_dtype pdt, int transposed, int affine, int need_params, double tol)
{
    int64_t n = B * Rn * D;
    float *x = opc_random(r, xdt, (size_t)n, -3, 2), *rr = opc_random(r, VKL_F32, (size_t)n, -1, 1);
    float *stored = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Rn; i++)
            for (int64_t d = 0; d < D; d++)
                stored[transposed ? (b * D + d) * Rn + i : (b * Rn + i) * D + d] = x[(b * Rn + i) * D + d];
    int64_t shape[3] = {B, Rn, D}, tshape[3] = {B, D, Rn};
    float *gm = opc_random(r, pdt, (size_t)D, 0.5f, 1.5f), *bt = opc_random(r, pdt, (size_t)D, -0.5f, 0.5f);
    vkl_tensor *X = opc_upload_f32(c, xdt, 3, transposed ? tshape : shape, stored);
    vkl_tensor *G = opc_upload_f32(c, pdt, 1, &D, gm), *Bt = opc_upload_f32(c, pdt, 1, &D, bt);
    vkl_tensor *R = opc_upload_f32(c, VKL_F32, 3, shape, rr);
    vkl_graph *g = vkl_graph_new(c);
    int perm[3] = {0, 2, 1};
    vkl_tensor *xv = transposed ? vkl_permute(g, X, perm) : X;
    double fparam = mode == 2 ? (D > 100 ? 0.125 : 1.5) : mode == 0 ? 1e-5 : 1e-6;
    int hg = affine && mode != 2, hb = affine && mode == 0;
    vkl_tensor *y = mode == 0 ? vkl_layer_norm(g, xv, hg ? G : NULL, hb ? Bt : NULL, (float)fparam)
                  : mode == 1 ? vkl_rms_norm(g, xv, hg ? G : NULL, (float)fparam)
                              : vkl_softmax(g, xv, (float)fparam);
    vkl_tensor *wrt[3] = {X, hg && need_params ? G : NULL, hb && need_params ? Bt : NULL};
    float *got[3];
    gc_run_backward(c, g, y, R, wrt, 3, got);
    double *xd = gc_f64(x, n), *gd = gc_f64(gm, D), *bd = gc_f64(bt, D), *rd = gc_f64(rr, n);
    double *dx = malloc(sizeof(double) * n), *dg = malloc(sizeof(double) * D), *db = malloc(sizeof(double) * D);
    vkl_ref_row_norm_backward(mode, xd, B * Rn, D, hg ? gd : NULL, hb ? bd : NULL, (float)fparam, rd, dx, dg, db);
    static const char *names[] = {"layer_norm", "rms_norm", "softmax"};
    char what[200];
    snprintf(what, sizeof what, "%s [%lld,%lld,%lld] x %s p %s transposed %d affine %d (%s)", names[mode],
             (long long)B, (long long)Rn, (long long)D, vkl_dtype_name(xdt), vkl_dtype_name(pdt), transposed, affine,
             vkl_ctx_caps(c)->profile);
    char w2[240];
    float *dxl = malloc(sizeof(float) * n);
    for (int64_t b = 0; b < B; b++)
        for (int64_t i = 0; i < Rn; i++)
            for (int64_t d = 0; d < D; d++)
                dxl[(b * Rn + i) * D + d] = got[0][transposed ? (b * D + d) * Rn + i : (b * Rn + i) * D + d];
    snprintf(w2, sizeof w2, "dx %s", what);
    double gmax = 1;
    for (int64_t i = 0; hg && i < D; i++) gmax = i == 0 || fabs(gd[i]) > gmax ? fabs(gd[i]) : gmax;
    gc_assert_floor(w2, dxl, dx, n, tol, mode == 2 ? 0 : dx_floor(xd, B * Rn, D, mode, fparam, rd, gmax));
    if (got[1]) {
        snprintf(w2, sizeof w2, "dgamma %s", what);
        gc_assert(w2, got[1], dg, D, tol);
    }
    if (got[2]) {
        snprintf(w2, sizeof w2, "dbeta %s", what);
        gc_assert(w2, got[2], db, D, tol);
    }
    for (int i = 0; i < 3; i++) free(got[i]);
    free(dxl); free(x); free(rr); free(stored); free(gm); free(bt);
    free(xd); free(gd); free(bd); free(rd); free(dx); free(dg); free(db);
    vkl_graph_free(g);
    vkl_tensor_free(X); vkl_tensor_free(G); vkl_tensor_free(Bt); vkl_tensor_free(R);
}

static void row_norms_grad_random(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 404);
    static const int64_t lens[] = {1, 37, 4099, 77, 320};
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        for (int trial = 0; trial < 15; trial++) {
            int64_t D = lens[trial % 5];
            int64_t B = vkl_test_rng_int(&r, 1, 3), R = vkl_test_rng_int(&r, 1, D > 1000 ? 3 : 71);
            check_rows(c, &r, trial % 3, B, R, D, (vkl_dtype)(trial % 3), (trial / 3) & 1 ? VKL_F16 : VKL_F32,
                       (trial / 2) & 1, trial % 4 != 3, trial % 5 != 1, 2e-5);
        }
        vkl_test_ctx_done(c);
    }
}

/* Windows of segments under a 64 KiB binding limit: the dispatches of each
 * backward node split the tensors, and the row norms' column sums span
 * several row blocks. */
static void norm_grads_under_small_binding(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 405);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    gn_case k = {.N = 3, .C = 64, .H = 19, .W = 21, .nd = 4, .groups = 16, .xdt = VKL_F32, .pdt = VKL_F32,
                 .gamma = 1, .beta = 1, .silu = 1, .need_x = 1, .need_g = 1, .need_b = 1, .lo = -1, .hi = 1};
    check_group_norm(c, &r, &k, 2e-5);
    check_rows(c, &r, 0, 2, 203, 301, VKL_F32, VKL_F16, 0, 1, 1, 2e-5);
    /* only dx: the column sums of 4099-wide rows need a binding of their own */
    check_rows(c, &r, 1, 1, 9, 4099, VKL_F16, VKL_F32, 0, 1, 0, 2e-5);
    check_rows(c, &r, 2, 3, 50, 257, VKL_F32, VKL_F32, 0, 0, 0, 2e-5);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reference_matches_finite_differences),
        cmocka_unit_test(group_norm_grad_random),
        cmocka_unit_test(group_norm_grad_sd_shape),
        cmocka_unit_test(row_norms_grad_random),
        cmocka_unit_test(norm_grads_under_small_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
