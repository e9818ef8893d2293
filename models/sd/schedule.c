#include "sd/schedule.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the references' primitives, with their rounding ---- */

/* torch.linspace on the CPU as the reference build ran it (x86-64, AVX2 kernels
 * compiled with FMA contraction): 8 float / 4 double lanes, two vectors per
 * loop trip while 16 / 8 elements remain, each vector at base + k*step where
 * base counts from start in the first half and from end in the second, and a
 * scalar tail. The diffusers betas come out bit-equal only this way. */
static float torch_lin_f32_at(float start, float end, float step, int n, int i)
{
    return i < n / 2 ? fmaf(step, (float)i, start) : fmaf(-step, (float)(n - 1 - i), end);
}

static void torch_linspace_f32(float start, float end, int n, float *out)
{
    if (n == 1) {
        out[0] = start;
        return;
    }
    const int V = 8;
    float step = (end - start) / (float)(n - 1);
    int i = 0;
    for (; i + 2 * V <= n; i += V) {
        float base = torch_lin_f32_at(start, end, step, n, i);
        for (int k = 0; k < V; k++) out[i + k] = fmaf((float)k, step, base);
        i += V;
        base = torch_lin_f32_at(start, end, step, n, i);
        for (int k = 0; k < V; k++) out[i + k] = fmaf((float)k, step, base);
    }
    for (; i < n; i++) out[i] = torch_lin_f32_at(start, end, step, n, i);
}

static double torch_lin_f64_at(double start, double end, double step, int n, int i)
{
    return i < n / 2 ? fma(step, (double)i, start) : fma(-step, (double)(n - 1 - i), end);
}

static void torch_linspace_f64(double start, double end, int n, double *out)
{
    if (n == 1) {
        out[0] = start;
        return;
    }
    const int V = 4;
    double step = (end - start) / (double)(n - 1);
    int i = 0;
    for (; i + 2 * V <= n; i += V) {
        double base = torch_lin_f64_at(start, end, step, n, i);
        for (int k = 0; k < V; k++) out[i + k] = fma((double)k, step, base);
        i += V;
        base = torch_lin_f64_at(start, end, step, n, i);
        for (int k = 0; k < V; k++) out[i + k] = fma((double)k, step, base);
    }
    for (; i < n; i++) out[i] = torch_lin_f64_at(start, end, step, n, i);
}

/* numpy.linspace (endpoint=True): i*step + start, the last value exactly stop. */
static double np_linspace_at(double start, double stop, int n, int i)
{
    if (n == 1) return start;
    if (i == n - 1) return stop;
    return (double)i * ((stop - start) / (double)(n - 1)) + start;
}

/* numpy.interp(x, arange(n), fp) in float64. */
static double np_interp_arange(double x, const float *fp, int n)
{
    if (!(x > 0)) return fp[0];
    if (x >= (double)(n - 1)) return fp[n - 1];
    int j = (int)floor(x);
    if ((double)j == x) return fp[j];
    double slope = ((double)fp[j + 1] - (double)fp[j]) / 1.0;
    return slope * (x - (double)j) + (double)fp[j];
}

/* Round half to even, as numpy's round. */
static double np_round(double x)
{
    return nearbyint(x);
}

/* ---- training schedule ---- */

void vkl_beta_params_sd(vkl_beta_params *p)
{
    p->kind = VKL_SD_BETA_SCALED_LINEAR;
    p->beta_start = 0.00085;
    p->beta_end = 0.012;
    p->train_steps = 1000;
}

/* The shortest decimal that rounds to f (what a config file most likely said). */
static double shortest_decimal(float f)
{
    char buf[64];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        double d = strtod(buf, NULL);
        if ((float)d == f) return d;
    }
    return (double)f;
}

int vkl_beta_params_from_sd(const vkl_sd_sched_config *s, vkl_beta_params *p, vkl_err *e)
{
    if (s->beta_schedule != VKL_SD_BETA_SCALED_LINEAR && s->beta_schedule != VKL_SD_BETA_LINEAR)
        return vkl_fail(e, "scheduler: beta schedule %d is not supported by the samplers "
                           "(scaled_linear, linear)", (int)s->beta_schedule);
    p->kind = s->beta_schedule;
    p->beta_start = shortest_decimal(s->beta_start);
    p->beta_end = shortest_decimal(s->beta_end);
    p->train_steps = s->train_steps;
    return 0;
}

