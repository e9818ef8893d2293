/* The a1111 (k-diffusion) Heun, LMS, DPM++ 2M SDE and DPM++ SDE samplers
 * against k-diffusion's step equations (sample_heun, sample_lms,
 * sample_dpmpp_2m_sde with the midpoint solver, sample_dpmpp_sde with r = 1/2,
 * at commit 4601bf0 as the refkit's kdiff README names it), written out here
 * on their own in float32, with a fixed function of the recorded loop
 * outputs of refkit/sd/vectors/schedulers.safetensors as the "UNet":
 *   eps_uncond = 0.5 * c_in x + 0.5 * E[call],  eps_cond = 0.5 * c_in x + 0.5 * E[call + 20]
 * guided on the denoised predictions at scale 3, as A1111 guides.
 *
 * Noise: k-diffusion's BrownianTreeNoiseSampler returns
 * (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|) of one Brownian
 * motion W. Here W is a list of sampled points: a new point below all known
 * ones extends the path by sqrt(gap) * z with z taken in order from the
 * seed's Brownian stream (vkl_rng), which is how sampler_sde.c defines its
 * noise; the sampler's composition of draws is checked against this
 * point-wise path. Every model input, sigma and timestep of every evaluation
 * and the final latents must agree within 1e-5 of the largest value. */
#include "vkl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "rng.h"
#include "sd/sampler.h"

#define LOOPS "refkit/sd/vectors/schedulers.safetensors"
#define REL 1e-5
#define GUIDE 3.0f
#define MAXCALLS 40

static float lg(float x) { return (float)log((double)x); }
static float ex(float x) { return (float)exp((double)x); }
static float em1(float x) { return (float)expm1((double)x); }

static float max_abs(const float *a, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i]));
    return m;
}

/* ---- the "UNet" and what the reference records of each call ---- */
typedef struct {
    size_t n;
    const float *E; /* [40][n] */
    int calls;
    float *inputs;  /* [MAXCALLS][n] c_in * x of each call */
    float sigmas[MAXCALLS];
} ref_model;

/* eps of the two halves for input x_in at call k */
static void unet(const ref_model *m, int k, const float *x_in, float *eu, float *ec)
{
    const float *a = m->E + (size_t)(k % 40) * m->n, *b = m->E + (size_t)((k + 20) % 40) * m->n;
    for (size_t j = 0; j < m->n; j++) {
        eu[j] = 0.5f * x_in[j] + 0.5f * a[j];
        ec[j] = 0.5f * x_in[j] + 0.5f * b[j];
    }
}

/* CompVisDenoiser + A1111's CFG denoiser: guided x0 of x at sigma. */
static void denoise(ref_model *m, const float *x, float sigma, float *den)
{
    const size_t n = m->n;
    if (m->calls >= MAXCALLS) fail_msg("reference made more than %d model calls", MAXCALLS);
    float c_in = 1.0f / sqrtf(sigma * sigma + 1.0f);
    float *x_in = m->inputs + (size_t)m->calls * n;
    for (size_t j = 0; j < n; j++) x_in[j] = x[j] * c_in;
    float *eu = malloc(n * sizeof *eu), *ec = malloc(n * sizeof *ec);
    assert_true(eu && ec);
    unet(m, m->calls, x_in, eu, ec);
    for (size_t j = 0; j < n; j++) {
        float du = x[j] + eu[j] * -sigma, dc = x[j] + ec[j] * -sigma;
        den[j] = du + GUIDE * (dc - du);
    }
    m->sigmas[m->calls++] = sigma;
    free(eu);
    free(ec);
}

/* ---- a Brownian motion over sigma, sampled at the points asked for ---- */
typedef struct {
    size_t n;
    int np;
    float t[2 * MAXCALLS + 2];
    double *w[2 * MAXCALLS + 2];
    vkl_rng rng;
    float *z;
} bpath;

