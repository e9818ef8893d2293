/* The update rules replay the references' float32 operation order (torch
 * scalars are float32 tensors there), so recorded runs are reproduced to the
 * last bits rather than merely to the same mathematics. */
#include "sd/sampler.h"
#include "sd/sampler_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void vkl_sampler_config_default(vkl_sampler_config *c)
{
    memset(c, 0, sizeof *c);
    c->kind = VKL_SAMPLER_EULER;
    c->schedule = VKL_SCHEDULE_NORMAL;
    c->convention = VKL_CONV_A1111;
    c->steps = 20;
    c->eta = 1.0f;
    c->s_noise = 1.0f;
    c->spacing = VKL_SPACING_DEFAULT;
    c->steps_offset = 1;
    c->set_alpha_to_one = 0;
    c->prediction = VKL_SD_PRED_EPSILON;
    vkl_beta_params_sd(&c->betas);
}

void vkl_sampler_free(vkl_sampler *s)
{
    if (!s) return;
    vkl_noise_table_free(&s->table);
    vkl_schedule_free(&s->sched);
    free(s->den);
    free(s->old);
    free(s->mix);
    free(s->base);
    free(s->first);
    for (int k = 0; k < VKL_LMS_ORDER; k++) free(s->hist[k]);
    free(s);
}

int vkl_sampler_create(const vkl_sampler_config *c, size_t n, vkl_sampler **out, vkl_err *e)
{
    *out = NULL;
    if (n == 0 || n > ((size_t)1 << 32))
        return vkl_fail(e, "sampler: %zu latent elements out of range", n);
    if ((unsigned)c->kind > VKL_SAMPLER_KIND_LAST)
        return vkl_fail(e, "sampler: unknown kind %d", (int)c->kind);
    const int sde = c->kind == VKL_SAMPLER_DPMPP_2M_SDE || c->kind == VKL_SAMPLER_DPMPP_SDE;
    if (sde && c->convention != VKL_CONV_A1111)
        return vkl_fail(e, "sampler %s: only in the a1111 (k-diffusion) convention; diffusers 0.25 "
                           "draws its SDE noise differently", vkl_sampler_kind_a1111_name(c->kind));
    if (c->kind == VKL_SAMPLER_DDIM && c->schedule != VKL_SCHEDULE_NORMAL)
        return vkl_fail(e, "sampler DDIM: no %s schedule (DDIM spaces its own timesteps)",
                        vkl_schedule_kind_name(c->schedule));
    if (!isfinite(c->eta) || c->eta < 0 || !isfinite(c->s_noise) || c->s_noise < 0)
        return vkl_fail(e, "sampler: eta %g and s_noise %g must be finite and >= 0",
                        (double)c->eta, (double)c->s_noise);
    if (c->prediction != VKL_SD_PRED_EPSILON && c->prediction != VKL_SD_PRED_V)
        return vkl_fail(e, "sampler: unknown prediction type %d", (int)c->prediction);
    if (c->convention != VKL_CONV_A1111 && c->convention != VKL_CONV_DIFFUSERS)
        return vkl_fail(e, "sampler: unknown convention %d", (int)c->convention);

    vkl_schedule_spec sp = {.kind = c->schedule, .spacing = c->spacing,
                            .steps_offset = c->steps_offset,
                            .set_alpha_to_one = c->set_alpha_to_one, .steps = c->steps};
    vkl_acp_precision prec = VKL_ACP_F32;
    int kdiff = 0;
    if (c->kind == VKL_SAMPLER_DDIM) {
        sp.rule = VKL_RULE_DDIM;
        if (c->convention == VKL_CONV_A1111) {
            /* LDM's DDIMSampler: uniform timesteps range(0, T, T/steps) + 1 */
            sp.spacing = VKL_SPACING_LEADING;
            sp.steps_offset = 1;
            prec = VKL_ACP_F64;
        }
    } else if (c->convention == VKL_CONV_A1111) {
        sp.rule = VKL_RULE_KDIFF;
        prec = VKL_ACP_F64;
        kdiff = 1;
    } else if (c->kind == VKL_SAMPLER_DPMPP_2M) {
        sp.rule = VKL_RULE_DIFFUSERS_DPM;
    } else {
        if (c->kind == VKL_SAMPLER_EULER_A && c->schedule == VKL_SCHEDULE_KARRAS)
            return vkl_fail(e, "sampler: diffusers 0.25 has no Karras schedule for Euler "
                               "ancestral (use the a1111 convention or the normal schedule)");
        sp.rule = VKL_RULE_DIFFUSERS_EULER;
    }

    vkl_sampler *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "sampler: out of memory");
    s->cfg = *c;
    s->n = n;
    s->kdiff = kdiff;
    if (vkl_noise_table_init(&s->table, &c->betas, prec, e) ||
        vkl_schedule_build(&s->table, &sp, &s->sched, e)) {
        vkl_sampler_free(s);
        return -1;
    }
    s->den = malloc(n * sizeof(float));
    s->old = malloc(n * sizeof(float));
    s->mix = malloc(n * sizeof(float));
    int oom = !s->den || !s->old || !s->mix;
    if (vkl_sampler_two_stage(c->kind)) {
        s->base = malloc(n * sizeof(float));
        s->first = malloc(n * sizeof(float));
        oom |= !s->base || !s->first;
    }
    if (c->kind == VKL_SAMPLER_LMS)
        for (int k = 0; k < VKL_LMS_ORDER; k++) oom |= !(s->hist[k] = malloc(n * sizeof(float)));
    if (oom) {
        vkl_sampler_free(s);
        return vkl_fail(e, "sampler: out of memory for %zu latent elements", n);
    }
    vkl_rng_init(&s->brown, c->noise_seed, VKL_RNG_STREAM_BROWNIAN);
    memset(s->den, 0, n * sizeof(float));
    *out = s;
    return 0;
}