void vkl_noise_table_free(vkl_noise_table *t)
{
    if (!t) return;
    free(t->betas);
    free(t->alphas_cumprod);
    free(t->sigmas);
    free(t->log_sigmas);
    memset(t, 0, sizeof *t);
}

int vkl_noise_table_init(vkl_noise_table *t, const vkl_beta_params *p, vkl_acp_precision prec,
                         vkl_err *e)
{
    memset(t, 0, sizeof *t);
    const int n = p->train_steps;
    if (n < 2 || n > 100000)
        return vkl_fail(e, "scheduler: num_train_timesteps %d out of range (2..100000)", n);
    if (!(p->beta_start > 0) || !(p->beta_end >= p->beta_start) || !(p->beta_end < 1))
        return vkl_fail(e, "scheduler: betas %g..%g are not a schedule (0 < start <= end < 1)",
                        p->beta_start, p->beta_end);
    if (p->kind != VKL_SD_BETA_SCALED_LINEAR && p->kind != VKL_SD_BETA_LINEAR)
        return vkl_fail(e, "scheduler: beta schedule %d is not supported (scaled_linear, linear)",
                        (int)p->kind);
    t->n = n;
    t->betas = malloc((size_t)n * sizeof(float));
    t->alphas_cumprod = malloc((size_t)n * sizeof(float));
    t->sigmas = malloc((size_t)n * sizeof(float));
    t->log_sigmas = malloc((size_t)n * sizeof(float));
    if (!t->betas || !t->alphas_cumprod || !t->sigmas || !t->log_sigmas) {
        vkl_noise_table_free(t);
        return vkl_fail(e, "scheduler: out of memory for %d-step tables", n);
    }
    const int scaled = p->kind == VKL_SD_BETA_SCALED_LINEAR;
    const double b0 = scaled ? sqrt(p->beta_start) : p->beta_start;
    const double b1 = scaled ? sqrt(p->beta_end) : p->beta_end;
    if (prec == VKL_ACP_F64) {
        /* LDM register_schedule: torch float64 linspace, numpy float64 cumprod,
         * kept as a float32 buffer. */
        double *lin = malloc((size_t)n * sizeof(double));
        if (!lin) {
            vkl_noise_table_free(t);
            return vkl_fail(e, "scheduler: out of memory");
        }
        torch_linspace_f64(b0, b1, n, lin);
        double acp = 1.0;
        for (int i = 0; i < n; i++) {
            double beta = scaled ? lin[i] * lin[i] : lin[i];
            acp *= 1.0 - beta;
            t->betas[i] = (float)beta;
            t->alphas_cumprod[i] = (float)acp;
        }
        free(lin);
    } else {
        /* diffusers: float32 linspace and square; torch's CPU cumprod carries a
         * double accumulator and stores each partial product as float. */
        torch_linspace_f32((float)b0, (float)b1, n, t->betas);
        double acc = 1.0;
        for (int i = 0; i < n; i++) {
            if (scaled) t->betas[i] = t->betas[i] * t->betas[i];
            float alpha = 1.0f - t->betas[i];
            acc *= (double)alpha;
            t->alphas_cumprod[i] = (float)acc;
        }
    }
    for (int i = 0; i < n; i++) {
        float a = t->alphas_cumprod[i];
        t->sigmas[i] = sqrtf((1.0f - a) / a);
        t->log_sigmas[i] = logf(t->sigmas[i]);
        if (!(t->sigmas[i] > 0) || !isfinite(t->log_sigmas[i])) {
            int bad = i;
            vkl_noise_table_free(t);
            return vkl_fail(e, "scheduler: noise level of training step %d is not finite "
                               "(betas %g..%g)", bad, p->beta_start, p->beta_end);
        }
    }
    return 0;
}

/* ---- k-diffusion ---- */

float vkl_kdiff_t_to_sigma(const vkl_noise_table *t, float timestep)
{
    if (!(timestep > 0)) timestep = 0;
    if (timestep > (float)(t->n - 1)) timestep = (float)(t->n - 1);
    int lo = (int)floorf(timestep), hi = (int)ceilf(timestep);
    float w = timestep - truncf(timestep);
    float ls = (1.0f - w) * t->log_sigmas[lo] + w * t->log_sigmas[hi];
    return expf(ls);
}