static const double *bpath_at(bpath *b, float t)
{
    for (int k = 0; k < b->np; k++)
        if (b->t[k] == t) return b->w[k];
    assert_true(b->np < 2 * MAXCALLS + 2);
    double *w = calloc(b->n, sizeof *w);
    assert_non_null(w);
    if (b->np) {
        int lo = 0;
        for (int k = 1; k < b->np; k++)
            if (b->t[k] < b->t[lo]) lo = k;
        if (!(t < b->t[lo]))
            fail_msg("sampler asked for W(%g) inside the known path (lowest %g): needs a bridge",
                     (double)t, (double)b->t[lo]);
        vkl_rng_normal(&b->rng, b->z, b->n);
        double sd = sqrt((double)b->t[lo] - (double)t);
        for (size_t j = 0; j < b->n; j++) w[j] = b->w[lo][j] + sd * b->z[j];
    }
    b->t[b->np] = t;
    b->w[b->np++] = w;
    return w;
}

/* BrownianTreeNoiseSampler(sigma, sigma_next) */
static void bpath_noise(bpath *b, float sigma, float sigma_next, float *out)
{
    const double *w0 = bpath_at(b, sigma), *w1 = bpath_at(b, sigma_next);
    double sc = sqrt(fabs((double)sigma_next - (double)sigma));
    for (size_t j = 0; j < b->n; j++) out[j] = (float)((w1[j] - w0[j]) / sc);
}

static void bpath_free(bpath *b)
{
    for (int k = 0; k < b->np; k++) free(b->w[k]);
    free(b->z);
}

/* get_ancestral_step(sigma_from, sigma_to, eta) */
static void anc(float from, float to, float eta, float *down, float *up)
{
    if (eta == 0.0f) {
        *down = to;
        *up = 0.0f;
        return;
    }
    *up = fminf(to, eta * sqrtf(to * to * (from * from - to * to) / (from * from)));
    *down = sqrtf(to * to - *up * *up);
}

/* ---- the samplers, step by step as k-diffusion writes them ---- */

static void ref_heun(ref_model *m, const float *sig, int steps, float *x)
{
    const size_t n = m->n;
    float *den = malloc(n * 4), *d = malloc(n * 4), *x2 = malloc(n * 4);
    for (int i = 0; i < steps; i++) {
        denoise(m, x, sig[i], den);
        for (size_t j = 0; j < n; j++) d[j] = (x[j] - den[j]) / sig[i];
        float dt = sig[i + 1] - sig[i];
        if (sig[i + 1] == 0.0f) {
            for (size_t j = 0; j < n; j++) x[j] = x[j] + d[j] * dt;
        } else {
            for (size_t j = 0; j < n; j++) x2[j] = x[j] + d[j] * dt;
            denoise(m, x2, sig[i + 1], den);
            for (size_t j = 0; j < n; j++) {
                float d2 = (x2[j] - den[j]) / sig[i + 1];
                float dp = (d[j] + d2) / 2;
                x[j] = x[j] + dp * dt;
            }
        }
    }
    free(den);
    free(d);
    free(x2);
}

/* linear_multistep_coeff: the Lagrange basis polynomial of node j expanded in
 * powers of (tau - t[i]) and integrated term by term over [t[i], t[i+1]]. */
static double lms_coeff(const float *t, int order, int i, int j)
{
    double poly[4] = {1, 0, 0, 0}; /* coefficients of (tau - t_i)^p */
    int deg = 0;
    double denom = 1;
    for (int k = 0; k < order; k++) {
        if (k == j) continue;
        /* multiply by (tau - t[i-k]) = (tau - t_i) + (t_i - t[i-k]) */
        double c = (double)t[i] - (double)t[i - k];
        for (int p = deg + 1; p >= 0; p--) poly[p] = (p ? poly[p - 1] : 0) + c * poly[p];
        deg++;
        denom *= (double)t[i - j] - (double)t[i - k];
    }
    double h = (double)t[i + 1] - (double)t[i], sum = 0, hp = h;
    for (int p = 0; p <= deg; p++, hp *= h) sum += poly[p] * hp / (p + 1);
    return sum / denom;
}

static void ref_lms(ref_model *m, const float *sig, int steps, float *x)
{
    const size_t n = m->n;
    float *ds[4], *den = malloc(n * 4);
    for (int k = 0; k < 4; k++) ds[k] = malloc(n * 4);
    int nd = 0;
    for (int i = 0; i < steps; i++) {
        denoise(m, x, sig[i], den);
        /* ds[0] is the newest */
        float *d = ds[3];
        memmove(ds + 1, ds, 3 * sizeof *ds);
        ds[0] = d;
        for (size_t j = 0; j < n; j++) d[j] = (x[j] - den[j]) / sig[i];
        if (nd < 4) nd++;
        int order = i + 1 < 4 ? i + 1 : 4;
        assert_int_equal(order, nd);
        float c[4];
        for (int k = 0; k < order; k++) c[k] = (float)lms_coeff(sig, order, i, k);
        for (size_t j = 0; j < n; j++) {
            float acc = c[0] * ds[0][j];
            for (int k = 1; k < order; k++) acc = acc + c[k] * ds[k][j];
            x[j] = x[j] + acc;
        }
    }
    for (int k = 0; k < 4; k++) free(ds[k]);
    free(den);
}

