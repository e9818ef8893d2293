/* conv2d / conv2d_lora / layout-op gradients:
 *  - the double-precision CPU backward against central finite differences;
 *  - the device (vkl_graph_backward, dy = R) against the CPU backward on
 *    random odd shapes (C, O in 1..17, odd H/W, k 1/3/5, stride 1/2,
 *    asymmetric padding, batch 2, f16/bf16 weights, permuted inputs), in
 *    both profiles, with forced GPU tiles, under a 64 KiB binding limit (with
 *    a forward split into input-channel nodes, also replayed as a checkpoint
 *    segment), and with no weight-gradient work for a frozen weight;
 *  - conv2d_lora: d x, d down, d up, d rank_scale against the chain rule
 *    through merged weights and against finite differences;
 *  - upsample / concat / contiguous against their CPU backward;
 *  - end to end: x -> LoCon conv3x3 -> group norm + SiLU -> upsample ->
 *    concat(skip) -> conv1x1 -> sum, against finite differences of the
 *    chained double-precision references. */
#include "grad_check.h"
#include "ops.h"
#include "ops/conv2d_internal.h"
#include "ref/vkl_ref.h"

#include <string.h>

typedef struct {
    int64_t N, C, H, W, O, kh, kw;
    vkl_conv2d_params p;
    vkl_dtype wdt;
    int bias, transposed;
} gcase;

static int64_t out_h(const gcase *k) { return (k->H + k->p.pad_top + k->p.pad_bottom - k->kh) / k->p.stride_h + 1; }
static int64_t out_w(const gcase *k) { return (k->W + k->p.pad_left + k->p.pad_right - k->kw) / k->p.stride_w + 1; }

static void ref_backward(const gcase *k, const double *x, const double *w, const double *dy, double *dx, double *dw,
                         double *db)
{
    int64_t xs[4] = {k->N, k->C, k->H, k->W};
    vkl_ref_conv2d_backward(x, xs, w, k->O, k->kh, k->kw, k->p.stride_h, k->p.stride_w, k->p.pad_top, k->p.pad_bottom,
                            k->p.pad_left, k->p.pad_right, dy, dx, dw, db);
}

static void describe(const gcase *k, const char *profile, char *buf, size_t n)
{
    snprintf(buf, n, "N%lld C%lld %lldx%lld O%lld k%lldx%lld s%d,%d pad %d,%d,%d,%d w %s%s (%s)", (long long)k->N,
             (long long)k->C, (long long)k->H, (long long)k->W, (long long)k->O, (long long)k->kh, (long long)k->kw,
             k->p.stride_h, k->p.stride_w, k->p.pad_top, k->p.pad_bottom, k->p.pad_left, k->p.pad_right,
             vkl_dtype_name(k->wdt), k->transposed ? " permuted x" : "", profile);
}

/* ---- (1) CPU backward vs finite differences */

typedef struct {
    const gcase *k;
    double *x, *w, *b, *r;
} fd_conv;

static double conv_loss(void *u)
{
    fd_conv *f = u;
    const gcase *k = f->k;
    int64_t xs[4] = {k->N, k->C, k->H, k->W}, ny = k->N * k->O * out_h(k) * out_w(k);
    double *y = malloc(sizeof(double) * (size_t)ny), s = 0;
    vkl_ref_conv2d_f64(f->x, xs, f->w, k->O, k->kh, k->kw, f->b, k->p.stride_h, k->p.stride_w, k->p.pad_top,
                       k->p.pad_bottom, k->p.pad_left, k->p.pad_right, y);
    for (int64_t i = 0; i < ny; i++) s += y[i] * f->r[i];
    free(y);
    return s;
}

static double *rand_f64(vkl_test_rng *r, int64_t n, double lo, double hi)
{
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) d[i] = vkl_test_rng_uniform(r, (float)lo, (float)hi);
    return d;
}