/* Last index i with log_sigmas[i] <= ls (0 when none), at most n-2. */
static int low_index_f32(const float *log_sigmas, int n, float ls)
{
    int lo = 0, hi = n - 1, ans = 0;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (ls - log_sigmas[mid] >= 0.0f) {
            ans = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    return ans > n - 2 ? n - 2 : ans;
}

float vkl_kdiff_sigma_to_t(const vkl_noise_table *t, float sigma)
{
    float ls = logf(sigma);
    int low = low_index_f32(t->log_sigmas, t->n, ls);
    float lo = t->log_sigmas[low], hi = t->log_sigmas[low + 1];
    float w = (lo - ls) / (lo - hi);
    if (!(w > 0.0f)) w = 0.0f; /* also catches sigma 0 (ls = -inf gives nan) */
    if (w > 1.0f) w = 1.0f;
    return (1.0f - w) * (float)low + w * (float)(low + 1);
}

void vkl_kdiff_sigmas_normal(const vkl_noise_table *t, int steps, float *sigmas)
{
    torch_linspace_f32((float)(t->n - 1), 0.0f, steps, sigmas);
    for (int i = 0; i < steps; i++) sigmas[i] = vkl_kdiff_t_to_sigma(t, sigmas[i]);
    sigmas[steps] = 0.0f;
}

void vkl_kdiff_sigmas_karras(double sigma_min, double sigma_max, double rho, int steps,
                             float *sigmas)
{
    /* python floats for the endpoints, float32 tensor ops for the ramp */
    double min_inv = pow(sigma_min, 1.0 / rho), max_inv = pow(sigma_max, 1.0 / rho);
    float span = (float)(min_inv - max_inv), base = (float)max_inv, frho = (float)rho;
    torch_linspace_f32(0.0f, 1.0f, steps, sigmas);
    for (int i = 0; i < steps; i++) sigmas[i] = powf(base + sigmas[i] * span, frho);
    sigmas[steps] = 0.0f;
}

void vkl_kdiff_sigmas_exponential(double sigma_min, double sigma_max, int steps, float *sigmas)
{
    /* python floats for the log endpoints, a float32 linspace, float32 exp */
    torch_linspace_f32((float)log(sigma_max), (float)log(sigma_min), steps, sigmas);
    for (int i = 0; i < steps; i++) sigmas[i] = expf(sigmas[i]);
    sigmas[steps] = 0.0f;
}

void vkl_kdiff_sigmas_sgm_uniform(const vkl_noise_table *t, int steps, float *sigmas)
{
    /* the ends come from the table through sigma_to_t, as A1111 computes them
     * (999 and 0 for a 1000-step table), not from the table's length */
    float start = vkl_kdiff_sigma_to_t(t, t->sigmas[t->n - 1]);
    float end = vkl_kdiff_sigma_to_t(t, t->sigmas[0]);
    float *ts = malloc((size_t)(steps + 1) * sizeof *ts);
    if (ts) {
        torch_linspace_f32(start, end, steps + 1, ts);
        for (int i = 0; i < steps; i++) sigmas[i] = vkl_kdiff_t_to_sigma(t, ts[i]);
    } else { /* out of memory for a few floats: the same values one at a time */
        for (int i = 0; i < steps; i++) {
            float step = (end - start) / (float)steps;
            sigmas[i] = vkl_kdiff_t_to_sigma(t, torch_lin_f32_at(start, end, step, steps + 1, i));
        }
    }
    free(ts);
    sigmas[steps] = 0.0f;
}

/* ---- diffusers ---- */

int vkl_spacing_parse(const char *s, vkl_timestep_spacing *out, vkl_err *e)
{
    static const char *names[] = {"default", "leading", "linspace", "trailing"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            *out = (vkl_timestep_spacing)i;
            return 0;
        }
    return vkl_fail(e, "timestep spacing \"%s\" is not one of leading, linspace, trailing", s);
}

const char *vkl_spacing_name(vkl_timestep_spacing s)
{
    switch (s) {
    case VKL_SPACING_LEADING: return "leading";
    case VKL_SPACING_LINSPACE: return "linspace";
    case VKL_SPACING_TRAILING: return "trailing";
    default: return "default";
    }
}

double vkl_diffusers_sigma_to_t(const vkl_noise_table *t, double sigma)
{
    double ls = log(sigma > 1e-10 ? sigma : 1e-10);
    int lo = 0, hi = t->n - 1, low = 0;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (ls - (double)t->log_sigmas[mid] >= 0.0) {
            low = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (low > t->n - 2) low = t->n - 2;
    float l0 = t->log_sigmas[low], l1 = t->log_sigmas[low + 1];
    /* numpy: float64 numerator over a float32 difference */
    double w = ((double)l0 - ls) / (double)(l0 - l1);
    if (!(w > 0.0)) w = 0.0;
    if (w > 1.0) w = 1.0;
    return (1.0 - w) * (double)low + w * (double)(low + 1);
}

static double karras_at(double smin, double smax, int steps, int i)
{
    const double rho = 7.0;
    double min_inv = pow(smin, 1.0 / rho), max_inv = pow(smax, 1.0 / rho);
    double ramp = np_linspace_at(0.0, 1.0, steps, i);
    return pow(max_inv + ramp * (min_inv - max_inv), rho);
}

/* np.arange(T, 0, -T/steps).round(): the count numpy would produce must be steps. */
static int trailing_timesteps(int T, int steps, double *ts, vkl_err *e)
{
    double ratio = (double)T / (double)steps;
    double len = ceil((0.0 - (double)T) / -ratio);
    if (len != (double)steps)
        return vkl_fail(e, "scheduler: trailing spacing gives %.0f timesteps for %d steps", len,
                        steps);
    double delta = ((double)T - ratio) - (double)T;
    for (int i = 0; i < steps; i++) ts[i] = np_round((double)T + (double)i * delta) - 1.0;
    return 0;
}

static int check_range(const vkl_schedule *s, int T, vkl_err *e)
{
    for (int i = 0; i < s->steps; i++)
        if (!(s->timesteps[i] >= 0.0f) || s->timesteps[i] > (float)(T - 1))
            return vkl_fail(e, "scheduler: step %d has timestep %g outside 0..%d (%d steps, "
                               "steps_offset too large?)", i, (double)s->timesteps[i], T - 1,
                            s->steps);
    return 0;
}

static int build_kdiff(const vkl_noise_table *t, const vkl_schedule_spec *sp, vkl_schedule *s)
{
    /* A1111 passes the table's ends (python floats of the float32 values) */
    const double smin = (double)t->sigmas[0], smax = (double)t->sigmas[t->n - 1];
    if (sp->kind == VKL_SCHEDULE_KARRAS)
        vkl_kdiff_sigmas_karras(smin, smax, 7.0, sp->steps, s->sigmas);
    else if (sp->kind == VKL_SCHEDULE_EXPONENTIAL)
        vkl_kdiff_sigmas_exponential(smin, smax, sp->steps, s->sigmas);
    else if (sp->kind == VKL_SCHEDULE_SGM_UNIFORM)
        vkl_kdiff_sigmas_sgm_uniform(t, sp->steps, s->sigmas);
    else
        vkl_kdiff_sigmas_normal(t, sp->steps, s->sigmas);
    for (int i = 0; i < sp->steps; i++) s->timesteps[i] = vkl_kdiff_sigma_to_t(t, s->sigmas[i]);
    s->init_noise_sigma = s->sigmas[0];
    return 0;
}

static int build_euler(const vkl_noise_table *t, const vkl_schedule_spec *sp, vkl_schedule *s,
                       double *tmp, vkl_err *e)
{
    const int T = t->n, n = sp->steps;
    vkl_timestep_spacing sc = sp->spacing == VKL_SPACING_DEFAULT ? VKL_SPACING_LINSPACE : sp->spacing;
    if (sc == VKL_SPACING_LINSPACE) {
        for (int i = 0; i < n; i++) s->timesteps[i] = (float)np_linspace_at(0, T - 1, n, n - 1 - i);
    } else if (sc == VKL_SPACING_LEADING) {
        int ratio = T / n;
        for (int i = 0; i < n; i++)
            s->timesteps[i] = (float)(ratio * (n - 1 - i)) + (float)sp->steps_offset;
    } else {
        if (trailing_timesteps(T, n, tmp, e)) return -1;
        for (int i = 0; i < n; i++) s->timesteps[i] = (float)(tmp[i] + 1.0) - 1.0f;
    }
    for (int i = 0; i < n; i++) tmp[i] = np_interp_arange((double)s->timesteps[i], t->sigmas, T);
    if (sp->kind == VKL_SCHEDULE_KARRAS) {
        double smin = tmp[n - 1], smax = tmp[0];
        for (int i = 0; i < n; i++) {
            double k = karras_at(smin, smax, n, i);
            s->sigmas[i] = (float)k;
            s->timesteps[i] = (float)vkl_diffusers_sigma_to_t(t, k);
        }
    } else {
        for (int i = 0; i < n; i++) s->sigmas[i] = (float)tmp[i];
    }
    s->sigmas[n] = 0.0f;
    float mx = 0.0f;
    for (int i = 0; i <= n; i++) mx = s->sigmas[i] > mx ? s->sigmas[i] : mx;
    s->init_noise_sigma = sc == VKL_SPACING_LEADING ? sqrtf(mx * mx + 1.0f) : mx;
    return 0;
}

static int build_dpm(const vkl_noise_table *t, const vkl_schedule_spec *sp, vkl_schedule *s,
                     double *tmp, vkl_err *e)
{
    const int T = t->n, n = sp->steps;
    vkl_timestep_spacing sc = sp->spacing == VKL_SPACING_DEFAULT ? VKL_SPACING_LINSPACE : sp->spacing;
    s->integer_timesteps = 1;
    if (sc == VKL_SPACING_LINSPACE) {
        for (int i = 0; i < n; i++) tmp[i] = np_round(np_linspace_at(0, T - 1, n + 1, n - i));
    } else if (sc == VKL_SPACING_LEADING) {
        int ratio = T / (n + 1);
        for (int i = 0; i < n; i++) tmp[i] = (double)(ratio * (n - i) + sp->steps_offset);
    } else {
        if (trailing_timesteps(T, n, tmp, e)) return -1;
    }
    if (sp->kind == VKL_SCHEDULE_KARRAS) {
        /* the whole table's ends, not the spaced timesteps' */
        double smin = t->sigmas[0], smax = t->sigmas[T - 1];
        for (int i = 0; i < n; i++) {
            double k = karras_at(smin, smax, n, i);
            s->sigmas[i] = (float)k;
            s->timesteps[i] = (float)np_round(vkl_diffusers_sigma_to_t(t, k));
        }
        s->sigmas[n] = s->sigmas[n - 1];
    } else {
        for (int i = 0; i < n; i++) {
            s->timesteps[i] = (float)tmp[i];
            s->sigmas[i] = (float)np_interp_arange(tmp[i], t->sigmas, T);
        }
        float a0 = t->alphas_cumprod[0];
        s->sigmas[n] = sqrtf((1.0f - a0) / a0);
    }
    s->init_noise_sigma = 1.0f;
    return 0;
}

static int build_ddim(const vkl_noise_table *t, const vkl_schedule_spec *sp, vkl_schedule *s,
                      double *tmp, vkl_err *e)
{
    const int T = t->n, n = sp->steps;
    if (sp->kind == VKL_SCHEDULE_KARRAS)
        return vkl_fail(e, "scheduler: DDIM has no Karras schedule (use normal)");
    if (n > T) return vkl_fail(e, "scheduler: DDIM with %d steps exceeds the %d training steps", n, T);
    vkl_timestep_spacing sc = sp->spacing == VKL_SPACING_DEFAULT ? VKL_SPACING_LEADING : sp->spacing;
    s->integer_timesteps = 1;
    if (sc == VKL_SPACING_LEADING) {
        int ratio = T / n;
        for (int i = 0; i < n; i++) s->timesteps[i] = (float)(ratio * (n - 1 - i) + sp->steps_offset);
    } else if (sc == VKL_SPACING_LINSPACE) {
        for (int i = 0; i < n; i++) s->timesteps[i] = (float)np_round(np_linspace_at(0, T - 1, n, n - 1 - i));
    } else {
        if (trailing_timesteps(T, n, tmp, e)) return -1;
        for (int i = 0; i < n; i++) s->timesteps[i] = (float)tmp[i];
    }
    if (check_range(s, T, e)) return -1;
    for (int i = 0; i < n; i++) s->sigmas[i] = t->sigmas[(int)s->timesteps[i]];
    /* the step after the last lands on the final alpha */
    s->sigmas[n] = sp->set_alpha_to_one ? 0.0f : t->sigmas[0];
    s->init_noise_sigma = 1.0f;
    return 0;
}

int vkl_schedule_build(const vkl_noise_table *t, const vkl_schedule_spec *sp, vkl_schedule *s,
                       vkl_err *e)
{
    memset(s, 0, sizeof *s);
    if (sp->steps < 1 || sp->steps > 10000)
        return vkl_fail(e, "scheduler: %d steps out of range (1..10000)", sp->steps);
    s->steps = sp->steps;
    s->timesteps = malloc((size_t)sp->steps * sizeof(float));
    s->sigmas = malloc((size_t)(sp->steps + 1) * sizeof(float));
    double *tmp = malloc((size_t)sp->steps * sizeof(double));
    int rc = -1;
    if (!s->timesteps || !s->sigmas || !tmp) {
        vkl_fail(e, "scheduler: out of memory for %d steps", sp->steps);
        goto done;
    }
    if (sp->rule != VKL_RULE_KDIFF &&
        (sp->kind == VKL_SCHEDULE_EXPONENTIAL || sp->kind == VKL_SCHEDULE_SGM_UNIFORM)) {
        vkl_fail(e, "scheduler: the %s schedule is a k-diffusion (a1111 convention) schedule; "
                    "diffusers 0.25 has only normal and karras", vkl_schedule_kind_name(sp->kind));
        goto done;
    }
    switch (sp->rule) {
    case VKL_RULE_KDIFF: rc = build_kdiff(t, sp, s); break;
    case VKL_RULE_DIFFUSERS_EULER: rc = build_euler(t, sp, s, tmp, e); break;
    case VKL_RULE_DIFFUSERS_DPM: rc = build_dpm(t, sp, s, tmp, e); break;
    case VKL_RULE_DDIM: rc = build_ddim(t, sp, s, tmp, e); break;
    default: rc = vkl_fail(e, "scheduler: unknown rule %d", (int)sp->rule);
    }
done:
    free(tmp);
    if (rc) vkl_schedule_free(s);
    return rc;
}

void vkl_schedule_free(vkl_schedule *s)
{
    if (!s) return;
    free(s->timesteps);
    free(s->sigmas);
    memset(s, 0, sizeof *s);
}

int vkl_schedule_kind_parse(const char *s, vkl_schedule_kind *out, vkl_err *e)
{
    static const struct { const char *name; vkl_schedule_kind kind; } names[] = {
        {"normal", VKL_SCHEDULE_NORMAL},           {"Normal", VKL_SCHEDULE_NORMAL},
        {"Automatic", VKL_SCHEDULE_NORMAL},        {"karras", VKL_SCHEDULE_KARRAS},
        {"Karras", VKL_SCHEDULE_KARRAS},           {"exponential", VKL_SCHEDULE_EXPONENTIAL},
        {"Exponential", VKL_SCHEDULE_EXPONENTIAL}, {"sgm_uniform", VKL_SCHEDULE_SGM_UNIFORM},
        {"SGM Uniform", VKL_SCHEDULE_SGM_UNIFORM}, {"SGMUniform", VKL_SCHEDULE_SGM_UNIFORM},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].kind;
            return 0;
        }
    return vkl_fail(e, "schedule \"%s\" is not one of normal, karras, exponential, sgm_uniform", s);
}

const char *vkl_schedule_kind_name(vkl_schedule_kind k)
{
    switch (k) {
    case VKL_SCHEDULE_KARRAS: return "karras";
    case VKL_SCHEDULE_EXPONENTIAL: return "exponential";
    case VKL_SCHEDULE_SGM_UNIFORM: return "sgm_uniform";
    default: return "normal";
    }
}

const char *vkl_schedule_kind_a1111_name(vkl_schedule_kind k)
{
    switch (k) {
    case VKL_SCHEDULE_KARRAS: return "Karras";
    case VKL_SCHEDULE_EXPONENTIAL: return "Exponential";
    case VKL_SCHEDULE_SGM_UNIFORM: return "SGM Uniform";
    default: return NULL;
    }
}