static void ref_dpmpp_2m_sde(ref_model *m, bpath *b, const float *sig, int steps, float eta,
                             float s_noise, float *x)
{
    const size_t n = m->n;
    float *den = malloc(n * 4), *old = malloc(n * 4), *nz = malloc(n * 4);
    int have_old = 0;
    float h = 0, h_last = 0;
    for (int i = 0; i < steps; i++) {
        denoise(m, x, sig[i], den);
        if (sig[i + 1] == 0.0f) {
            memcpy(x, den, n * 4);
        } else {
            float t = -lg(sig[i]), s = -lg(sig[i + 1]);
            h = s - t;
            float eta_h = eta * h;
            float a = sig[i + 1] / sig[i] * ex(-eta_h), bcoef = -em1(-h - eta_h);
            for (size_t j = 0; j < n; j++) x[j] = a * x[j] + bcoef * den[j];
            if (have_old) {
                float r = h_last / h;
                float c = 0.5f * bcoef * (1.0f / r);
                for (size_t j = 0; j < n; j++) x[j] = x[j] + c * (den[j] - old[j]);
            }
            if (eta != 0.0f) {
                bpath_noise(b, sig[i], sig[i + 1], nz);
                float q = sqrtf(-em1(-2.0f * eta_h));
                for (size_t j = 0; j < n; j++) x[j] = x[j] + nz[j] * sig[i + 1] * q * s_noise;
            }
        }
        memcpy(old, den, n * 4);
        have_old = 1;
        h_last = h;
    }
    free(den);
    free(old);
    free(nz);
}

static void ref_dpmpp_sde(ref_model *m, bpath *b, const float *sig, int steps, float eta,
                          float s_noise, float *x)
{
    const size_t n = m->n;
    float *den = malloc(n * 4), *den2 = malloc(n * 4), *x2 = malloc(n * 4), *nz = malloc(n * 4);
    const float r = 0.5f, fac = 1.0f / (2.0f * r);
    for (int i = 0; i < steps; i++) {
        denoise(m, x, sig[i], den);
        if (sig[i + 1] == 0.0f) {
            float dt = sig[i + 1] - sig[i];
            for (size_t j = 0; j < n; j++) x[j] = x[j] + (x[j] - den[j]) / sig[i] * dt;
            continue;
        }
        float t = -lg(sig[i]), t_next = -lg(sig[i + 1]);
        float h = t_next - t, s = t + h * r;
        float sd, su;
        /* step 1 */
        anc(ex(-t), ex(-s), eta, &sd, &su);
        float s_ = -lg(sd);
        bpath_noise(b, ex(-t), ex(-s), nz);
        for (size_t j = 0; j < n; j++) {
            x2[j] = (ex(-s_) / ex(-t)) * x[j] - em1(t - s_) * den[j];
            x2[j] = x2[j] + nz[j] * s_noise * su;
        }
        denoise(m, x2, ex(-s), den2);
        /* step 2 */
        anc(ex(-t), ex(-t_next), eta, &sd, &su);
        float t_next_ = -lg(sd);
        bpath_noise(b, ex(-t), ex(-t_next), nz);
        for (size_t j = 0; j < n; j++) {
            float dd = (1 - fac) * den[j] + fac * den2[j];
            x[j] = (ex(-t_next_) / ex(-t)) * x[j] - em1(t - t_next_) * dd;
            x[j] = x[j] + nz[j] * s_noise * su;
        }
    }
    free(den);
    free(den2);
    free(x2);
    free(nz);
}

typedef struct {
    const char *sampler, *schedule;
    int steps;
    float eta, s_noise;
    uint64_t seed;
} kcase;