static void ref_backward_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 81);
    static const gcase cases[] = {
        {2, 3, 7, 5, 4, 3, 3, {1, 1, 1, 0, 0, 1}, VKL_F32, 1, 0},
        {1, 2, 9, 7, 3, 3, 3, {2, 2, 0, 1, 0, 1}, VKL_F32, 1, 0},   /* VAE-style pad right/bottom, stride 2 */
        {2, 2, 8, 9, 2, 5, 3, {2, 1, 2, 1, 1, 2}, VKL_F32, 0, 0},
        {1, 3, 5, 6, 2, 1, 1, {2, 2, 0, 0, 1, 0}, VKL_F32, 1, 0},   /* a 1x1 stride 2 skips pixels */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const gcase *k = &cases[i];
        int64_t nx = k->N * k->C * k->H * k->W, nw = k->O * k->C * k->kh * k->kw, ny = k->N * k->O * out_h(k) * out_w(k);
        fd_conv f = {k, rand_f64(&r, nx, -1, 1), rand_f64(&r, nw, -1, 1), rand_f64(&r, k->O, -1, 1),
                     rand_f64(&r, ny, -1, 1)};
        double *dx = malloc(sizeof(double) * (size_t)nx), *dw = malloc(sizeof(double) * (size_t)nw);
        double *db = malloc(sizeof(double) * (size_t)k->O);
        ref_backward(k, f.x, f.w, f.r, dx, dw, db);
        char what[200], d[160];
        describe(k, "cpu", d, sizeof d);
        snprintf(what, sizeof what, "ref d x %s", d);
        gc_fd_check(what, conv_loss, &f, f.x, nx, dx, 1e-5, 1e-7);
        snprintf(what, sizeof what, "ref d w %s", d);
        gc_fd_check(what, conv_loss, &f, f.w, nw, dw, 1e-5, 1e-7);
        snprintf(what, sizeof what, "ref d bias %s", d);
        gc_fd_check(what, conv_loss, &f, f.b, k->O, db, 1e-5, 1e-7);
        free(f.x); free(f.w); free(f.b); free(f.r); free(dx); free(dw); free(db);
    }
}

/* ---- (2) device vs CPU backward */

static int count_ops(vkl_graph *g, const char *op)
{
    int n = 0;
    for (int i = 0; i < vkl_graph_node_count(g); i++) n += !strcmp(vkl_graph_node_at(g, i)->op, op);
    return n;
}

/* wrt_w: also differentiate w.r.t. the weight and bias (else they are frozen
 * and no weight-gradient node may appear). segment: the convolution is a
 * checkpoint segment, recomputed in backward. */
static void device_case_expect(vkl_ctx *c, vkl_test_rng *r, const gcase *k, const vkl_conv2d_tile *tile, int wrt_w,
                               int segment, const char *expect_op, int expect_min)
{
    int64_t nx = k->N * k->C * k->H * k->W, nw = k->O * k->C * k->kh * k->kw, Ho = out_h(k), Wo = out_w(k);
    int64_t ny = k->N * k->O * Ho * Wo;
    float *xst = opc_random(r, VKL_F32, (size_t)nx, -1, 1), *w = opc_random(r, k->wdt, (size_t)nw, -1, 1);
    float *b = opc_random(r, VKL_F32, (size_t)k->O, -1, 1), *rr = opc_random(r, VKL_F32, (size_t)ny, -1, 1);
    /* stored [N,C,W,H] when permuted; the view is [N,C,H,W] */
    int64_t store[4] = {k->N, k->C, k->transposed ? k->W : k->H, k->transposed ? k->H : k->W};
    int64_t ws[4] = {k->O, k->C, k->kh, k->kw}, bs[1] = {k->O}, ys[4] = {k->N, k->O, Ho, Wo};
    vkl_tensor *tx = opc_upload_f32(c, VKL_F32, 4, store, xst), *tw = opc_upload_f32(c, k->wdt, 4, ws, w);
    vkl_tensor *tb = opc_upload_f32(c, VKL_F32, 1, bs, b), *tr = opc_upload_f32(c, VKL_F32, 4, ys, rr);
    vkl_graph *g = vkl_graph_new(c);
    if (segment) vkl_graph_segment_begin(g);
    vkl_tensor *xin = k->transposed ? vkl_permute(g, tx, (int[]){0, 1, 3, 2}) : tx;
    vkl_tensor *y = vkl_conv2d_build(g, "conv2d", xin, tw, k->bias ? tb : NULL, &k->p, NULL, NULL, NULL, tile);
    if (segment) vkl_graph_segment_end(g);
    vkl_tensor *wrt[3] = {tx, wrt_w ? tw : NULL, wrt_w && k->bias ? tb : NULL};
    float *got[3];
    gc_run_backward(c, g, y, tr, wrt, 3, got);
    if (!wrt_w) assert_int_equal(count_ops(g, "conv2d_dw"), 0);
    if (expect_op && count_ops(g, expect_op) < expect_min) {
        print_error("expected at least %d %s nodes, found %d\n", expect_min, expect_op, count_ops(g, expect_op));
        fail();
    }

    /* logical x [N,C,H,W] in double */
    double *x = malloc(sizeof(double) * (size_t)nx);
    for (int64_t n = 0; n < k->N; n++)
        for (int64_t ch = 0; ch < k->C; ch++)
            for (int64_t i = 0; i < k->H; i++)
                for (int64_t j = 0; j < k->W; j++) {
                    int64_t li = ((n * k->C + ch) * k->H + i) * k->W + j;
                    int64_t si = k->transposed ? ((n * k->C + ch) * k->W + j) * k->H + i : li;
                    x[li] = xst[si];
                }
    double *wd = gc_f64(w, nw), *dy = gc_f64(rr, ny);
    double *dx = malloc(sizeof(double) * (size_t)nx), *dw = malloc(sizeof(double) * (size_t)nw);
    double *db = malloc(sizeof(double) * (size_t)k->O);
    ref_backward(k, x, wd, dy, dx, dw, db);
    /* the device's d x is in the stored layout */
    double *dxs = malloc(sizeof(double) * (size_t)nx);
    for (int64_t n = 0; n < k->N; n++)
        for (int64_t ch = 0; ch < k->C; ch++)
            for (int64_t i = 0; i < k->H; i++)
                for (int64_t j = 0; j < k->W; j++) {
                    int64_t li = ((n * k->C + ch) * k->H + i) * k->W + j;
                    dxs[k->transposed ? ((n * k->C + ch) * k->W + j) * k->H + i : li] = dx[li];
                }
    char d[160], what[220];
    describe(k, vkl_ctx_caps(c)->profile, d, sizeof d);
    snprintf(what, sizeof what, "d x %s%s", d, segment ? " checkpointed" : "");
    gc_assert(what, got[0], dxs, nx, 1e-5);
    if (wrt_w) {
        snprintf(what, sizeof what, "d w %s", d);
        gc_assert(what, got[1], dw, nw, 1e-5);
        if (k->bias) {
            snprintf(what, sizeof what, "d bias %s", d);
            gc_assert(what, got[2], db, k->O, 1e-5);
        }
    }
    for (int i = 0; i < 3; i++) free(got[i]);
    free(xst); free(w); free(b); free(rr); free(x); free(wd); free(dy); free(dx); free(dw); free(db); free(dxs);
    vkl_graph_free(g);
    vkl_tensor_free(tx); vkl_tensor_free(tw); vkl_tensor_free(tb); vkl_tensor_free(tr);
}

