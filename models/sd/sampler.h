/* Stable Diffusion samplers on host float arrays: Euler, Euler ancestral,
 * DDIM, DPM++ 2M, Heun and LMS, each in the AUTOMATIC1111 (k-diffusion) or
 * the diffusers 0.25 convention (schedule.h says what differs), and the
 * stochastic DPM++ 2M SDE and DPM++ SDE in the AUTOMATIC1111 convention. The network is not called
 * from here: a step-wise API hands out the UNet input and timestep and takes
 * the model output back, so a pipeline can batch uncond/cond and a test can
 * feed recorded outputs; vkl_sampler_run drives the same steps through
 * callbacks.
 *
 * Latents are n floats (any batch; every element shares the step's sigma).
 * Step-wise use:
 *   vkl_sampler_create(&cfg, n, &s, &e);
 *   vkl_sampler_init_noise(s, x);              x: N(0,1) noise -> starting latents
 *   while (!vkl_sampler_done(s)) {
 *       vkl_sampler_model_input(s, x, x_in, &t, &sigma);
 *       ... UNet(x_in, t) for uncond and cond ...
 *       vkl_sampler_step_cfg(s, x, eps_uncond, eps_cond, scale, noise, &e);
 *   }
 * noise: n fresh N(0,1) values when vkl_sampler_needs_noise(s), else ignored.
 *
 * Each vkl_sampler_step call is one model evaluation. Heun and DPM++ SDE
 * evaluate the model twice per step (k-diffusion: 2*steps - 1 evaluations, the
 * last step to sigma 0 being a single Euler step): after the first evaluation
 * x holds the intermediate latents the second one is made at, as diffusers'
 * HeunDiscreteScheduler returns them, and the step completes on the second.
 *
 * The SDE samplers draw their noise themselves, from a Brownian motion over
 * sigma seeded by noise_seed (see sampler_sde.c for how it relates to
 * k-diffusion's BrownianTreeNoiseSampler): they never ask the caller for noise. */
#ifndef VKL_SD_SAMPLER_H
#define VKL_SD_SAMPLER_H

#include <stdint.h>

#include "sd/schedule.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vkl_sampler_kind {
    VKL_SAMPLER_EULER = 0,
    VKL_SAMPLER_EULER_A, /* Euler ancestral */
    VKL_SAMPLER_DDIM,
    VKL_SAMPLER_DPMPP_2M,
    VKL_SAMPLER_HEUN,
    VKL_SAMPLER_LMS,          /* linear multistep, order 4 */
    VKL_SAMPLER_DPMPP_2M_SDE, /* a1111 only; midpoint solver */
    VKL_SAMPLER_DPMPP_SDE     /* a1111 only; r = 1/2 */
} vkl_sampler_kind;
#define VKL_SAMPLER_KIND_LAST VKL_SAMPLER_DPMPP_SDE

typedef struct vkl_sampler_config {
    vkl_sampler_kind kind;
    vkl_schedule_kind schedule;   /* normal, karras (not for DDIM), exponential, sgm_uniform (a1111) */
    vkl_convention convention;
    int steps;                    /* model evaluations */
    float eta;                    /* ancestral noise: Euler a and SDE (default 1), DDIM (default 0) */
    float s_noise;                /* Euler a / SDE noise multiplier (default 1) */
    uint64_t noise_seed;          /* SDE samplers: seed of their Brownian noise (the image seed) */
    vkl_timestep_spacing spacing; /* diffusers convention; DEFAULT = the class's */
    int steps_offset;             /* diffusers "leading" offset (SD configs: 1) */
    int set_alpha_to_one;         /* DDIM final alpha */
    vkl_sd_prediction prediction; /* what the UNet predicts: epsilon or v */
    vkl_beta_params betas;
} vkl_sampler_config;

/* Euler, normal schedule, a1111 convention, 20 steps, SD 1.x betas, epsilon,
 * eta 1 (becomes 0 when the name set is DDIM), s_noise 1, steps_offset 1. */
void vkl_sampler_config_default(vkl_sampler_config *c);
/* Sets kind (and schedule when the name implies one) from a ComfyUI name
 * (euler, euler_ancestral / euler_a, ddim, dpmpp_2m, heun, lms, dpmpp_2m_sde,
 * dpmpp_sde, optionally with _karras or _exponential) or an AUTOMATIC1111
 * display name (Euler, Euler a, DDIM, DPM++ 2M, Heun, LMS, DPM++ 2M SDE,
 * DPM++ SDE, with " Karras" or " Exponential" as older A1111 names have it);
 * case does not matter. DDIM sets eta 0, Euler a and the SDE samplers eta 1. */