static void kdiff_equations(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LOOPS);
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(vkl_test_shared_path(LOOPS), &f, &e)) fail_msg("%s", e.msg);
    const vkl_st_tensor *te = vkl_st_find(f, "loop.E"), *tx = vkl_st_find(f, "loop.x_init");
    assert_true(te && tx);
    const size_t n = (size_t)tx->nelem;
    assert_int_equal(te->nelem, 40 * n);
    float *E = malloc(te->nelem * sizeof *E), *x0 = malloc(n * sizeof *x0);
    assert_true(E && x0);
    if (vkl_st_read(f, te, VKL_F32, E, &e) || vkl_st_read(f, tx, VKL_F32, x0, &e)) fail_msg("%s", e.msg);
    vkl_st_close(f);

    static const kcase cases[] = {
        {"Heun", "normal", 20, 1, 1, 0},          {"heun", "karras", 8, 1, 1, 0},
        {"LMS", "normal", 20, 1, 1, 0},           {"lms", "exponential", 12, 1, 1, 0},
        {"LMS", "sgm_uniform", 3, 1, 1, 0},       {"DPM++ 2M SDE", "karras", 20, 1, 1, 11},
        {"dpmpp_2m_sde", "sgm_uniform", 9, 1, 1, 5}, {"DPM++ 2M SDE", "exponential", 10, 0.6f, 0.9f, 7},
        {"DPM++ SDE", "karras", 20, 1, 1, 3},     {"dpmpp_sde", "normal", 7, 1, 1, 1234567},
        {"DPM++ SDE", "exponential", 6, 0.5f, 1.1f, 42}, {"DPM++ 2M SDE", "normal", 6, 0, 1, 9},
    };
    float *xs = malloc(n * 4), *xr = malloc(n * 4), *x_in = malloc(n * 4), *eu = malloc(n * 4),
          *ec = malloc(n * 4), *inputs = malloc(MAXCALLS * n * 4);
    assert_true(xs && xr && x_in && eu && ec && inputs);
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const kcase *k = &cases[c];
        vkl_sampler_config cfg;
        vkl_sampler_config_default(&cfg);
        cfg.steps = k->steps;
        if (vkl_sampler_config_set_name(&cfg, k->sampler, &e) ||
            vkl_schedule_kind_parse(k->schedule, &cfg.schedule, &e))
            fail_msg("%s", e.msg);
        cfg.eta = k->eta;
        cfg.s_noise = k->s_noise;
        cfg.noise_seed = k->seed;
        vkl_sampler *s;
        if (vkl_sampler_create(&cfg, n, &s, &e)) fail_msg("%s: %s", k->sampler, e.msg);
        const vkl_schedule *sc = vkl_sampler_schedule(s);
        assert_true(sc->sigmas[k->steps] == 0.0f);

        /* the reference on the same sigmas */
        ref_model m = {n, E, 0, inputs, {0}};
        bpath b = {.n = n};
        vkl_rng_init(&b.rng, k->seed, VKL_RNG_STREAM_BROWNIAN);
        b.z = malloc(n * sizeof *b.z);
        for (size_t j = 0; j < n; j++) xr[j] = x0[j] * sc->sigmas[0];
        switch (cfg.kind) {
        case VKL_SAMPLER_HEUN: ref_heun(&m, sc->sigmas, k->steps, xr); break;
        case VKL_SAMPLER_LMS: ref_lms(&m, sc->sigmas, k->steps, xr); break;
        case VKL_SAMPLER_DPMPP_2M_SDE:
            ref_dpmpp_2m_sde(&m, &b, sc->sigmas, k->steps, k->eta, k->s_noise, xr);
            break;
        default: ref_dpmpp_sde(&m, &b, sc->sigmas, k->steps, k->eta, k->s_noise, xr);
        }
        bpath_free(&b);
        assert_int_equal(m.calls, vkl_sampler_evals(s));

        /* the sampler, evaluation by evaluation */
        memcpy(xs, x0, n * 4);
        vkl_sampler_init_noise(s, xs);
        int call = 0;
        float d_in = 0;
        while (!vkl_sampler_done(s)) {
            float t, sg;
            assert_false(vkl_sampler_needs_noise(s)); /* the SDE noise is the sampler's own */
            vkl_sampler_model_input(s, xs, x_in, &t, &sg);
            assert_true(call < m.calls);
            const float *want = inputs + (size_t)call * n;
            float d = vkl_test_max_abs_diff(x_in, want, n);
            if (!(d <= REL * max_abs(want, n)))
                fail_msg("%s %s: model input of evaluation %d off by %.3g", k->sampler, k->schedule,
                         call, (double)d);
            d_in = fmaxf(d_in, d);
            if (fabsf(sg - m.sigmas[call]) > 1e-6f * m.sigmas[call])
                fail_msg("%s %s: evaluation %d at sigma %.9g, want %.9g", k->sampler, k->schedule,
                         call, (double)sg, (double)m.sigmas[call]);
            float want_t = vkl_kdiff_sigma_to_t(vkl_sampler_table(s), m.sigmas[call]);
            if (fabsf(t - want_t) > 1e-4f)
                fail_msg("%s: evaluation %d timestep %.9g, want %.9g", k->sampler, call, (double)t,
                         (double)want_t);
            unet(&m, call, x_in, eu, ec);
            if (vkl_sampler_step_cfg(s, xs, eu, ec, GUIDE, NULL, &e)) fail_msg("%s", e.msg);
            call++;
        }
        assert_int_equal(call, m.calls);
        assert_int_equal(vkl_sampler_eval_count(s), call);
        float d = vkl_test_max_abs_diff(xs, xr, n), lim = (float)REL * max_abs(xr, n);
        if (!(d <= lim))
            fail_msg("%s %s: final latents off by %.3g (limit %.3g)", k->sampler, k->schedule,
                     (double)d, (double)lim);
        fprintf(stderr, "%-13s %-12s %2d steps %2d evaluations eta %.1f: max abs diff inputs %.2g, "
                        "final %.2g (|final| %.3g)\n",
                k->sampler, k->schedule, k->steps, call, (double)k->eta, (double)d_in, (double)d,
                (double)max_abs(xr, n));
        vkl_sampler_free(s);
    }
    free(xs);
    free(xr);
    free(x_in);
    free(eu);
    free(ec);
    free(inputs);
    free(E);
    free(x0);
}