static void device_case(vkl_ctx *c, vkl_test_rng *r, const gcase *k, const vkl_conv2d_tile *tile, int wrt_w,
                        int segment)
{
    device_case_expect(c, r, k, tile, wrt_w, segment, NULL, 0);
}

static gcase random_case(vkl_test_rng *r, int trial)
{
    static const int64_t ks[] = {1, 3, 5};
    gcase k;
    memset(&k, 0, sizeof k);
    k.N = 2;
    k.C = vkl_test_rng_int(r, 1, 17);
    k.O = vkl_test_rng_int(r, 1, 17);
    k.kh = ks[trial % 3];
    k.kw = trial % 5 == 4 ? ks[(trial + 1) % 3] : k.kh;
    k.H = 2 * vkl_test_rng_int(r, 2, 7) + 1;
    k.W = 2 * vkl_test_rng_int(r, 2, 7) + 1;
    k.p.stride_h = 1 + (trial / 3) % 2;
    k.p.stride_w = trial % 4 == 1 ? 3 - k.p.stride_h : k.p.stride_h;
    int hh = (int)k.kh / 2, hw = (int)k.kw / 2;
    k.p.pad_top = vkl_test_rng_int(r, 0, hh + 1);
    k.p.pad_bottom = vkl_test_rng_int(r, 0, hh + 1);
    k.p.pad_left = vkl_test_rng_int(r, 0, hw);
    k.p.pad_right = vkl_test_rng_int(r, 0, hw + 1);
    k.wdt = trial % 3 == 1 ? VKL_F16 : trial % 6 == 2 ? VKL_BF16 : VKL_F32;
    k.bias = trial % 4 != 2;
    k.transposed = trial % 3 == 2;
    if (trial % 6 == 3) {
        /* the forward's 1x1 matmul path: stride 1, no padding, contiguous x */
        k.kh = k.kw = 1;
        k.p = (vkl_conv2d_params){1, 1, 0, 0, 0, 0};
        k.transposed = 0;
    }
    return k;
}

static void conv2d_grad_random_shapes(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 82);
    for (int pi = 0; pi < vkl_test_profile_count; pi++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[pi]);
        for (int trial = 0; trial < 12; trial++) {
            gcase k = random_case(&r, trial);
            device_case(c, &r, &k, NULL, trial % 5 != 1, 0);
        }
        vkl_test_ctx_done(c);
    }
}

/* The tiles GPUs get (and an odd one), run on the test device. */
static void conv2d_grad_forced_tiles(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 83);
    static const vkl_conv2d_tile tiles[] = {{64, 4, 4}, {8, 3, 5}};
    vkl_ctx *c = vkl_test_ctx(NULL);
    for (int trial = 0; trial < 6; trial++) {
        gcase k = random_case(&r, trial);
        if (trial % 6 == 3) k.kh = k.kw = 3; /* keep the conv kernel, not the matmul path */
        device_case(c, &r, &k, &tiles[trial % 2], 1, 0);
    }
    vkl_test_ctx_done(c);
}