const vkl_schedule *vkl_sampler_schedule(const vkl_sampler *s) { return &s->sched; }
const vkl_noise_table *vkl_sampler_table(const vkl_sampler *s) { return &s->table; }
int vkl_sampler_steps(const vkl_sampler *s) { return s->sched.steps; }
int vkl_sampler_step_index(const vkl_sampler *s) { return s->step; }
int vkl_sampler_done(const vkl_sampler *s) { return s->step >= s->sched.steps; }
int vkl_sampler_eval_count(const vkl_sampler *s) { return s->evals; }

int vkl_sampler_two_stage(vkl_sampler_kind k)
{
    return k == VKL_SAMPLER_HEUN || k == VKL_SAMPLER_DPMPP_SDE;
}

int vkl_sampler_evals(const vkl_sampler *s)
{
    if (!vkl_sampler_two_stage(s->cfg.kind)) return s->sched.steps;
    int n = 0; /* the second evaluation is skipped on a step to sigma 0 */
    for (int i = 0; i < s->sched.steps; i++) n += s->sched.sigmas[i + 1] == 0.0f ? 1 : 2;
    return n;
}

float vkl_sampler_eval_sigma(const vkl_sampler *s)
{
    int i = s->step < s->sched.steps ? s->step : s->sched.steps - 1;
    if (!s->stage) return s->sched.sigmas[i];
    if (s->cfg.kind == VKL_SAMPLER_DPMPP_SDE) return vkl_dpmpp_sde_mid_sigma(s, i);
    return s->sched.sigmas[i + 1]; /* Heun: the end of the step */
}

float vkl_sampler_eval_timestep(const vkl_sampler *s)
{
    int i = s->step < s->sched.steps ? s->step : s->sched.steps - 1;
    if (!s->stage) return s->sched.timesteps[i];
    if (s->cfg.kind == VKL_SAMPLER_DPMPP_SDE)
        return vkl_kdiff_sigma_to_t(&s->table, vkl_dpmpp_sde_mid_sigma(s, i));
    /* Heun's second evaluation is at the next step's sigma and timestep (the
     * step to sigma 0 has none) */
    return s->sched.timesteps[i + 1];
}
const float *vkl_sampler_denoised(const vkl_sampler *s) { return s->den; }

void vkl_sampler_init_noise(const vkl_sampler *s, float *x)
{
    const float k = s->sched.init_noise_sigma;
    for (size_t j = 0; j < s->n; j++) x[j] = x[j] * k;
}