/* The reference's LMS coefficients by a third method: the integral of the
 * interpolating polynomial of a cubic is exact, so sum_j c_j f(t[i-j]) must
 * equal the integral of f for any cubic f. */
static void lms_exact_for_cubics(void **state)
{
    (void)state;
    const float t[] = {14.6f, 9.7f, 6.1f, 3.3f, 1.9f, 0.0f};
    for (int i = 0; i < 5; i++) {
        int order = i + 1 < 4 ? i + 1 : 4;
        /* f(x) = 1 + 2x - 0.5x^2 + 0.1x^3 up to the degree the order integrates */
        const double cf[4] = {1, 2, -0.5, 0.1};
        double want = 0, got = 0;
        for (int p = 0; p < order; p++)
            want += cf[p] * (pow((double)t[i + 1], p + 1) - pow((double)t[i], p + 1)) / (p + 1);
        for (int j = 0; j < order; j++) {
            double xj = t[i - j], fj = 0;
            for (int p = 0; p < order; p++) fj += cf[p] * pow(xj, p);
            got += lms_coeff(t, order, i, j) * fj;
        }
        assert_true(fabs(got - want) <= 1e-10 * fmax(1, fabs(want)));
    }
}

/* ---- a perfect denoiser: every new sampler ends at the clean latents ---- */
typedef struct {
    const float *x0;
    size_t n;
    vkl_sd_prediction pred;
    int calls;
} oracle;

static int oracle_fn(void *user, const float *x_in, float t, float sigma, float *out, vkl_err *e)
{
    (void)t;
    (void)e;
    oracle *o = user;
    double a = 1.0 / sqrt(1.0 + (double)sigma * sigma), sv = (double)sigma * a;
    for (size_t j = 0; j < o->n; j++) {
        double eps = ((double)x_in[j] - a * o->x0[j]) / sv;
        out[j] = (float)(o->pred == VKL_SD_PRED_V ? a * eps - sv * o->x0[j] : eps);
    }
    o->calls++;
    return 0;
}

static int count_progress(void *user, int step, int steps, const float *x, const float *den)
{
    (void)steps;
    (void)x;
    (void)den;
    int *calls = user;
    assert_int_equal(step, ++*calls);
    return 0;
}