/* 64 KiB bindings: d x with images bound one by one, input-channel windows
 * and output-channel ranges accumulated by later nodes; d w per image with
 * channel windows; a forward split into input-channel nodes, plain and
 * replayed as a checkpoint segment. */
static void conv2d_grad_small_bindings(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 84);
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    static const gcase cases[] = {
        {2, 40, 21, 21, 37, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F32, 1, 0}, /* forward in 2 input-channel nodes */
        {2, 9, 41, 45, 11, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F16, 1, 1},  /* dy per image 81 KB: 2 dx nodes */
        {2, 17, 33, 35, 5, 3, 3, {2, 2, 0, 1, 0, 1}, VKL_F32, 0, 0},  /* x per image 78 KB, VAE-style stride 2 */
    };
    device_case_expect(c, &r, &cases[0], NULL, 1, 0, "conv2d", 2);
    device_case_expect(c, &r, &cases[1], NULL, 1, 0, "conv2d_dx", 2);
    device_case_expect(c, &r, &cases[2], NULL, 1, 0, "conv2d_dw", 2);
    /* replayed: the recomputed channel-range nodes accumulate into a new tensor */
    device_case_expect(c, &r, &cases[0], NULL, 1, 1, "conv2d", 4);
    vkl_test_ctx_done(c);
}

/* ---- (3) conv2d_lora */

typedef struct {
    gcase k;
    int64_t R;
    double *x, *w, *a, *b, *s, *bias, *r;
} lora_fd;

/* W' = W + sum_r s_r B[:, r] A[r, :] */
static void merged(const lora_fd *f, double *wm)
{
    int64_t K = f->k.C * f->k.kh * f->k.kw;
    for (int64_t o = 0; o < f->k.O; o++)
        for (int64_t q = 0; q < K; q++) {
            double v = f->w[o * K + q];
            for (int64_t r = 0; r < f->R; r++) v += f->s[r] * f->b[o * f->R + r] * f->a[r * K + q];
            wm[o * K + q] = v;
        }
}

static double lora_loss(void *u)
{
    lora_fd *f = u;
    const gcase *k = &f->k;
    double *wm = malloc(sizeof(double) * (size_t)(k->O * k->C * k->kh * k->kw));
    merged(f, wm);
    fd_conv cf = {k, f->x, wm, k->bias ? f->bias : NULL, f->r};
    double s = conv_loss(&cf);
    free(wm);
    return s;
}

/* Chain rule through the merged weight: dx, dA, dB, ds from d W'. */
static void lora_chain(const lora_fd *f, double *dx, double *da, double *db, double *ds)
{
    const gcase *k = &f->k;
    int64_t K = k->C * k->kh * k->kw, R = f->R;
    double *wm = malloc(sizeof(double) * (size_t)(k->O * K)), *dwm = malloc(sizeof(double) * (size_t)(k->O * K));
    merged(f, wm);
    ref_backward(k, f->x, wm, f->r, dx, dwm, NULL);
    for (int64_t r = 0; r < R; r++) {
        ds[r] = 0;
        for (int64_t q = 0; q < K; q++) {
            double v = 0;
            for (int64_t o = 0; o < k->O; o++) v += f->b[o * R + r] * dwm[o * K + q];
            da[r * K + q] = f->s[r] * v;
            ds[r] += v * f->a[r * K + q];
        }
        for (int64_t o = 0; o < k->O; o++) {
            double v = 0;
            for (int64_t q = 0; q < K; q++) v += dwm[o * K + q] * f->a[r * K + q];
            db[o * R + r] = f->s[r] * v;
        }
    }
    free(wm);
    free(dwm);
}

static lora_fd lora_make(vkl_test_rng *r, const gcase *k, int64_t R, vkl_dtype adt, float **hx, float **hw,
                         float **ha, float **hb, float **hs, float **hbias, float **hr)
{
    lora_fd f;
    memset(&f, 0, sizeof f);
    f.k = *k;
    f.R = R;
    int64_t K = k->C * k->kh * k->kw, nx = k->N * k->C * k->H * k->W, ny = k->N * k->O * out_h(k) * out_w(k);
    *hx = opc_random(r, VKL_F32, (size_t)nx, -1, 1);
    *hw = opc_random(r, k->wdt, (size_t)(k->O * K), -1, 1);
    *ha = opc_random(r, adt, (size_t)(R * K), -1, 1);
    *hb = opc_random(r, adt, (size_t)(k->O * R), -1, 1);
    *hs = opc_random(r, VKL_F32, (size_t)R, -1.5f, 1.5f);
    *hbias = opc_random(r, VKL_F32, (size_t)k->O, -1, 1);
    *hr = opc_random(r, VKL_F32, (size_t)ny, -1, 1);
    f.x = gc_f64(*hx, nx);
    f.w = gc_f64(*hw, k->O * K);
    f.a = gc_f64(*ha, R * K);
    f.b = gc_f64(*hb, k->O * R);
    f.s = gc_f64(*hs, R);
    f.bias = gc_f64(*hbias, k->O);
    f.r = gc_f64(*hr, ny);
    return f;
}

