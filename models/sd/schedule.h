/* Noise schedules of Stable Diffusion samplers, in the two conventions vklora
 * matches: AUTOMATIC1111 / ComfyUI through k-diffusion (`a1111`), and diffusers
 * 0.25 scheduler classes (`diffusers`).
 *
 * The arithmetic follows each reference's precision step by step (float64 LDM
 * alphas_cumprod vs float32 diffusers ones, float32 torch scalars vs float64
 * numpy arrays), because a sampler amplifies early rounding: the schedule
 * tables then agree with the references to float32 rounding, and integer
 * timesteps exactly. */
#ifndef VKL_SD_SCHEDULE_H
#define VKL_SD_SCHEDULE_H

#include "vkl_base.h"
#include "sd/sd_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vkl_convention {
    VKL_CONV_A1111 = 0, /* k-diffusion: model sigmas, float timesteps, ends at sigma 0 */
    VKL_CONV_DIFFUSERS  /* diffusers 0.25 scheduler classes */
} vkl_convention;

/* Training noise schedule. beta_start/end in double: the LDM convention
 * computes in float64 from the decimal values of the config. */
typedef struct vkl_beta_params {
    vkl_sd_beta_schedule kind; /* scaled_linear or linear */
    double beta_start, beta_end;
    int train_steps;
} vkl_beta_params;

/* SD 1.x/2.x: scaled_linear 0.00085 .. 0.012 over 1000 steps. */
void vkl_beta_params_sd(vkl_beta_params *p);
/* From a model's scheduler config; the float betas are taken back to the
 * shortest decimal that rounds to them, which is what the config file said. */
int vkl_beta_params_from_sd(const vkl_sd_sched_config *s, vkl_beta_params *p, vkl_err *e);

typedef enum vkl_acp_precision {
    VKL_ACP_F64 = 0, /* LDM register_schedule (what A1111 and ComfyUI use), stored as float32 */
    VKL_ACP_F32      /* diffusers: betas and cumprod in float32 */
} vkl_acp_precision;

/* Per-training-step tables, all float32 as the references keep them. */
typedef struct vkl_noise_table {
    int n;
    float *betas;
    float *alphas_cumprod;
    float *sigmas;     /* sqrt((1 - acp) / acp), increasing with t */
    float *log_sigmas;
} vkl_noise_table;

int vkl_noise_table_init(vkl_noise_table *t, const vkl_beta_params *p, vkl_acp_precision prec,
                         vkl_err *e);
void vkl_noise_table_free(vkl_noise_table *t);

/* ---- k-diffusion (CompVisDenoiser, quantize=False), float32 throughout ---- */
/* exp of the log-sigma interpolated linearly at a fractional timestep. */
float vkl_kdiff_t_to_sigma(const vkl_noise_table *t, float timestep);
/* Inverse: fractional timestep by linear interpolation in log sigma. */
float vkl_kdiff_sigma_to_t(const vkl_noise_table *t, float sigma);
/* get_sigmas(steps): t = linspace(n-1, 0, steps), sigma = t_to_sigma(t), then 0.
 * sigmas holds steps+1 values. */
void vkl_kdiff_sigmas_normal(const vkl_noise_table *t, int steps, float *sigmas);
/* get_sigmas_karras(steps, sigma_min, sigma_max, rho): steps+1 values, last 0. */
void vkl_kdiff_sigmas_karras(double sigma_min, double sigma_max, double rho, int steps,
                             float *sigmas);
/* get_sigmas_exponential: exp(linspace(log sigma_max, log sigma_min, steps)), then 0. */
void vkl_kdiff_sigmas_exponential(double sigma_min, double sigma_max, int steps, float *sigmas);
/* A1111's sgm_uniform (ComfyUI's the same): t = linspace(t(sigma_max),
 * t(sigma_min), steps + 1) without its last entry, sigma = t_to_sigma(t), then 0. */
void vkl_kdiff_sigmas_sgm_uniform(const vkl_noise_table *t, int steps, float *sigmas);

/* ---- diffusers ---- */
typedef enum vkl_timestep_spacing {
    VKL_SPACING_DEFAULT = 0, /* the class default: leading for DDIM, linspace otherwise */
    VKL_SPACING_LEADING,
    VKL_SPACING_LINSPACE,
    VKL_SPACING_TRAILING
} vkl_timestep_spacing;
int vkl_spacing_parse(const char *s, vkl_timestep_spacing *out, vkl_err *e);
const char *vkl_spacing_name(vkl_timestep_spacing s);
/* _sigma_to_t of the diffusers Euler/DPM schedulers (float64 over float32 logs). */
double vkl_diffusers_sigma_to_t(const vkl_noise_table *t, double sigma);

/* ---- whole schedules ---- */
typedef enum vkl_schedule_kind {
    VKL_SCHEDULE_NORMAL = 0,
    VKL_SCHEDULE_KARRAS,
    VKL_SCHEDULE_EXPONENTIAL, /* k-diffusion rule only */
    VKL_SCHEDULE_SGM_UNIFORM  /* k-diffusion rule only */
} vkl_schedule_kind;
/* normal | karras | exponential | sgm_uniform, or the A1111 labels
 * (Automatic, Karras, Exponential, SGM Uniform). */
int vkl_schedule_kind_parse(const char *s, vkl_schedule_kind *out, vkl_err *e);
const char *vkl_schedule_kind_name(vkl_schedule_kind k);
/* The "Schedule type" A1111 writes in its parameters; NULL for normal (A1111
 * leaves the field out for its automatic choice). */
const char *vkl_schedule_kind_a1111_name(vkl_schedule_kind k);

/* Which reference's rules turn a step count into timesteps and sigmas. */
typedef enum vkl_sched_rule {
    VKL_RULE_KDIFF = 0,        /* k-diffusion sigmas, t = sigma_to_t(sigma), final sigma 0 */
    VKL_RULE_DIFFUSERS_EULER,  /* EulerDiscrete / EulerAncestralDiscrete / LMS */
    VKL_RULE_DIFFUSERS_DPM,    /* DPMSolverMultistep: integer timesteps, no final 0 */
    VKL_RULE_DDIM              /* DDIM (diffusers; LDM's with leading spacing): integers */
} vkl_sched_rule;

typedef struct vkl_schedule_spec {
    vkl_sched_rule rule;
    vkl_schedule_kind kind;       /* karras: not for DDIM; exponential, sgm_uniform: KDIFF only */
    vkl_timestep_spacing spacing; /* diffusers rules only */
    int steps_offset;             /* diffusers "leading" spacing */
    int set_alpha_to_one;         /* DDIM: the last step lands on alpha 1 instead of acp[0] */
    int steps;                    /* model evaluations, >= 1 */
} vkl_schedule_spec;

typedef struct vkl_schedule {
    int steps;
    int integer_timesteps; /* DDIM, DPM: timesteps hold integers */
    float *timesteps;      /* [steps] what the UNet is given at each step */
    float *sigmas;         /* [steps+1] noise level before each step and after the last
                            * (DDIM: model sigma of each timestep, then that of the final alpha) */
    float init_noise_sigma; /* initial N(0,1) latents are multiplied by this */
} vkl_schedule;

int vkl_schedule_build(const vkl_noise_table *t, const vkl_schedule_spec *spec, vkl_schedule *out,
                       vkl_err *e);
void vkl_schedule_free(vkl_schedule *s);

#ifdef __cplusplus
}
#endif

#endif