static void perfect_denoiser(void **state)
{
    (void)state;
    enum { N = 64, STEPS = 9 };
    float x0[N], noise[N], x[N];
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 8);
    vkl_test_fill(&r, x0, N, -1.0f, 1.0f);
    vkl_rng g;
    vkl_rng_init(&g, 3, VKL_RNG_STREAM_INIT);
    vkl_rng_normal(&g, noise, N);
    static const vkl_sampler_kind kinds[] = {VKL_SAMPLER_HEUN, VKL_SAMPLER_LMS,
                                             VKL_SAMPLER_DPMPP_2M_SDE, VKL_SAMPLER_DPMPP_SDE};
    int runs = 0;
    double worst_all = 0;
    for (int conv = 0; conv < 2; conv++)
        for (int ki = 0; ki < 4; ki++)
            for (int sched = 0; sched < 4; sched++)
                for (int pred = 0; pred < 2; pred++) {
                    int sde = kinds[ki] == VKL_SAMPLER_DPMPP_2M_SDE || kinds[ki] == VKL_SAMPLER_DPMPP_SDE;
                    if (conv == VKL_CONV_DIFFUSERS && (sde || sched >= VKL_SCHEDULE_EXPONENTIAL)) continue;
                    vkl_sampler_config c;
                    vkl_sampler_config_default(&c);
                    c.convention = (vkl_convention)conv;
                    c.kind = kinds[ki];
                    c.schedule = (vkl_schedule_kind)sched;
                    c.prediction = (vkl_sd_prediction)pred;
                    c.steps = STEPS;
                    c.noise_seed = 77;
                    vkl_sampler *s;
                    vkl_err e = {{0}};
                    if (vkl_sampler_create(&c, N, &s, &e)) fail_msg("%s", e.msg);
                    memcpy(x, noise, sizeof x);
                    oracle o = {x0, N, (vkl_sd_prediction)pred, 0};
                    int progress = 0;
                    vkl_sampler_callbacks cb = {.model = oracle_fn, .model_user = &o,
                                                .progress = count_progress,
                                                .progress_user = &progress, .guidance_scale = 1.0f};
                    if (vkl_sampler_run(s, x, &cb, &e)) fail_msg("%s", e.msg);
                    assert_int_equal(o.calls, vkl_sampler_evals(s));
                    const int two = c.kind == VKL_SAMPLER_HEUN || c.kind == VKL_SAMPLER_DPMPP_SDE;
                    assert_int_equal(o.calls, two ? 2 * STEPS - 1 : STEPS);
                    assert_int_equal(progress, STEPS); /* once per step, not per evaluation */
                    double worst = 0;
                    for (int j = 0; j < N; j++) worst = fmax(worst, fabs(x[j] - x0[j]));
                    if (worst > 2e-5)
                        fail_msg("%s %s %s %s: end point off by %.3g", vkl_convention_name(c.convention),
                                 vkl_sampler_kind_name(c.kind), vkl_schedule_kind_name(c.schedule),
                                 pred ? "v" : "eps", worst);
                    worst_all = fmax(worst_all, worst);
                    runs++;
                    vkl_sampler_free(s);
                }
    fprintf(stderr, "perfect denoiser: %d runs end at x0 within %.2g\n", runs, worst_all);
    assert_int_equal(runs, 4 * 4 * 2 + 2 * 2 * 2); /* a1111: all; diffusers: Heun, LMS x normal, karras */
}

/* img2img: started part-way, each new sampler runs only the remaining steps
 * and a perfect denoiser still ends at x0. */