static void lora_free(lora_fd *f)
{
    free(f->x); free(f->w); free(f->a); free(f->b); free(f->s); free(f->bias); free(f->r);
}

static void lora_chain_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 85);
    gcase k = {2, 3, 7, 6, 4, 3, 3, {2, 1, 1, 0, 1, 1}, VKL_F32, 1, 0};
    float *hx, *hw, *ha, *hb, *hs, *hbias, *hr;
    lora_fd f = lora_make(&r, &k, 3, VKL_F32, &hx, &hw, &ha, &hb, &hs, &hbias, &hr);
    int64_t K = k.C * 9, nx = k.N * k.C * k.H * k.W;
    double *dx = malloc(sizeof(double) * (size_t)nx), *da = malloc(sizeof(double) * (size_t)(3 * K));
    double *db = malloc(sizeof(double) * (size_t)(k.O * 3)), ds[3];
    lora_chain(&f, dx, da, db, ds);
    gc_fd_check("lora chain d x", lora_loss, &f, f.x, nx, dx, 1e-5, 1e-7);
    gc_fd_check("lora chain d down", lora_loss, &f, f.a, 3 * K, da, 1e-5, 1e-7);
    gc_fd_check("lora chain d up", lora_loss, &f, f.b, k.O * 3, db, 1e-5, 1e-7);
    gc_fd_check("lora chain d rank_scale", lora_loss, &f, f.s, 3, ds, 1e-5, 1e-7);
    free(dx); free(da); free(db);
    free(hx); free(hw); free(ha); free(hb); free(hs); free(hbias); free(hr);
    lora_free(&f);
}

static void lora_device_case(vkl_ctx *c, vkl_test_rng *r, const gcase *k, int64_t R, vkl_dtype adt)
{
    float *hx, *hw, *ha, *hb, *hs, *hbias, *hr;
    lora_fd f = lora_make(r, k, R, adt, &hx, &hw, &ha, &hb, &hs, &hbias, &hr);
    int64_t K = k->C * k->kh * k->kw, nx = k->N * k->C * k->H * k->W;
    int64_t xs[4] = {k->N, k->C, k->H, k->W}, ws[4] = {k->O, k->C, k->kh, k->kw}, bs[1] = {k->O};
    int64_t as[4] = {R, k->C, k->kh, k->kw}, us[4] = {k->O, R, 1, 1}, ss[1] = {R};
    int64_t ys[4] = {k->N, k->O, out_h(k), out_w(k)};
    vkl_tensor *tx = opc_upload_f32(c, VKL_F32, 4, xs, hx), *tw = opc_upload_f32(c, k->wdt, 4, ws, hw);
    vkl_tensor *tb = opc_upload_f32(c, VKL_F32, 1, bs, hbias), *ta = opc_upload_f32(c, adt, 4, as, ha);
    vkl_tensor *tu = opc_upload_f32(c, adt, 4, us, hb), *ts = opc_upload_f32(c, VKL_F32, 1, ss, hs);
    vkl_tensor *tr = opc_upload_f32(c, VKL_F32, 4, ys, hr);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_conv2d_lora(g, tx, tw, k->bias ? tb : NULL, &k->p, ta, tu, ts);
    vkl_tensor *wrt[4] = {tx, ta, tu, ts};
    float *got[4];
    gc_run_backward(c, g, y, tr, wrt, 4, got);
    double *dx = malloc(sizeof(double) * (size_t)nx), *da = malloc(sizeof(double) * (size_t)(R * K));
    double *db = malloc(sizeof(double) * (size_t)(k->O * R)), *ds = malloc(sizeof(double) * (size_t)R);
    lora_chain(&f, dx, da, db, ds);
    char d[160], what[220];
    describe(k, vkl_ctx_caps(c)->profile, d, sizeof d);
    snprintf(what, sizeof what, "lora d x %s", d);
    gc_assert(what, got[0], dx, nx, 1e-5);
    snprintf(what, sizeof what, "lora d down %s", d);
    gc_assert(what, got[1], da, R * K, 1e-5);
    snprintf(what, sizeof what, "lora d up %s", d);
    gc_assert(what, got[2], db, k->O * R, 1e-5);
    snprintf(what, sizeof what, "lora d rank_scale %s", d);
    gc_assert(what, got[3], ds, R, 1e-5);
    for (int i = 0; i < 4; i++) free(got[i]);
    free(dx); free(da); free(db); free(ds);
    free(hx); free(hw); free(ha); free(hb); free(hs); free(hbias); free(hr);
    lora_free(&f);
    vkl_graph_free(g);
    vkl_tensor_free(tx); vkl_tensor_free(tw); vkl_tensor_free(tb); vkl_tensor_free(ta);
    vkl_tensor_free(tu); vkl_tensor_free(ts); vkl_tensor_free(tr);
}

