/* DPM-Solver++ SDE samplers as k-diffusion computes them (sample_dpmpp_2m_sde
 * with the midpoint solver, and sample_dpmpp_sde with r = 1/2), at eta and
 * s_noise from the config (A1111: 1 and 1), in float32 operation order.
 *
 * Noise. k-diffusion asks a noise sampler for
 *     noise(sigma, sigma_next) = (W(sigma_next) - W(sigma)) / sqrt(|sigma_next - sigma|)
 * where W is one Brownian motion over sigma; A1111 builds it as
 * BrownianTreeNoiseSampler (a torchsde.BrownianTree seeded with the image
 * seed). vklora samples the same Brownian motion exactly, but not the same
 * path: these samplers query W only at decreasing sigmas, so each new point
 * is the last one plus an independent Gaussian increment,
 *     W(b) = W(a) + sqrt(a - b) * z,   z ~ N(0,1) from the seed's Brownian stream,
 * and a query over a union of visited intervals combines their draws. The
 * joint law of every noise the sampler receives is therefore that of
 * k-diffusion (independent N(0,1) per DPM++ 2M SDE step; for DPM++ SDE the
 * second noise of a step correlates with the first by
 * sqrt((sigma - sigma_mid) / (sigma - sigma_next))), while the values differ:
 * torchsde builds its path by bisection with its own generator (and to a
 * tolerance), which vklora does not reproduce. Every image of a batch draws
 * from the one seed's stream (vklora's batch convention), where A1111 gives
 * each image its own tree. */
#include "sd/sampler_impl.h"

#include <math.h>
#include <string.h>

#define logr vkl_sampler_logr
#define expr vkl_sampler_expr
#define expm1r vkl_sampler_expm1r

/* ---- DPM++ 2M SDE ---- */

void vkl_dpmpp_2m_sde(vkl_sampler *s, float *x)
{
    const int i = s->step;
    const size_t n = s->n;
    const float sg = s->sched.sigmas[i], sn = s->sched.sigmas[i + 1];
    const float *den = s->den;
    if (sn == 0.0f) { /* the denoising step */
        memcpy(x, den, n * sizeof(float));
        return;
    }
    const float eta = s->cfg.eta;
    const float t = -logr(sg), tn = -logr(sn);
    const float h = tn - t, eta_h = eta * h;
    const float c_x = sn / sg * expr(-eta_h);
    const float c_d = -expm1r(-h - eta_h);
    for (size_t j = 0; j < n; j++) x[j] = c_x * x[j] + c_d * den[j];
    if (s->have_old) {
        const float r = s->h_last / h;
        const float c = 0.5f * c_d * (1.0f / r);
        for (size_t j = 0; j < n; j++) x[j] = x[j] + c * (den[j] - s->old[j]);
    }
    s->h_last = h;
    if (eta != 0.0f) {
        /* disjoint consecutive intervals: each step's noise is a fresh N(0,1) */
        float *z = s->first ? s->first : s->mix;
        vkl_rng_normal(&s->brown, z, n);
        const float q = sqrtf(-expm1r(-2.0f * eta_h)), sno = s->cfg.s_noise;
        for (size_t j = 0; j < n; j++) x[j] = x[j] + z[j] * sn * q * sno;
    }
}

/* ---- DPM++ SDE ---- */

#define SDE_R 0.5f /* where the first stage ends, in log sigma (A1111: 1/2) */

typedef struct {
    float t, tn, st;          /* -log sigma at the step's start, end and first stage */
    float sig_t, sig_s, sig_tn; /* sigma_fn of those: where the Brownian path is queried */
} sde_points;

static void sde_points_of(const vkl_sampler *s, int i, sde_points *p)
{
    p->t = -logr(s->sched.sigmas[i]);
    p->tn = -logr(s->sched.sigmas[i + 1]);
    float h = p->tn - p->t;
    p->st = p->t + h * SDE_R;
    p->sig_t = expr(-p->t);
    p->sig_s = expr(-p->st);
    p->sig_tn = expr(-p->tn);
}

float vkl_dpmpp_sde_mid_sigma(const vkl_sampler *s, int i)
{
    sde_points p;
    sde_points_of(s, i, &p);
    return p.sig_s;
}

void vkl_dpmpp_sde(vkl_sampler *s, float *x)
{
    const int i = s->step;
    const size_t n = s->n;
    const float sg = s->sched.sigmas[i], sn = s->sched.sigmas[i + 1];
    const float *den = s->den;
    const float eta = s->cfg.eta, sno = s->cfg.s_noise;
    if (sn == 0.0f) { /* Euler to sigma 0 */
        const float dt = sn - sg;
        for (size_t j = 0; j < n; j++) x[j] = x[j] + (x[j] - den[j]) / sg * dt;
        return;
    }
    sde_points p;
    sde_points_of(s, i, &p);
    float sd, su;
    if (!s->stage) {
        vkl_sampler_ancestral(p.sig_t, p.sig_s, eta, &sd, &su);
        const float s_ = -logr(sd);
        const float ratio = expr(-s_) / p.sig_t, em = expm1r(p.t - s_);
        /* W(sig_s) = W(sig_t) + sqrt(sig_t - sig_s) z1: noise(sig_t, sig_s) = z1 */
        vkl_rng_normal(&s->brown, s->first, n);
        for (size_t j = 0; j < n; j++) {
            s->base[j] = x[j];
            s->old[j] = den[j];
            float x2 = ratio * x[j] - em * den[j];
            x[j] = x2 + s->first[j] * sno * su;
        }
        s->stage = 1;
        return;
    }
    vkl_sampler_ancestral(p.sig_t, p.sig_tn, eta, &sd, &su);
    const float tn_ = -logr(sd);
    const float ratio = expr(-tn_) / p.sig_t, em = expm1r(p.t - tn_);
    const float fac = 1.0f / (2.0f * SDE_R);
    /* W(sig_tn) = W(sig_s) + sqrt(sig_s - sig_tn) z2, so noise(sig_t, sig_tn) =
     * (sqrt(a) z1 + sqrt(b) z2) / sqrt(a + b) with a, b the two sub-intervals */
    const double a = (double)p.sig_t - p.sig_s, b = (double)p.sig_s - p.sig_tn;
    const double tot = (double)p.sig_t - p.sig_tn;
    const double wa = sqrt(a / tot), wb = sqrt(b / tot);
    float *z2 = s->mix;
    vkl_rng_normal(&s->brown, z2, n);
    for (size_t j = 0; j < n; j++) {
        float den_d = (1.0f - fac) * s->old[j] + fac * den[j];
        float xn = ratio * s->base[j] - em * den_d;
        float noise = (float)(wa * s->first[j] + wb * z2[j]);
        x[j] = xn + noise * sno * su;
    }
    s->stage = 0;
}