static void img2img_start(void **state)
{
    (void)state;
    enum { N = 32, STEPS = 8, SKIP = 3 };
    float x0[N], x[N];
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 12);
    vkl_test_fill(&r, x0, N, -1.0f, 1.0f);
    static const vkl_sampler_kind kinds[] = {VKL_SAMPLER_HEUN, VKL_SAMPLER_LMS,
                                             VKL_SAMPLER_DPMPP_2M_SDE, VKL_SAMPLER_DPMPP_SDE};
    for (int conv = 0; conv < 2; conv++)
        for (int k = 0; k < 4; k++) {
            if (conv == VKL_CONV_DIFFUSERS && k >= 2) continue;
            vkl_sampler_config c;
            vkl_sampler_config_default(&c);
            c.convention = (vkl_convention)conv;
            c.kind = kinds[k];
            c.steps = STEPS;
            vkl_sampler *s;
            vkl_err e = {{0}};
            assert_int_equal(vkl_sampler_create(&c, N, &s, &e), 0);
            vkl_test_fill(&r, x, N, -1.0f, 1.0f);
            assert_int_equal(vkl_sampler_start_from(s, SKIP, x, x0, &e), 0);
            oracle o = {x0, N, VKL_SD_PRED_EPSILON, 0};
            vkl_sampler_callbacks cb = {.model = oracle_fn, .model_user = &o, .guidance_scale = 1.0f};
            assert_int_equal(vkl_sampler_run(s, x, &cb, &e), 0);
            const int two = c.kind == VKL_SAMPLER_HEUN || c.kind == VKL_SAMPLER_DPMPP_SDE;
            assert_int_equal(o.calls, two ? 2 * (STEPS - SKIP) - 1 : STEPS - SKIP);
            for (int j = 0; j < N; j++)
                if (fabsf(x[j] - x0[j]) > 2e-5f)
                    fail_msg("%s %s from step %d: element %d is %g, want %g", vkl_convention_name(c.convention),
                             vkl_sampler_kind_name(c.kind), SKIP, j, (double)x[j], (double)x0[j]);
            vkl_sampler_free(s);
        }
}

/* The SDE samplers' noise scale, by a property rather than a formula: for
 * data that is all zeros the exact denoiser answers 0 at every sigma, and the
 * diffusion's marginal at sigma is N(0, sigma^2). Both SDE samplers solve this
 * linear case exactly (the deterministic part shrinks x to sigma_down, the
 * noise adds sigma_up, sigma_down^2 + sigma_up^2 = sigma_next^2), so the
 * latents' variance must track sigma^2 after every evaluation, at any eta. */
static void sde_marginals(void **state)
{
    (void)state;
    enum { N = 40000 };
    float *x = malloc(N * sizeof *x), *x_in = malloc(N * sizeof *x), *eps = malloc(N * sizeof *x);
    assert_true(x && x_in && eps);
    static const vkl_sampler_kind kinds[] = {VKL_SAMPLER_DPMPP_2M_SDE, VKL_SAMPLER_DPMPP_SDE};
    static const float etas[] = {1.0f, 0.5f};
    double worst = 0;
    for (int k = 0; k < 2; k++)
        for (int ei = 0; ei < 2; ei++) {
            vkl_sampler_config c;
            vkl_sampler_config_default(&c);
            c.kind = kinds[k];
            c.schedule = VKL_SCHEDULE_KARRAS;
            c.steps = 10;
            c.eta = etas[ei];
            c.noise_seed = 31 + (uint64_t)k;
            vkl_sampler *s;
            vkl_err e = {{0}};
            assert_int_equal(vkl_sampler_create(&c, N, &s, &e), 0);
            vkl_rng g;
            vkl_rng_init(&g, 17, VKL_RNG_STREAM_INIT);
            vkl_rng_normal(&g, x, N);
            vkl_sampler_init_noise(s, x);
            while (!vkl_sampler_done(s)) {
                float t, sg;
                vkl_sampler_model_input(s, x, x_in, &t, &sg);
                for (int j = 0; j < N; j++) eps[j] = x[j] / sg; /* denoised = x - sigma * eps = 0 */
                assert_int_equal(vkl_sampler_step(s, x, eps, NULL, &e), 0);
                if (vkl_sampler_done(s)) break;
                /* the sigma the latents are now at: that of the next evaluation */
                vkl_sampler_model_input(s, x, x_in, &t, &sg);
                double m = 0, v = 0;
                for (int j = 0; j < N; j++) m += x[j];
                m /= N;
                for (int j = 0; j < N; j++) v += ((double)x[j] - m) * ((double)x[j] - m);
                v /= N - 1;
                double ratio = v / ((double)sg * sg);
                if (fabs(ratio - 1) > 0.04 || fabs(m) > 0.03 * sg)
                    fail_msg("%s eta %g, evaluation %d: variance %.4g sigma^2 (mean %.3g) at sigma %g",
                             vkl_sampler_kind_name(c.kind), (double)c.eta, vkl_sampler_eval_count(s),
                             ratio, m, (double)sg);
                worst = fmax(worst, fabs(ratio - 1));
            }
            /* the last step denoises: all zeros */
            assert_true(max_abs(x, N) < 1e-6f);
            vkl_sampler_free(s);
        }
    fprintf(stderr, "SDE marginals: variance within %.2g%% of sigma^2 after every evaluation\n",
            100 * worst);
    free(x);
    free(x_in);
    free(eps);
}