static void conv2d_lora_grad_matches_merged(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 86);
    for (int pi = 0; pi < vkl_test_profile_count; pi++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[pi]);
        for (int trial = 0; trial < 5; trial++) {
            gcase k = random_case(&r, trial);
            k.transposed = 0;
            lora_device_case(c, &r, &k, 1 + trial * 2, (vkl_dtype)(trial % 3));
        }
        vkl_test_ctx_done(c);
    }
    vkl_ctx *c = vkl_test_ctx("binding=64K");
    gcase k = {2, 9, 41, 45, 11, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F16, 1, 0};
    lora_device_case(c, &r, &k, 8, VKL_F32);
    vkl_test_ctx_done(c);
}

/* ---- (4) layout ops */

static void layout_grads_match_reference(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 87);
    const char *profiles[] = {"default", "portable", "binding=64K"};
    for (int pi = 0; pi < 3; pi++) {
        vkl_ctx *c = vkl_test_ctx(profiles[pi]);
        /* upsample of a permuted view (through contiguous), concat along channels */
        int64_t N = 2, C = 5, H = pi == 2 ? 41 : 7, W = pi == 2 ? 43 : 9, C2 = 3;
        int64_t st[4] = {N, C, W, H}, ks[4] = {N, C2, 2 * H, 2 * W}, ys[4] = {N, C + C2, 2 * H, 2 * W};
        int64_t nx = N * C * H * W, nk = N * C2 * 4 * H * W, ny = N * (C + C2) * 4 * H * W;
        float *hx = opc_random(&r, VKL_F32, (size_t)nx, -1, 1), *hk = opc_random(&r, VKL_F32, (size_t)nk, -1, 1);
        float *hr = opc_random(&r, VKL_F32, (size_t)ny, -1, 1);
        vkl_tensor *tx = opc_upload_f32(c, VKL_F32, 4, st, hx), *tk = opc_upload_f32(c, VKL_F32, 4, ks, hk);
        vkl_tensor *tr = opc_upload_f32(c, VKL_F32, 4, ys, hr);
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *v = vkl_contiguous(g, vkl_permute(g, tx, (int[]){0, 1, 3, 2}));
        vkl_tensor *y = vkl_concat(g, vkl_upsample_nearest2x(g, v), tk, 1);
        vkl_tensor *wrt[2] = {tx, tk};
        float *got[2];
        gc_run_backward(c, g, y, tr, wrt, 2, got);
        /* dy's slices: upsampled part then skip part */
        double *du = malloc(sizeof(double) * (size_t)(nx * 4)), *dk = malloc(sizeof(double) * (size_t)nk);
        double *dv = malloc(sizeof(double) * (size_t)nx), *dx = malloc(sizeof(double) * (size_t)nx);
        int64_t plane = 4 * H * W;
        for (int64_t n = 0; n < N; n++) {
            for (int64_t i = 0; i < C * plane; i++) du[n * C * plane + i] = hr[n * (C + C2) * plane + i];
            for (int64_t i = 0; i < C2 * plane; i++) dk[n * C2 * plane + i] = hr[(n * (C + C2) + C) * plane + i];
        }
        vkl_ref_upsample_nearest2x_backward(du, N, C, H, W, dv);
        for (int64_t n = 0; n < N * C; n++)
            for (int64_t i = 0; i < H; i++)
                for (int64_t j = 0; j < W; j++) dx[(n * W + j) * H + i] = dv[(n * H + i) * W + j];
        char what[96];
        snprintf(what, sizeof what, "upsample(contiguous(permuted x)) d x (%s)", profiles[pi]);
        gc_assert(what, got[0], dx, nx, 1e-6);
        snprintf(what, sizeof what, "concat d skip (%s)", profiles[pi]);
        gc_assert(what, got[1], dk, nk, 0);
        free(got[0]); free(got[1]); free(hx); free(hk); free(hr); free(du); free(dk); free(dv); free(dx);
        vkl_graph_free(g);
        vkl_tensor_free(tx); vkl_tensor_free(tk); vkl_tensor_free(tr);
        vkl_test_ctx_done(c);
    }
}