int vkl_sampler_config_set_name(vkl_sampler_config *c, const char *name, vkl_err *e);
const char *vkl_sampler_kind_name(vkl_sampler_kind k);       /* ComfyUI name */
const char *vkl_sampler_kind_a1111_name(vkl_sampler_kind k); /* "Euler a", "DPM++ 2M SDE", ... */
/* One line listing every accepted name, for --help and error messages. */
const char *vkl_sampler_names_help(void);
int vkl_convention_parse(const char *s, vkl_convention *out, vkl_err *e); /* a1111 | diffusers */
const char *vkl_convention_name(vkl_convention c);

typedef struct vkl_sampler vkl_sampler;

int vkl_sampler_create(const vkl_sampler_config *c, size_t n, vkl_sampler **out, vkl_err *e);
void vkl_sampler_free(vkl_sampler *s);

const vkl_schedule *vkl_sampler_schedule(const vkl_sampler *s);
const vkl_noise_table *vkl_sampler_table(const vkl_sampler *s);
int vkl_sampler_steps(const vkl_sampler *s);      /* sampler steps (sigma intervals) */
int vkl_sampler_step_index(const vkl_sampler *s); /* steps completed so far */
int vkl_sampler_done(const vkl_sampler *s);
/* Model evaluations a whole run makes (steps, or 2*steps - 1 for Heun and
 * DPM++ SDE), and how many this sampler has made so far. */
int vkl_sampler_evals(const vkl_sampler *s);
int vkl_sampler_eval_count(const vkl_sampler *s);

/* img2img: x holds N(0,1) noise; it becomes `latents` noised to the level of
 * step `step`, where the run then starts (earlier steps are skipped). */
int vkl_sampler_start_from(vkl_sampler *s, int step, float *x, const float *latents, vkl_err *e);
/* x: N(0,1) noise in, starting latents out (times sigmas[0] or init_noise_sigma). */
void vkl_sampler_init_noise(const vkl_sampler *s, float *x);
/* The current evaluation's UNet input (scaled latents) into x_in, its timestep
 * and sigma (k-diffusion noise level; for DDIM that of the timestep). */
void vkl_sampler_model_input(const vkl_sampler *s, const float *x, float *x_in, float *timestep,
                             float *sigma);
/* Whether the current step consumes noise (Euler a / DDIM with eta > 0). */
int vkl_sampler_needs_noise(const vkl_sampler *s);
/* One model evaluation's update with the model output (eps or v, as
 * configured) for latents x (in/out). */
int vkl_sampler_step(vkl_sampler *s, float *x, const float *model_out, const float *noise,
                     vkl_err *e);
/* One step with classifier-free guidance at `scale` over the two outputs,
 * combined where the convention combines them: a1111 k-diffusion samplers on
 * the denoised predictions, diffusers and DDIM on the model outputs. */
int vkl_sampler_step_cfg(vkl_sampler *s, float *x, const float *out_uncond, const float *out_cond,
                         float scale, const float *noise, vkl_err *e);
/* Prediction of the clean latents made by the last step (for previews). */
const float *vkl_sampler_denoised(const vkl_sampler *s);

/* out = uncond + scale * (cond - uncond), as diffusers pipelines combine. */
void vkl_cfg_combine(float *out, const float *uncond, const float *cond, float scale, size_t n);

/* ---- loop driver ---- */
/* Writes the model output for x_in at (timestep, sigma) into out: n floats, or
 * 2n (uncond, then cond) when guidance is on (guidance_scale > 1). */
typedef int (*vkl_model_fn)(void *user, const float *x_in, float timestep, float sigma, float *out,
                            vkl_err *e);
/* Fills out with n independent N(0,1) values (vkl_rng_noise_fn fits). */
typedef void (*vkl_noise_fn)(void *user, float *out, size_t n);
/* Called after each step; nonzero stops the run (reported as cancelled). */
typedef int (*vkl_progress_fn)(void *user, int step, int steps, const float *x,
                               const float *denoised);

typedef struct vkl_sampler_callbacks {
    vkl_model_fn model;
    void *model_user;
    vkl_noise_fn noise; /* needed by Euler a and DDIM with eta > 0 */
    void *noise_user;
    vkl_progress_fn progress; /* optional */
    void *progress_user;
    float guidance_scale;
} vkl_sampler_callbacks;

/* Runs the remaining steps. x: N(0,1) noise in (scaled here when no step has
 * been taken yet), final latents out. */
int vkl_sampler_run(vkl_sampler *s, float *x, const vkl_sampler_callbacks *cb, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