void vkl_sampler_model_input(const vkl_sampler *s, const float *x, float *x_in, float *timestep,
                             float *sigma)
{
    float sg = vkl_sampler_eval_sigma(s);
    if (timestep) *timestep = vkl_sampler_eval_timestep(s);
    if (sigma) *sigma = sg;
    if (s->kdiff) {
        float c_in = 1.0f / sqrtf(sg * sg + 1.0f);
        for (size_t j = 0; j < s->n; j++) x_in[j] = x[j] * c_in;
    } else if (s->cfg.kind != VKL_SAMPLER_DDIM && s->cfg.kind != VKL_SAMPLER_DPMPP_2M) {
        /* the Euler-family classes (Euler, Euler a, Heun, LMS) scale by sigma */
        float d = sqrtf(sg * sg + 1.0f);
        for (size_t j = 0; j < s->n; j++) x_in[j] = x[j] / d;
    } else {
        memcpy(x_in, x, s->n * sizeof(float));
    }
}

/* Scalar log/exp/expm1 rounded once from double: correctly rounded in all
 * but rare cases, which is what the reference runs got (glibc's expm1f is an
 * ulp off on some DPM++ steps). */
float vkl_sampler_logr(float x) { return (float)log((double)x); }
float vkl_sampler_expr(float x) { return (float)exp((double)x); }
float vkl_sampler_expm1r(float x) { return (float)expm1((double)x); }
#define logr vkl_sampler_logr
#define expr vkl_sampler_expr
#define expm1r vkl_sampler_expm1r

/* k-diffusion get_ancestral_step, and diffusers' equivalent at eta 1. */
void vkl_sampler_ancestral(float from, float to, float eta, float *down, float *up)
{
    if (eta == 0.0f) {
        *down = to;
        *up = 0.0f;
        return;
    }
    float u = eta * sqrtf(to * to * (from * from - to * to) / (from * from));
    *up = to < u ? to : u;
    *down = sqrtf(to * to - *up * *up);
}

int vkl_sampler_needs_noise(const vkl_sampler *s)
{
    if (vkl_sampler_done(s)) return 0;
    const int i = s->step;
    if (s->cfg.kind == VKL_SAMPLER_EULER_A) {
        float down, up;
        vkl_sampler_ancestral(s->sched.sigmas[i], s->sched.sigmas[i + 1], s->cfg.eta, &down, &up);
        return up > 0.0f;
    }
    return s->cfg.kind == VKL_SAMPLER_DDIM && s->cfg.eta > 0.0f;
}

/* ---- k-diffusion (a1111): the model is a denoiser of x at sigma ---- */

static void kdiff_denoise(const vkl_sampler *s, const float *x, const float *out, float sg,
                          float *den)
{
    if (s->cfg.prediction == VKL_SD_PRED_V) {
        float c_skip = 1.0f / (sg * sg + 1.0f), c_out = -sg * 1.0f / sqrtf(sg * sg + 1.0f);
        for (size_t j = 0; j < s->n; j++) den[j] = x[j] * c_skip + out[j] * c_out;
    } else {
        float c_out = -sg;
        for (size_t j = 0; j < s->n; j++) den[j] = x[j] + out[j] * c_out;
    }
}

static void kdiff_advance(vkl_sampler *s, float *x, const float *noise)
{
    const int i = s->step;
    const float sg = s->sched.sigmas[i], sn = s->sched.sigmas[i + 1];
    const float *den = s->den;
    const size_t n = s->n;
    switch (s->cfg.kind) {
    case VKL_SAMPLER_HEUN: vkl_heun_kdiff(s, x); break;
    case VKL_SAMPLER_LMS: vkl_lms_kdiff(s, x); break;
    case VKL_SAMPLER_DPMPP_2M_SDE: vkl_dpmpp_2m_sde(s, x); break;
    case VKL_SAMPLER_DPMPP_SDE: vkl_dpmpp_sde(s, x); break;
    case VKL_SAMPLER_EULER: {
        float dt = sn - sg;
        for (size_t j = 0; j < n; j++) x[j] = x[j] + (x[j] - den[j]) / sg * dt;
        break;
    }
    case VKL_SAMPLER_EULER_A: {
        float down, up;
        vkl_sampler_ancestral(sg, sn, s->cfg.eta, &down, &up);
        float dt = down - sg;
        for (size_t j = 0; j < n; j++) x[j] = x[j] + (x[j] - den[j]) / sg * dt;
        if (sn > 0.0f && up > 0.0f)
            for (size_t j = 0; j < n; j++) x[j] = x[j] + noise[j] * s->cfg.s_noise * up;
        break;
    }
    default: { /* DPM++ 2M */
        if (sn == 0.0f) { /* t_next = inf: the update collapses to the prediction */
            memcpy(x, den, n * sizeof(float));
            break;
        }
        float t = -logr(sg), tn = -logr(sn);
        float h = tn - t;
        float ratio = expr(-tn) / expr(-t), em1 = expm1r(-h);
        if (!s->have_old) {
            for (size_t j = 0; j < n; j++) x[j] = ratio * x[j] - em1 * den[j];
        } else {
            float h_last = t - (-logr(s->sched.sigmas[i - 1]));
            float r = h_last / h;
            float c2 = 1.0f / (2.0f * r), c1 = 1.0f + c2;
            for (size_t j = 0; j < n; j++) {
                float dd = c1 * den[j] - c2 * s->old[j];
                x[j] = ratio * x[j] - em1 * dd;
            }
        }
        break;
    }
    }
}