/* ---- (5) end to end */

enum { EN = 2, EC = 3, EH = 5, EW = 7, EO = 4, ER = 2, EG = 2, ES = 3, EO2 = 5 };

typedef struct {
    double x[EN * EC * EH * EW], w[EO * EC * 9], a[ER * EC * 9], b[EO * ER], s[ER], bias[EO];
    double gg[EO], gb[EO], skip[EN * ES * 4 * EH * EW], w2[EO2 * (EO + ES)], b2[EO2];
} e2e;

static double e2e_loss(void *u)
{
    e2e *k = u;
    static const gcase c1 = {EN, EC, EH, EW, EO, 3, 3, {1, 1, 1, 1, 1, 1}, VKL_F32, 1, 0};
    lora_fd f = {c1, ER, k->x, k->w, k->a, k->b, k->s, k->bias, NULL};
    double wm[EO * EC * 9], h1[EN * EO * EH * EW], h2[EN * EO * EH * EW], cat[EN * (EO + ES) * 4 * EH * EW];
    double out[EN * EO2 * 4 * EH * EW];
    merged(&f, wm);
    int64_t xs[4] = {EN, EC, EH, EW};
    vkl_ref_conv2d_f64(k->x, xs, wm, EO, 3, 3, k->bias, 1, 1, 1, 1, 1, 1, h1);
    vkl_ref_group_norm_f64(h1, EN, EO, EH * EW, EG, 1e-5, k->gg, k->gb, 1, h2);
    int64_t P = 4 * EH * EW;
    for (int n = 0; n < EN; n++) {
        for (int ch = 0; ch < EO; ch++)
            for (int i = 0; i < 2 * EH; i++)
                for (int j = 0; j < 2 * EW; j++)
                    cat[((n * (EO + ES) + ch) * 2 * EH + i) * 2 * EW + j] = h2[((n * EO + ch) * EH + i / 2) * EW + j / 2];
        for (int64_t i = 0; i < ES * P; i++) cat[(n * (EO + ES) + EO) * P + i] = k->skip[n * ES * P + i];
    }
    int64_t cs[4] = {EN, EO + ES, 2 * EH, 2 * EW};
    vkl_ref_conv2d_f64(cat, cs, k->w2, EO2, 1, 1, k->b2, 1, 1, 0, 0, 0, 0, out);
    double s = 0;
    for (int i = 0; i < EN * EO2 * 4 * EH * EW; i++) s += out[i];
    return s;
}

static void numeric(e2e *k, double *v, int64_t n, double *out)
{
    for (int64_t i = 0; i < n; i++) {
        double keep = v[i], h = 1e-6;
        v[i] = keep + h;
        double lp = e2e_loss(k);
        v[i] = keep - h;
        double lm = e2e_loss(k);
        v[i] = keep;
        out[i] = (lp - lm) / (2 * h);
    }
}

static void end_to_end_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 88);
    static e2e k;
    float hx[EN * EC * EH * EW], hw[EO * EC * 9], ha[ER * EC * 9], hb[EO * ER], hs[ER], hbias[EO], hgg[EO], hgb[EO];
    static float hskip[EN * ES * 4 * EH * EW];
    float hw2[EO2 * (EO + ES)], hb2[EO2];
    vkl_test_fill(&r, hx, EN * EC * EH * EW, -1, 1);
    vkl_test_fill(&r, hw, EO * EC * 9, -0.5f, 0.5f);
    opc_round_to(VKL_F16, hw, EO * EC * 9);
    vkl_test_fill(&r, ha, ER * EC * 9, -0.5f, 0.5f);
    vkl_test_fill(&r, hb, EO * ER, -0.5f, 0.5f);
    hs[0] = 0.75f;
    hs[1] = -1.25f;
    vkl_test_fill(&r, hbias, EO, -0.5f, 0.5f);
    vkl_test_fill(&r, hgg, EO, 0.5f, 1.5f);
    vkl_test_fill(&r, hgb, EO, -0.5f, 0.5f);
    vkl_test_fill(&r, hskip, EN * ES * 4 * EH * EW, -1, 1);
    vkl_test_fill(&r, hw2, EO2 * (EO + ES), -1, 1);
    vkl_test_fill(&r, hb2, EO2, -0.5f, 0.5f);
