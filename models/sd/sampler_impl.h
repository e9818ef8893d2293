/* Inside the samplers: the state shared by sampler.c (API, names, the
 * first-order samplers) and the files of the multi-evaluation and multistep
 * samplers (sampler_heun_lms.c, sampler_sde.c). */
#ifndef VKL_SD_SAMPLER_IMPL_H
#define VKL_SD_SAMPLER_IMPL_H

#include "rng.h"
#include "sd/sampler.h"

#define VKL_LMS_ORDER 4

struct vkl_sampler {
    vkl_sampler_config cfg;
    size_t n;
    vkl_noise_table table;
    vkl_schedule sched;
    int kdiff;      /* a1111 k-diffusion samplers: the model is a denoiser in sigma space */
    int step;       /* completed steps */
    int stage;      /* Heun, DPM++ SDE: 1 while the step's second evaluation is due */
    int evals;      /* model evaluations made */
    int have_old;   /* DPM++ 2M (SDE): old holds the previous step's x0 prediction */
    float *den;     /* x0 prediction of the last evaluation */
    float *old;     /* DPM++ 2M (SDE): previous x0; DPM++ SDE: first-stage x0 */
    float *mix;     /* guided model output */
    float *base;    /* Heun, DPM++ SDE: x at the start of the two-stage step */
    float *first;   /* Heun: first-stage derivative; DPM++ SDE: first Brownian draw */
    float *hist[VKL_LMS_ORDER]; /* LMS: derivatives, most recent first */
    int nhist;
    float h_last;   /* DPM++ 2M SDE: the previous step's h */
    vkl_rng brown;  /* SDE samplers: the stream their Brownian increments come from */
};

/* Scalar log/exp/expm1 rounded once from double (what the reference runs'
 * float32 torch scalars got, up to rare last-bit cases). */
float vkl_sampler_logr(float x);
float vkl_sampler_expr(float x);
float vkl_sampler_expm1r(float x);
/* k-diffusion get_ancestral_step(from, to, eta). */
void vkl_sampler_ancestral(float from, float to, float eta, float *down, float *up);
/* x0 prediction of the diffusers Euler-family classes from eps or v at sigma. */
void vkl_sampler_euler_x0(const vkl_sampler *s, const float *x, const float *out, float sg, float *x0);

/* Whether a kind takes two model evaluations per step. */
int vkl_sampler_two_stage(vkl_sampler_kind k);
/* Sigma and timestep of the evaluation now due. */
float vkl_sampler_eval_sigma(const vkl_sampler *s);
float vkl_sampler_eval_timestep(const vkl_sampler *s);

/* The updates after one evaluation, with s->den holding its x0 prediction
 * (k-diffusion) or with the model output (diffusers). They set s->stage. */
void vkl_heun_kdiff(vkl_sampler *s, float *x);
void vkl_heun_diffusers(vkl_sampler *s, float *x, const float *out);
void vkl_lms_kdiff(vkl_sampler *s, float *x);
void vkl_lms_diffusers(vkl_sampler *s, float *x, const float *out);
void vkl_dpmpp_2m_sde(vkl_sampler *s, float *x);
void vkl_dpmpp_sde(vkl_sampler *s, float *x);
/* DPM++ SDE: the sigma of the second evaluation of step i. */
float vkl_dpmpp_sde_mid_sigma(const vkl_sampler *s, int i);

/* Integral over [t[i], t[i+1]] of the Lagrange basis polynomial of node
 * t[i-j] among the nodes t[i], t[i-1], ..., t[i-order+1] (LMS coefficient). */
double vkl_lms_coefficient(const float *t, int order, int i, int j);

#endif