/* ---- diffusers scheduler classes and DDIM: the model output is eps or v ---- */

void vkl_sampler_euler_x0(const vkl_sampler *s, const float *x, const float *out, float sg, float *x0)
{
    if (s->cfg.prediction == VKL_SD_PRED_V) {
        float c = -sg / sqrtf(sg * sg + 1.0f), d = sg * sg + 1.0f;
        for (size_t j = 0; j < s->n; j++) x0[j] = out[j] * c + x[j] / d;
    } else {
        for (size_t j = 0; j < s->n; j++) x0[j] = x[j] - sg * out[j];
    }
}

static void diffusers_euler(vkl_sampler *s, float *x, const float *out, const float *noise)
{
    const int i = s->step;
    const float sg = s->sched.sigmas[i], sn = s->sched.sigmas[i + 1];
    vkl_sampler_euler_x0(s, x, out, sg, s->den);
    float target = sn, up = 0.0f;
    if (s->cfg.kind == VKL_SAMPLER_EULER_A) vkl_sampler_ancestral(sg, sn, s->cfg.eta, &target, &up);
    float dt = target - sg;
    for (size_t j = 0; j < s->n; j++) x[j] = x[j] + (x[j] - s->den[j]) / sg * dt;
    if (up > 0.0f)
        for (size_t j = 0; j < s->n; j++) x[j] = x[j] + noise[j] * s->cfg.s_noise * up;
}

/* DPMSolverMultistepScheduler: sigma -> (alpha_t, sigma_t) of the VP process. */
static void vp_of(float sigma, float *alpha, float *sig)
{
    *alpha = 1.0f / sqrtf(sigma * sigma + 1.0f);
    *sig = sigma * *alpha;
}

static void diffusers_dpm(vkl_sampler *s, float *x, const float *out)
{
    const int i = s->step, steps = s->sched.steps;
    const size_t n = s->n;
    float a_s0, s_s0, a_t, s_t;
    vp_of(s->sched.sigmas[i], &a_s0, &s_s0);
    vp_of(s->sched.sigmas[i + 1], &a_t, &s_t);
    if (s->cfg.prediction == VKL_SD_PRED_V) {
        for (size_t j = 0; j < n; j++) s->den[j] = a_s0 * x[j] - s_s0 * out[j];
    } else {
        for (size_t j = 0; j < n; j++) s->den[j] = (x[j] - s_s0 * out[j]) / a_s0;
    }
    float l_t = logr(a_t) - logr(s_t), l_s0 = logr(a_s0) - logr(s_s0);
    float h = l_t - l_s0;
    float ratio = s_t / s_s0, b = a_t * (expr(-h) - 1.0f);
    /* lower_order_final: the last step is first order below 15 steps */
    int lower_final = i == steps - 1 && steps < 15;
    if (!s->have_old || lower_final) {
        for (size_t j = 0; j < n; j++) x[j] = ratio * x[j] - b * s->den[j];
    } else {
        float a_s1, s_s1;
        vp_of(s->sched.sigmas[i - 1], &a_s1, &s_s1);
        float l_s1 = logr(a_s1) - logr(s_s1);
        float r0 = (l_s0 - l_s1) / h;
        float inv = 1.0f / r0, half = 0.5f * b;
        for (size_t j = 0; j < n; j++) {
            float d1 = inv * (s->den[j] - s->old[j]);
            x[j] = ratio * x[j] - b * s->den[j] - half * d1;
        }
    }
}

