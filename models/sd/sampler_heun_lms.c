/* Heun (Karras et al. 2022, Algorithm 2 without churn) and linear multistep
 * (order 4), as k-diffusion's sample_heun / sample_lms and diffusers 0.25's
 * HeunDiscreteScheduler / LMSDiscreteScheduler compute them, in their float32
 * operation order.
 *
 * The two conventions share the update rules; they differ in where the x0
 * prediction comes from (k-diffusion: the guided denoiser output s->den;
 * diffusers: x - sigma * eps of the guided model output) and in the schedule
 * (schedule.c). Heun's last step, to sigma 0, is a single Euler step in both. */
#include "sd/sampler_impl.h"

#include <math.h>
#include <string.h>

/* ---- Heun ---- */

/* x0: this evaluation's x0 prediction, made at sigma_eval (the step's start
 * on the first evaluation, its end on the second). */
static void heun_update(vkl_sampler *s, float *x, const float *x0, float sigma_eval)
{
    const int i = s->step;
    const size_t n = s->n;
    const float sg = s->sched.sigmas[i], sn = s->sched.sigmas[i + 1];
    const float dt = sn - sg;
    if (!s->stage) {
        if (sn == 0.0f) { /* Euler to sigma 0 */
            for (size_t j = 0; j < n; j++) x[j] = x[j] + (x[j] - x0[j]) / sigma_eval * dt;
            return;
        }
        for (size_t j = 0; j < n; j++) {
            float d = (x[j] - x0[j]) / sigma_eval;
            s->base[j] = x[j];
            s->first[j] = d;
            x[j] = x[j] + d * dt; /* the point of the second evaluation */
        }
        s->stage = 1;
        return;
    }
    for (size_t j = 0; j < n; j++) {
        float d2 = (x[j] - x0[j]) / sigma_eval;
        float d_prime = (s->first[j] + d2) / 2.0f;
        x[j] = s->base[j] + d_prime * dt;
    }
    s->stage = 0;
}

void vkl_heun_kdiff(vkl_sampler *s, float *x)
{
    heun_update(s, x, s->den, vkl_sampler_eval_sigma(s));
}

void vkl_heun_diffusers(vkl_sampler *s, float *x, const float *out)
{
    float sg = vkl_sampler_eval_sigma(s);
    vkl_sampler_euler_x0(s, x, out, sg, s->den);
    heun_update(s, x, s->den, sg);
}

/* ---- linear multistep ---- */

double vkl_lms_coefficient(const float *t, int order, int i, int j)
{
    /* The integrand is a polynomial of degree order-1 <= 3: three-point
     * Gauss-Legendre integrates it exactly, as the references' adaptive
     * quadrature (scipy quad, epsrel 1e-4) does on its first Gauss-Kronrod
     * rule. diffusers evaluates the integrand in float32 torch scalars, so its
     * coefficients differ from these in the last float32 bits. */
    static const double gx[3] = {-0.77459666924148337704, 0.0, 0.77459666924148337704};
    static const double gw[3] = {5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0};
    const double a = t[i], b = t[i + 1], half = 0.5 * (b - a), mid = 0.5 * (a + b);
    double sum = 0;
    for (int q = 0; q < 3; q++) {
        double tau = mid + half * gx[q], prod = 1.0;
        for (int k = 0; k < order; k++) {
            if (k == j) continue;
            prod *= (tau - (double)t[i - k]) / ((double)t[i - j] - (double)t[i - k]);
        }
        sum += gw[q] * prod;
    }
    return sum * half;
}

/* x0: this evaluation's x0 prediction at sigmas[step]. */
static void lms_update(vkl_sampler *s, float *x, const float *x0)
{
    const int i = s->step;
    const size_t n = s->n;
    const float sg = s->sched.sigmas[i];
    /* the history is a ring, most recent first: rotate the oldest buffer to the front */
    float *d = s->hist[VKL_LMS_ORDER - 1];
    memmove(s->hist + 1, s->hist, (VKL_LMS_ORDER - 1) * sizeof *s->hist);
    s->hist[0] = d;
    for (size_t j = 0; j < n; j++) d[j] = (x[j] - x0[j]) / sg;
    if (s->nhist < VKL_LMS_ORDER) s->nhist++;
    /* the order grows with the steps taken since the start (img2img included) */
    const int order = s->nhist;
    float c[VKL_LMS_ORDER];
    for (int k = 0; k < order; k++) c[k] = (float)vkl_lms_coefficient(s->sched.sigmas, order, i, k);
    for (size_t j = 0; j < n; j++) {
        float acc = c[0] * s->hist[0][j];
        for (int k = 1; k < order; k++) acc = acc + c[k] * s->hist[k][j];
        x[j] = x[j] + acc;
    }
}

void vkl_lms_kdiff(vkl_sampler *s, float *x)
{
    lms_update(s, x, s->den);
}

void vkl_lms_diffusers(vkl_sampler *s, float *x, const float *out)
{
    vkl_sampler_euler_x0(s, x, out, s->sched.sigmas[s->step], s->den);
    lms_update(s, x, s->den);
}