/* The SDE samplers' noise: fixed by the seed, changed by another seed; the
 * ODE samplers ignore it. */
static void seeds(void **state)
{
    (void)state;
    enum { N = 48 };
    float x0[N], a[N], b[N], c[N];
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 2);
    vkl_test_fill(&r, x0, N, -1.0f, 1.0f);
    static const vkl_sampler_kind kinds[] = {VKL_SAMPLER_DPMPP_2M_SDE, VKL_SAMPLER_DPMPP_SDE,
                                             VKL_SAMPLER_HEUN};
    for (int k = 0; k < 3; k++) {
        float *outs[3] = {a, b, c};
        const uint64_t sd[3] = {5, 5, 6};
        for (int i = 0; i < 3; i++) {
            vkl_sampler_config cfg;
            vkl_sampler_config_default(&cfg);
            cfg.kind = kinds[k];
            cfg.steps = 5;
            cfg.noise_seed = sd[i];
            vkl_sampler *s;
            vkl_err e = {{0}};
            assert_int_equal(vkl_sampler_create(&cfg, N, &s, &e), 0);
            memcpy(outs[i], x0, sizeof x0);
            vkl_sampler_init_noise(s, outs[i]);
            /* a model that predicts x0 = 0.3 x: not perfect, so the noise shows */
            while (!vkl_sampler_done(s)) {
                float x_in[N], eps[N], t, sg;
                vkl_sampler_model_input(s, outs[i], x_in, &t, &sg);
                for (int j = 0; j < N; j++) eps[j] = 0.7f * outs[i][j] / sg;
                assert_int_equal(vkl_sampler_step(s, outs[i], eps, NULL, &e), 0);
            }
            vkl_sampler_free(s);
        }
        assert_memory_equal(a, b, sizeof a);
        if (kinds[k] == VKL_SAMPLER_HEUN) assert_memory_equal(a, c, sizeof a);
        else assert_true(vkl_test_max_abs_diff(a, c, N) > 1e-3f);
    }
}

static void bad_input(void **state)
{
    (void)state;
    vkl_sampler_config c;
    vkl_sampler *s;
    vkl_err e = {{0}};
    /* the SDE samplers and the two new schedules exist in the a1111 convention only */
    vkl_sampler_config_default(&c);
    c.convention = VKL_CONV_DIFFUSERS;
    c.kind = VKL_SAMPLER_DPMPP_2M_SDE;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);
    assert_non_null(strstr(e.msg, "DPM++ 2M SDE"));
    c.kind = VKL_SAMPLER_HEUN;
    c.schedule = VKL_SCHEDULE_EXPONENTIAL;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);
    assert_non_null(strstr(e.msg, "exponential"));
    c.schedule = VKL_SCHEDULE_SGM_UNIFORM;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);
    assert_non_null(strstr(e.msg, "sgm_uniform"));
    vkl_sampler_config_default(&c);
    c.kind = VKL_SAMPLER_DDIM;
    c.schedule = VKL_SCHEDULE_EXPONENTIAL;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);
    assert_non_null(strstr(e.msg, "DDIM"));
    /* a bad model output on the second evaluation of a Heun step names the step */
    vkl_sampler_config_default(&c);
    c.kind = VKL_SAMPLER_HEUN;
    c.steps = 3;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), 0);
    float x[16], out[16] = {0};
    for (int j = 0; j < 16; j++) x[j] = 1.0f;
    assert_int_equal(vkl_sampler_step(s, x, out, NULL, &e), 0);
    assert_int_equal(vkl_sampler_step_index(s), 0);
    out[3] = NAN;
    assert_int_equal(vkl_sampler_step(s, x, out, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "step 1/3"));
    vkl_sampler_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kdiff_equations),  cmocka_unit_test(lms_exact_for_cubics),
        cmocka_unit_test(perfect_denoiser), cmocka_unit_test(img2img_start),
        cmocka_unit_test(sde_marginals),    cmocka_unit_test(seeds),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