static void ddim(vkl_sampler *s, float *x, const float *out, const float *noise)
{
    const int i = s->step, T = s->table.n;
    const int t = (int)s->sched.timesteps[i], prev = t - T / s->sched.steps;
    const float *acp = s->table.alphas_cumprod;
    const float a_t = acp[t];
    const float a_prev = prev >= 0 ? acp[prev] : (s->cfg.set_alpha_to_one ? 1.0f : acp[0]);
    const float beta = 1.0f - a_t, beta_prev = 1.0f - a_prev;
    const float sq_a = sqrtf(a_t), sq_b = sqrtf(beta);
    const size_t n = s->n;
    float var = (beta_prev / beta) * (1.0f - a_t / a_prev);
    float std = s->cfg.eta * sqrtf(var);
    float c_dir = sqrtf(1.0f - a_prev - std * std), c_x0 = sqrtf(a_prev);
    for (size_t j = 0; j < n; j++) {
        float x0, eps;
        if (s->cfg.prediction == VKL_SD_PRED_V) {
            x0 = sq_a * x[j] - sq_b * out[j];
            eps = sq_a * out[j] + sq_b * x[j];
        } else {
            x0 = (x[j] - sq_b * out[j]) / sq_a;
            eps = out[j];
        }
        s->den[j] = x0;
        x[j] = c_x0 * x0 + c_dir * eps;
    }
    if (std > 0.0f)
        for (size_t j = 0; j < n; j++) x[j] = x[j] + std * noise[j];
}

static int finish_step(vkl_sampler *s, float *x, vkl_err *e)
{
    for (size_t j = 0; j < s->n; j++)
        if (!isfinite(x[j]))
            return vkl_fail(e, "sampler %s step %d/%d: latent %zu is not finite (bad model "
                               "output?)", vkl_sampler_kind_name(s->cfg.kind), s->step + 1,
                            s->sched.steps, j);
    if (s->cfg.kind == VKL_SAMPLER_DPMPP_2M || s->cfg.kind == VKL_SAMPLER_DPMPP_2M_SDE) {
        memcpy(s->old, s->den, s->n * sizeof(float));
        s->have_old = 1;
    }
    s->evals++;
    if (!s->stage) s->step++; /* a two-stage step completes on its second evaluation */
    return 0;
}

static int check_step(const vkl_sampler *s, const float *noise, vkl_err *e)
{
    if (vkl_sampler_done(s))
        return vkl_fail(e, "sampler: all %d steps are taken", s->sched.steps);
    if (!noise && vkl_sampler_needs_noise(s))
        return vkl_fail(e, "sampler %s step %d: needs noise and none was given",
                        vkl_sampler_kind_name(s->cfg.kind), s->step + 1);
    return 0;
}

static void advance_output(vkl_sampler *s, float *x, const float *out, const float *noise)
{
    switch (s->cfg.kind) {
    case VKL_SAMPLER_DDIM: ddim(s, x, out, noise); break;
    case VKL_SAMPLER_DPMPP_2M: diffusers_dpm(s, x, out); break;
    case VKL_SAMPLER_HEUN: vkl_heun_diffusers(s, x, out); break;
    case VKL_SAMPLER_LMS: vkl_lms_diffusers(s, x, out); break;
    default: diffusers_euler(s, x, out, noise); /* Euler, Euler a */
    }
}

int vkl_sampler_step(vkl_sampler *s, float *x, const float *model_out, const float *noise,
                     vkl_err *e)
{
    if (check_step(s, noise, e)) return -1;
    if (s->kdiff) {
        kdiff_denoise(s, x, model_out, vkl_sampler_eval_sigma(s), s->den);
        kdiff_advance(s, x, noise);
    } else {
        advance_output(s, x, model_out, noise);
    }
    return finish_step(s, x, e);
}

void vkl_cfg_combine(float *out, const float *uncond, const float *cond, float scale, size_t n)
{
    for (size_t j = 0; j < n; j++) out[j] = uncond[j] + scale * (cond[j] - uncond[j]);
}