#define CP(dst, src, n) for (int i_ = 0; i_ < (n); i_++) (dst)[i_] = (src)[i_]
    CP(k.x, hx, EN * EC * EH * EW); CP(k.w, hw, EO * EC * 9); CP(k.a, ha, ER * EC * 9); CP(k.b, hb, EO * ER);
    CP(k.s, hs, ER); CP(k.bias, hbias, EO); CP(k.gg, hgg, EO); CP(k.gb, hgb, EO);
    CP(k.skip, hskip, EN * ES * 4 * EH * EW); CP(k.w2, hw2, EO2 * (EO + ES)); CP(k.b2, hb2, EO2);
#undef CP
    double nx[EN * EC * EH * EW], na[ER * EC * 9], nb[EO * ER];
    numeric(&k, k.x, EN * EC * EH * EW, nx);
    numeric(&k, k.a, ER * EC * 9, na);
    numeric(&k, k.b, EO * ER, nb);
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        int64_t xs[4] = {EN, EC, EH, EW}, ws[4] = {EO, EC, 3, 3}, as[4] = {ER, EC, 3, 3}, us[4] = {EO, ER, 1, 1};
        int64_t rs[1] = {ER}, os[1] = {EO}, ks[4] = {EN, ES, 2 * EH, 2 * EW}, w2s[4] = {EO2, EO + ES, 1, 1};
        int64_t o2s[1] = {EO2};
        vkl_tensor *X = opc_upload_f32(c, VKL_F32, 4, xs, hx), *Wt = opc_upload_f32(c, VKL_F16, 4, ws, hw);
        vkl_tensor *A = opc_upload_f32(c, VKL_F32, 4, as, ha), *B = opc_upload_f32(c, VKL_F32, 4, us, hb);
        vkl_tensor *S = opc_upload_f32(c, VKL_F32, 1, rs, hs), *Bi = opc_upload_f32(c, VKL_F32, 1, os, hbias);
        vkl_tensor *GG = opc_upload_f32(c, VKL_F32, 1, os, hgg), *GB = opc_upload_f32(c, VKL_F32, 1, os, hgb);
        vkl_tensor *SK = opc_upload_f32(c, VKL_F32, 4, ks, hskip), *W2 = opc_upload_f32(c, VKL_F32, 4, w2s, hw2);
        vkl_tensor *B2 = opc_upload_f32(c, VKL_F32, 1, o2s, hb2);
        vkl_graph *g = vkl_graph_new(c);
        /* the second profile also recomputes the block as a checkpoint segment */
        if (p == 1) vkl_graph_segment_begin(g);
        vkl_conv2d_params p1 = {1, 1, 1, 1, 1, 1};
        vkl_tensor *h = vkl_conv2d_lora(g, X, Wt, Bi, &p1, A, B, S);
        h = vkl_upsample_nearest2x(g, vkl_group_norm(g, h, EG, 1e-5f, GG, GB, 1));
        h = vkl_conv2d(g, vkl_concat(g, h, SK, 1), W2, B2, 1, 0);
        if (p == 1) vkl_graph_segment_end(g);
        vkl_tensor *loss = vkl_sum_rows(g, vkl_reshape(g, h, 2, (int64_t[]){1, EN * EO2 * 4 * EH * EW}));
        vkl_tensor *wrt[3] = {X, A, B};
        float *got[3];
        gc_run_backward(c, g, loss, NULL, wrt, 3, got);
        char what[96];
        snprintf(what, sizeof what, "end to end d x (%s%s)", vkl_ctx_caps(c)->profile, p == 1 ? ", checkpointed" : "");
        gc_assert(what, got[0], nx, EN * EC * EH * EW, 2e-4);
        snprintf(what, sizeof what, "end to end d down (%s)", vkl_ctx_caps(c)->profile);
        gc_assert(what, got[1], na, ER * EC * 9, 2e-4);
        snprintf(what, sizeof what, "end to end d up (%s)", vkl_ctx_caps(c)->profile);
        gc_assert(what, got[2], nb, EO * ER, 2e-4);
        for (int i = 0; i < 3; i++) free(got[i]);
        vkl_graph_free(g);
        vkl_tensor_free(X); vkl_tensor_free(Wt); vkl_tensor_free(A); vkl_tensor_free(B); vkl_tensor_free(S);
        vkl_tensor_free(Bi); vkl_tensor_free(GG); vkl_tensor_free(GB); vkl_tensor_free(SK); vkl_tensor_free(W2);
        vkl_tensor_free(B2);
        vkl_test_ctx_done(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ref_backward_matches_finite_differences),
        cmocka_unit_test(conv2d_grad_random_shapes),
        cmocka_unit_test(conv2d_grad_forced_tiles),
        cmocka_unit_test(conv2d_grad_small_bindings),
        cmocka_unit_test(lora_chain_matches_finite_differences),
        cmocka_unit_test(conv2d_lora_grad_matches_merged),
        cmocka_unit_test(layout_grads_match_reference),
        cmocka_unit_test(end_to_end_matches_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