int vkl_sampler_step_cfg(vkl_sampler *s, float *x, const float *out_uncond, const float *out_cond,
                         float scale, const float *noise, vkl_err *e)
{
    if (!isfinite(scale)) return vkl_fail(e, "sampler: guidance scale %g is not finite", (double)scale);
    if (check_step(s, noise, e)) return -1;
    if (s->kdiff) {
        /* guidance on the denoised predictions, as A1111's CFG denoiser */
        float sg = vkl_sampler_eval_sigma(s);
        kdiff_denoise(s, x, out_uncond, sg, s->mix);
        kdiff_denoise(s, x, out_cond, sg, s->den);
        vkl_cfg_combine(s->den, s->mix, s->den, scale, s->n);
        kdiff_advance(s, x, noise);
    } else {
        vkl_cfg_combine(s->mix, out_uncond, out_cond, scale, s->n);
        advance_output(s, x, s->mix, noise);
    }
    return finish_step(s, x, e);
}

int vkl_sampler_run(vkl_sampler *s, float *x, const vkl_sampler_callbacks *cb, vkl_err *e)
{
    if (!cb || !cb->model) return vkl_fail(e, "sampler: no model callback");
    if (!isfinite(cb->guidance_scale))
        return vkl_fail(e, "sampler: guidance scale %g is not finite", (double)cb->guidance_scale);
    const int guided = cb->guidance_scale > 1.0f;
    const size_t n = s->n;
    float *x_in = malloc(n * sizeof(float));
    float *out = malloc(n * (guided ? 2 : 1) * sizeof(float));
    float *noise = malloc(n * sizeof(float));
    int rc = -1;
    if (!x_in || !out || !noise) {
        vkl_fail(e, "sampler: out of memory for %zu latent elements", n);
        goto done;
    }
    if (s->step == 0) vkl_sampler_init_noise(s, x);
    while (!vkl_sampler_done(s)) {
        float t, sigma;
        const int i = s->step;
        vkl_sampler_model_input(s, x, x_in, &t, &sigma);
        if (cb->model(cb->model_user, x_in, t, sigma, out, e)) {
            vkl_err_prefix(e, "sampler step %d/%d (t=%g): ", i + 1, s->sched.steps, (double)t);
            goto done;
        }
        const float *nz = NULL;
        if (vkl_sampler_needs_noise(s)) {
            if (!cb->noise) {
                vkl_fail(e, "sampler %s: needs a noise source (eta %g)",
                         vkl_sampler_kind_name(s->cfg.kind), (double)s->cfg.eta);
                goto done;
            }
            cb->noise(cb->noise_user, noise, n);
            nz = noise;
        }
        if (guided ? vkl_sampler_step_cfg(s, x, out, out + n, cb->guidance_scale, nz, e)
                   : vkl_sampler_step(s, x, out, nz, e))
            goto done;
        if (s->stage) continue; /* reported when the step completes */
        if (cb->progress && cb->progress(cb->progress_user, s->step, s->sched.steps, x, s->den)) {
            vkl_fail(e, "sampler: cancelled after step %d/%d", s->step, s->sched.steps);
            goto done;
        }
    }
    rc = 0;
done:
    free(x_in);
    free(out);
    free(noise);
    return rc;
}

/* img2img: the run starts at step `step` from latents noised to that step's
 * level. k-diffusion and diffusers Euler keep latents as x0 + sigma * noise;
 * diffusers DPM-Solver and DDIM keep variance-preserving latents
 * sqrt(acp) x0 + sqrt(1 - acp) noise, with acp = 1 / (1 + sigma^2). */
int vkl_sampler_start_from(vkl_sampler *s, int step, float *x, const float *latents, vkl_err *e)
{
    if (step < 0 || step >= s->sched.steps)
        return vkl_fail(e, "img2img: cannot start at step %d of %d", step, s->sched.steps);
    double sg = s->sched.sigmas[step];
    int vp = !s->kdiff && (s->cfg.kind == VKL_SAMPLER_DDIM || s->cfg.kind == VKL_SAMPLER_DPMPP_2M);
    if (vp) {
        double a = 1.0 / (1.0 + sg * sg);
        for (size_t j = 0; j < s->n; j++) x[j] = (float)(sqrt(a) * latents[j] + sqrt(1.0 - a) * x[j]);
    } else {
        for (size_t j = 0; j < s->n; j++) x[j] = (float)(latents[j] + sg * x[j]);
    }
    s->step = step;
    s->stage = 0;
    s->have_old = 0;
    s->nhist = 0;
    return 0;
}
