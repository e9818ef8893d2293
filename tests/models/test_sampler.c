/* Samplers replayed against recorded runs: the UNet outputs of a reference
 * run are fed back step by step, and the UNet inputs, timesteps, predictions
 * and latents after every step must match the recording.
 *   a1111 (k-diffusion):  refkit/sd/vectors/kdiff/kdiff_*.safetensors
 *   diffusers 0.25.1:     refkit/sd/vectors/pipeline_{ddim,euler,dpmpp_2m_karras}
 *                         and the 20-step synthetic loops in schedulers.safetensors
 * Tolerance: max abs diff <= 1e-5 * max|reference| per tensor (the refkit's
 * criterion for scheduler loops; the replays are in fact bit-exact or within
 * a few float32 ulps, printed below). Timesteps: integer ones exact, float
 * ones 1e-6 relative. */
#include "vkl_test.h"
#include "io/text.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "rng.h"
#include "sd/sampler.h"

#define VEC "refkit/sd/vectors/"
#define REL 1e-5

static float *load(vkl_st_file *f, const char *name, size_t want)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) fail_msg("%s: no tensor %s", vkl_st_path(f), name);
    if (want && t->nelem != want)
        fail_msg("%s: %s has %llu elements, want %zu", vkl_st_path(f), name,
                 (unsigned long long)t->nelem, want);
    float *p = malloc(t->nelem * sizeof *p);
    assert_non_null(p);
    vkl_err e = {{0}};
    if (vkl_st_read(f, t, VKL_F32, p, &e)) fail_msg("%s", e.msg);
    return p;
}

static size_t nelem(vkl_st_file *f, const char *name)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) fail_msg("%s: no tensor %s", vkl_st_path(f), name);
    return (size_t)t->nelem;
}

static float max_abs(const float *a, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i]));
    return m;
}

/* Fails when max|got-want| > REL*max|want|; returns the max abs diff. */
static float close_to(const char *what, int step, const float *got, const float *want, size_t n)
{
    float d = vkl_test_max_abs_diff(got, want, n), lim = (float)REL * max_abs(want, n);
    if (!(d <= lim)) fail_msg("%s, step %d: max abs diff %.3g > %.3g", what, step, (double)d, (double)lim);
    return d;
}

static vkl_st_file *open_rec(const char *rel)
{
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(vkl_test_shared_path(rel), &f, &e)) fail_msg("%s", e.msg);
    return f;
}

typedef struct {
    const char *file;
    vkl_convention conv;
    const char *sampler; /* name as users write it */
    const char *schedule;
    int has_noise, has_denoised;
} replay_case;

/* One recorded txt2img run: [uncond, cond] UNet batch, guidance 7.5. */
static void replay(const replay_case *rc)
{
    const char *rel = rc->file;
    VKL_REQUIRE_SHARED(rel);
    vkl_st_file *f = open_rec(rel);
    const size_t n = nelem(f, "init_latents");
    const size_t steps = nelem(f, "latents_per_step") / n;
    float *x = load(f, "init_latents", n);
    float *in = load(f, "unet_input", steps * 2 * n);
    float *out = load(f, "unet_output", steps * 2 * n);
    float *lat = load(f, "latents_per_step", steps * n);
    float *fin = load(f, "final_latents", n);
    const char *tname = rc->conv == VKL_CONV_A1111 ? "timesteps" : "unet_timestep";
    float *ts = load(f, tname, steps);
    float *noise = rc->has_noise ? load(f, "step_noise", steps * n) : NULL;
    float *den = rc->has_denoised ? load(f, "denoised", steps * n) : NULL;
    const char *gs = vkl_st_meta_get(f, "guidance_scale");
    assert_non_null(gs);
    const float scale = strtof(gs, NULL);
    assert_true(scale == 7.5f);

    vkl_sampler_config cfg;
    vkl_sampler_config_default(&cfg);
    vkl_err e = {{0}};
    cfg.convention = rc->conv;
    cfg.steps = (int)steps;
    if (vkl_sampler_config_set_name(&cfg, rc->sampler, &e) ||
        (rc->schedule && vkl_schedule_kind_parse(rc->schedule, &cfg.schedule, &e)))
        fail_msg("%s", e.msg);
    vkl_sampler *s;
    if (vkl_sampler_create(&cfg, n, &s, &e)) fail_msg("%s: %s", rel, e.msg);

    float *x_in = malloc(n * sizeof *x_in);
    assert_non_null(x_in);
    float dmax_in = 0, dmax_x = 0, dmax_den = 0, dt = 0;
    size_t exact = 0;
    vkl_sampler_init_noise(s, x);
    for (size_t i = 0; !vkl_sampler_done(s); i++) {
        float t, sigma;
        vkl_sampler_model_input(s, x, x_in, &t, &sigma);
        for (int b = 0; b < 2; b++)
            dmax_in = fmaxf(dmax_in, close_to("unet_input", (int)i, x_in, in + (2 * i + b) * n, n));
        if (vkl_sampler_schedule(s)->integer_timesteps) assert_true(t == ts[i]);
        else if (fabsf(t - ts[i]) > 1e-6f * fabsf(ts[i]))
            fail_msg("%s step %zu: timestep %.9g, want %.9g", rel, i, (double)t, (double)ts[i]);
        dt = fmaxf(dt, fabsf(t - ts[i]));
        const float *nz = noise ? noise + i * n : NULL;
        if (vkl_sampler_step_cfg(s, x, out + 2 * i * n, out + (2 * i + 1) * n, scale, nz, &e))
            fail_msg("%s", e.msg);
        if (den)
            dmax_den = fmaxf(dmax_den, close_to("denoised", (int)i, vkl_sampler_denoised(s),
                                                 den + i * n, n));
        dmax_x = fmaxf(dmax_x, close_to("latents_per_step", (int)i, x, lat + i * n, n));
        exact += !memcmp(x, lat + i * n, n * sizeof *x);
    }
    assert_int_equal(vkl_sampler_step_index(s), (int)steps);
    float dfin = close_to("final_latents", (int)steps, x, fin, n);
    fprintf(stderr, "%-44s %-9s max abs diff: unet_input %.2g, denoised %.2g, latents %.2g, "
                    "final %.2g (|final| %.3g); %zu/%zu steps bit-exact; timesteps %.2g\n",
            rel + strlen(VEC), vkl_convention_name(rc->conv), (double)dmax_in, (double)dmax_den,
            (double)dmax_x, (double)dfin, (double)max_abs(fin, n), exact, steps, (double)dt);
    vkl_sampler_free(s);
    free(x_in);
    free(x);
    free(in);
    free(out);
    free(lat);
    free(fin);
    free(ts);
    free(noise);
    free(den);
    vkl_st_close(f);
}

static void replay_kdiff(void **state)
{
    (void)state;
    static const replay_case cases[] = {
        {VEC "kdiff/kdiff_euler_normal.safetensors", VKL_CONV_A1111, "euler", "normal", 0, 1},
        {VEC "kdiff/kdiff_euler_a_karras.safetensors", VKL_CONV_A1111, "Euler a", "karras", 1, 1},
        {VEC "kdiff/kdiff_dpmpp_2m_karras.safetensors", VKL_CONV_A1111, "DPM++ 2M Karras", NULL, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) replay(&cases[i]);
}

static void replay_diffusers(void **state)
{
    (void)state;
    static const replay_case cases[] = {
        {VEC "pipeline_ddim.safetensors", VKL_CONV_DIFFUSERS, "ddim", NULL, 0, 0},
        {VEC "pipeline_euler.safetensors", VKL_CONV_DIFFUSERS, "Euler", NULL, 0, 0},
        {VEC "pipeline_dpmpp_2m_karras.safetensors", VKL_CONV_DIFFUSERS, "dpmpp_2m_karras", NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) replay(&cases[i]);
}

/* The 20-step loops of schedulers.safetensors: model_output =
 * 0.5*model_input + 0.5*E[i] stands in for the UNet, no guidance. */
static void diffusers_loops(void **state)
{
    (void)state;
    const char *st = VEC "schedulers.safetensors", *js = VEC "schedulers.json";
    VKL_REQUIRE_SHARED(st);
    VKL_REQUIRE_SHARED(js);
    vkl_st_file *f = open_rec(st);
    char *text = NULL;
    vkl_err e = {{0}};
    if (vkl_read_text_file(vkl_test_shared_path(js), 1 << 20, &text, NULL, &e)) fail_msg("%s", e.msg);
    for (char *p = strstr(text, "-Infinity"); p; p = strstr(p, "-Infinity")) memcpy(p, "-1e+99999", 9);
    cJSON *all = cJSON_Parse(text);
    assert_non_null(all);
    const size_t n = nelem(f, "loop.x_init");
    float *x0 = load(f, "loop.x_init", n);
    float *E = load(f, "loop.E", 0);
    static const char *names[] = {"ddim",         "dpmpp_2m",      "dpmpp_2m_karras",
                                  "euler",        "euler_a",       "euler_karras",
                                  "euler_leading", "euler_trailing", "heun",
                                  "lms"};
    float *x = malloc(n * sizeof *x), *x_in = malloc(n * sizeof *x), *mo = malloc(n * sizeof *x);
    assert_true(x && x_in && mo);
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const cJSON *c = cJSON_GetObjectItem(all, names[k]);
        assert_non_null(c);
        const char *cls = cJSON_GetObjectItem(c, "_class_name")->valuestring;
        vkl_sampler_config cfg;
        vkl_sampler_config_default(&cfg);
        cfg.convention = VKL_CONV_DIFFUSERS;
        cfg.steps = 20;
        const char *sampler = !strcmp(cls, "DDIMScheduler") ? "ddim"
                              : !strcmp(cls, "DPMSolverMultistepScheduler") ? "dpmpp_2m"
                              : !strcmp(cls, "EulerAncestralDiscreteScheduler") ? "euler_a"
                              : !strcmp(cls, "HeunDiscreteScheduler") ? "heun"
                              : !strcmp(cls, "LMSDiscreteScheduler") ? "lms"
                                                                     : "euler";
        if (vkl_sampler_config_set_name(&cfg, sampler, &e) ||
            vkl_spacing_parse(cJSON_GetObjectItem(c, "timestep_spacing")->valuestring,
                              &cfg.spacing, &e))
            fail_msg("%s", e.msg);
        if (cJSON_IsTrue(cJSON_GetObjectItem(c, "use_karras_sigmas"))) cfg.schedule = VKL_SCHEDULE_KARRAS;
        cfg.steps_offset = cJSON_GetObjectItem(c, "steps_offset")->valueint;
        vkl_sampler *s;
        if (vkl_sampler_create(&cfg, n, &s, &e)) fail_msg("%s: %s", names[k], e.msg);
        /* one recorded entry per model evaluation (Heun: 2*20 - 1) */
        char key[64];
        snprintf(key, sizeof key, "loop.%s.model_input", names[k]);
        const int evals = (int)(nelem(f, key) / n);
        assert_int_equal(evals, vkl_sampler_evals(s));
        float *want_in = load(f, key, (size_t)evals * n);
        snprintf(key, sizeof key, "loop.%s.x", names[k]);
        float *want_x = load(f, key, (size_t)evals * n);
        /* the per-evaluation timesteps and sigmas, where the scheduler keeps them
         * per evaluation (Heun interleaves them) */
        float *want_t = NULL, *want_s = NULL;
        snprintf(key, sizeof key, "%s.n20.timesteps", names[k]);
        char skey[64];
        snprintf(skey, sizeof skey, "%s.n20.sigmas", names[k]);
        if (vkl_st_find(f, skey) && nelem(f, key) == (size_t)evals) {
            want_t = load(f, key, (size_t)evals);
            want_s = load(f, skey, 0);
            assert_true(nelem(f, skey) > (size_t)evals - 1);
        }
        float *noise = NULL;
        if (!strcmp(names[k], "euler_a")) noise = load(f, "loop.euler_a.noise", 20 * n);
        memcpy(x, x0, n * sizeof *x);
        vkl_sampler_init_noise(s, x);
        float d_in = 0, d_x = 0;
        for (int i = 0; i < evals; i++) {
            float t, sg;
            assert_false(vkl_sampler_done(s));
            vkl_sampler_model_input(s, x, x_in, &t, &sg);
            d_in = fmaxf(d_in, close_to(names[k], i, x_in, want_in + i * n, n));
            if (want_t && (fabsf(t - want_t[i]) > 1e-6f * fabsf(want_t[i]) ||
                           fabsf(sg - want_s[i]) > 1e-6f * fabsf(want_s[i])))
                fail_msg("%s evaluation %d: timestep %.9g sigma %.9g, want %.9g %.9g", names[k], i,
                         (double)t, (double)sg, (double)want_t[i], (double)want_s[i]);
            for (size_t j = 0; j < n; j++) mo[j] = 0.5f * x_in[j] + 0.5f * E[i * n + j];
            if (vkl_sampler_step(s, x, mo, noise ? noise + i * n : NULL, &e)) fail_msg("%s", e.msg);
            d_x = fmaxf(d_x, close_to(names[k], i, x, want_x + i * n, n));
        }
        assert_true(vkl_sampler_done(s));
        assert_int_equal(vkl_sampler_eval_count(s), evals);
        assert_int_equal(vkl_sampler_step_index(s), 20);
        fprintf(stderr, "loop.%-16s %2d evaluations, max abs diff model_input %.2g, x %.2g (|x| %.3g)\n",
                names[k], evals, (double)d_in, (double)d_x,
                (double)max_abs(want_x + (size_t)(evals - 1) * n, n));
        free(want_in);
        free(want_x);
        free(want_t);
        free(want_s);
        free(noise);
        vkl_sampler_free(s);
    }
    free(x);
    free(x_in);
    free(mo);
    free(x0);
    free(E);
    cJSON_Delete(all);
    free(text);
    vkl_st_close(f);
}

/* ---- a perfect denoiser: exactly known end points ----
 * The oracle knows the clean latents x0 and answers with the eps (or v) that
 * the current input implies. Every sampler must then end where the algebra
 * says: at x0 when the schedule ends at sigma 0, otherwise on the noising
 * path alpha*x0 + sigma*e of the starting noise direction e. */
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

static void perfect_denoiser(void **state)
{
    (void)state;
    enum { N = 96, STEPS = 10 };
    float x0[N], noise[N], x[N];
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 5);
    vkl_test_fill(&r, x0, N, -1.0f, 1.0f);
    vkl_rng g;
    vkl_rng_init(&g, 99, VKL_RNG_STREAM_INIT);
    vkl_rng_normal(&g, noise, N);
    int runs = 0;
    double overall = 0;
    for (int conv = 0; conv < 2; conv++)
        for (int kind = 0; kind < 4; kind++)
            for (int sched = 0; sched < 2; sched++)
                for (int pred = 0; pred < 2; pred++) {
                    if (kind == VKL_SAMPLER_DDIM && sched == VKL_SCHEDULE_KARRAS) continue;
                    if (conv == VKL_CONV_DIFFUSERS && kind == VKL_SAMPLER_EULER_A &&
                        sched == VKL_SCHEDULE_KARRAS)
                        continue;
                    vkl_sampler_config c;
                    vkl_sampler_config_default(&c);
                    c.convention = (vkl_convention)conv;
                    c.kind = (vkl_sampler_kind)kind;
                    c.schedule = (vkl_schedule_kind)sched;
                    c.prediction = (vkl_sd_prediction)pred;
                    c.steps = STEPS;
                    c.eta = kind == VKL_SAMPLER_DDIM ? 0.0f : 1.0f;
                    vkl_sampler *s;
                    vkl_err e = {{0}};
                    if (vkl_sampler_create(&c, N, &s, &e)) fail_msg("%s", e.msg);
                    const vkl_schedule *sc = vkl_sampler_schedule(s);
                    memcpy(x, noise, sizeof x);
                    oracle o = {x0, N, (vkl_sd_prediction)pred, 0};
                    vkl_rng step_rng;
                    vkl_rng_init(&step_rng, 99, VKL_RNG_STREAM_STEP);
                    vkl_sampler_callbacks cb = {.model = oracle_fn, .model_user = &o,
                                                .noise = vkl_rng_noise_fn, .noise_user = &step_rng,
                                                .guidance_scale = 1.0f};
                    if (vkl_sampler_run(s, x, &cb, &e)) fail_msg("%s", e.msg);
                    assert_int_equal(o.calls, STEPS);
                    /* where the noising path ends: sigma of the last entry */
                    double s_end = sc->sigmas[STEPS], s0 = sc->sigmas[0];
                    double a_end = 1 / sqrt(1 + s_end * s_end), a0 = 1 / sqrt(1 + s0 * s0);
                    const int kspace = conv == VKL_CONV_A1111 ? kind != VKL_SAMPLER_DDIM
                                                              : kind <= VKL_SAMPLER_EULER_A;
                    double worst = 0;
                    for (int j = 0; j < N; j++) {
                        double want;
                        if (kspace) {
                            want = x0[j] + s_end * ((double)noise[j] * sc->init_noise_sigma - x0[j]) / s0;
                        } else {
                            /* VP space: x_T = noise, direction e = (x_T - a0 x0) / (s0 a0) */
                            double dir = ((double)noise[j] - a0 * x0[j]) / (s0 * a0);
                            want = a_end * x0[j] + s_end * a_end * dir;
                        }
                        worst = fmax(worst, fabs(x[j] - want));
                    }
                    if (worst > 1e-5)
                        fail_msg("%s %s %s %s: end point off by %.3g", vkl_convention_name(c.convention),
                                 vkl_sampler_kind_name(c.kind), vkl_schedule_kind_name(c.schedule),
                                 pred ? "v" : "eps", worst);
                    overall = fmax(overall, worst);
                    runs++;
                    vkl_sampler_free(s);
                }
    fprintf(stderr, "perfect denoiser: %d runs, end points within %.2g\n", runs, overall);
    assert_int_equal(runs, 26);
}

/* ---- the loop driver replays the recorded euler_a run bit for bit ---- */
typedef struct {
    const float *out, *noise;
    size_t n;
    int model_calls, noise_calls, progress_calls, cancel_at;
} replayer;

static int replay_model(void *user, const float *x_in, float t, float sigma, float *out, vkl_err *e)
{
    (void)x_in;
    (void)t;
    (void)sigma;
    (void)e;
    replayer *r = user;
    memcpy(out, r->out + 2 * (size_t)r->model_calls * r->n, 2 * r->n * sizeof *out);
    r->model_calls++;
    return 0;
}

static void replay_noise(void *user, float *out, size_t n)
{
    replayer *r = user;
    /* k-diffusion draws step i's noise at step i; the driver asks only when used */
    memcpy(out, r->noise + (size_t)(r->model_calls - 1) * n, n * sizeof *out);
    r->noise_calls++;
}

static int replay_progress(void *user, int step, int steps, const float *x, const float *den)
{
    replayer *r = user;
    assert_int_equal(steps, 8);
    assert_int_equal(step, ++r->progress_calls);
    assert_non_null(x);
    assert_non_null(den);
    return r->cancel_at && step == r->cancel_at;
}

static void driver(void **state)
{
    (void)state;
    const char *rel = VEC "kdiff/kdiff_euler_a_karras.safetensors";
    VKL_REQUIRE_SHARED(rel);
    vkl_st_file *f = open_rec(rel);
    const size_t n = nelem(f, "init_latents");
    float *x = load(f, "init_latents", n);
    float *x2 = malloc(n * sizeof *x2);
    memcpy(x2, x, n * sizeof *x);
    float *out = load(f, "unet_output", 16 * n);
    float *noise = load(f, "step_noise", 8 * n);
    float *fin = load(f, "final_latents", n);
    vkl_sampler_config c;
    vkl_sampler_config_default(&c);
    vkl_err e = {{0}};
    c.steps = 8;
    assert_int_equal(vkl_sampler_config_set_name(&c, "euler_ancestral", &e), 0);
    c.schedule = VKL_SCHEDULE_KARRAS;
    vkl_sampler *s;
    assert_int_equal(vkl_sampler_create(&c, n, &s, &e), 0);
    replayer r = {out, noise, n, 0, 0, 0, 0};
    vkl_sampler_callbacks cb = {replay_model, &r, replay_noise, &r, replay_progress, &r, 7.5f};
    if (vkl_sampler_run(s, x, &cb, &e)) fail_msg("%s", e.msg);
    assert_memory_equal(x, fin, n * sizeof *x);
    assert_int_equal(r.model_calls, 8);
    assert_int_equal(r.noise_calls, 7); /* none for the last step to sigma 0 */
    assert_int_equal(r.progress_calls, 8);
    assert_true(vkl_sampler_done(s));
    assert_int_equal(vkl_sampler_step(s, x, out, noise, &e), -1);
    assert_non_null(strstr(e.msg, "all 8 steps"));
    vkl_sampler_free(s);

    /* cancelling from the progress callback */
    assert_int_equal(vkl_sampler_create(&c, n, &s, &e), 0);
    replayer r2 = {out, noise, n, 0, 0, 0, 3};
    vkl_sampler_callbacks cb2 = {replay_model, &r2, replay_noise, &r2, replay_progress, &r2, 7.5f};
    assert_int_equal(vkl_sampler_run(s, x2, &cb2, &e), -1);
    assert_non_null(strstr(e.msg, "cancelled after step 3/8"));
    assert_int_equal(vkl_sampler_step_index(s), 3);
    vkl_sampler_free(s);

    /* Euler a without a noise source */
    assert_int_equal(vkl_sampler_create(&c, n, &s, &e), 0);
    cb2.noise = NULL;
    assert_int_equal(vkl_sampler_run(s, x2, &cb2, &e), -1);
    assert_non_null(strstr(e.msg, "noise"));
    vkl_sampler_free(s);
    free(x);
    free(x2);
    free(out);
    free(noise);
    free(fin);
    vkl_st_close(f);
}

static void names(void **state)
{
    (void)state;
    static const struct { const char *name; vkl_sampler_kind kind; int karras; } ok[] = {
        {"euler", VKL_SAMPLER_EULER, 0},        {"Euler", VKL_SAMPLER_EULER, 0},
        {"euler_ancestral", VKL_SAMPLER_EULER_A, 0}, {"euler_a", VKL_SAMPLER_EULER_A, 0},
        {"Euler a", VKL_SAMPLER_EULER_A, 0},    {"ddim", VKL_SAMPLER_DDIM, 0},
        {"DDIM", VKL_SAMPLER_DDIM, 0},          {"dpmpp_2m", VKL_SAMPLER_DPMPP_2M, 0},
        {"DPM++ 2M", VKL_SAMPLER_DPMPP_2M, 0},  {"DPM++ 2M Karras", VKL_SAMPLER_DPMPP_2M, 1},
        {"dpmpp_2m_karras", VKL_SAMPLER_DPMPP_2M, 1}, {"euler_karras", VKL_SAMPLER_EULER, 1},
        {"heun", VKL_SAMPLER_HEUN, 0},          {"Heun", VKL_SAMPLER_HEUN, 0},
        {"lms", VKL_SAMPLER_LMS, 0},            {"LMS Karras", VKL_SAMPLER_LMS, 1},
        {"dpmpp_2m_sde", VKL_SAMPLER_DPMPP_2M_SDE, 0}, {"DPM++ 2M SDE", VKL_SAMPLER_DPMPP_2M_SDE, 0},
        {"DPM++ 2M SDE Karras", VKL_SAMPLER_DPMPP_2M_SDE, 1},
        {"dpmpp_sde", VKL_SAMPLER_DPMPP_SDE, 0}, {"DPM++ SDE", VKL_SAMPLER_DPMPP_SDE, 0},
        {"DPM++ SDE Karras", VKL_SAMPLER_DPMPP_SDE, 1}, {"dpmpp_sde_karras", VKL_SAMPLER_DPMPP_SDE, 1},
    };
    vkl_err e = {{0}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        vkl_sampler_config c;
        vkl_sampler_config_default(&c);
        if (vkl_sampler_config_set_name(&c, ok[i].name, &e)) fail_msg("%s: %s", ok[i].name, e.msg);
        assert_int_equal(c.kind, ok[i].kind);
        assert_int_equal(c.schedule, ok[i].karras ? VKL_SCHEDULE_KARRAS : VKL_SCHEDULE_NORMAL);
        assert_true(c.eta == (c.kind == VKL_SAMPLER_DDIM ? 0.0f : 1.0f));
        /* the A1111 name of the kind reads back as the same kind */
        vkl_sampler_config c2;
        vkl_sampler_config_default(&c2);
        c2.kind = VKL_SAMPLER_DDIM;
        assert_int_equal(vkl_sampler_config_set_name(&c2, vkl_sampler_kind_a1111_name(c.kind), &e), 0);
        assert_int_equal(c2.kind, c.kind);
    }
    vkl_sampler_config ce;
    vkl_sampler_config_default(&ce);
    assert_int_equal(vkl_sampler_config_set_name(&ce, "DPM++ 2M SDE Exponential", &e), 0);
    assert_int_equal(ce.kind, VKL_SAMPLER_DPMPP_2M_SDE);
    assert_int_equal(ce.schedule, VKL_SCHEDULE_EXPONENTIAL);
    assert_string_equal(vkl_sampler_kind_a1111_name(VKL_SAMPLER_DPMPP_SDE), "DPM++ SDE");
    assert_string_equal(vkl_sampler_kind_a1111_name(VKL_SAMPLER_DPMPP_2M_SDE), "DPM++ 2M SDE");
    assert_string_equal(vkl_sampler_kind_a1111_name(VKL_SAMPLER_LMS), "LMS");
    assert_string_equal(vkl_sampler_kind_name(VKL_SAMPLER_DPMPP_2M_SDE), "dpmpp_2m_sde");
    static const char *bad[] = {"dpm2", "DPM++ 3M SDE", "", "DDIM Karras", "euler_ancestral_x",
                                "DDIM Exponential", "heun_sgm"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        vkl_sampler_config c;
        vkl_sampler_config_default(&c);
        assert_int_equal(vkl_sampler_config_set_name(&c, bad[i], &e), -1);
        assert_non_null(strstr(e.msg, bad[i]));
    }
    vkl_convention cv;
    assert_int_equal(vkl_convention_parse("diffusers", &cv, &e), 0);
    assert_int_equal(cv, VKL_CONV_DIFFUSERS);
    assert_int_equal(vkl_convention_parse("comfy", &cv, &e), -1);
    assert_string_equal(vkl_sampler_kind_name(VKL_SAMPLER_EULER_A), "euler_ancestral");
}

static int failing_model(void *user, const float *x_in, float t, float sigma, float *out, vkl_err *e)
{
    (void)user;
    (void)x_in;
    (void)sigma;
    (void)out;
    return vkl_fail(e, "unet: out of device memory at t=%g", (double)t);
}

static void bad_input(void **state)
{
    (void)state;
    vkl_sampler_config c;
    vkl_sampler_config_default(&c);
    vkl_sampler *s;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sampler_create(&c, 0, &s, &e), -1);
    c.eta = NAN;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);
    assert_non_null(strstr(e.msg, "eta"));
    vkl_sampler_config_default(&c);
    c.convention = VKL_CONV_DIFFUSERS;
    c.kind = VKL_SAMPLER_EULER_A;
    c.schedule = VKL_SCHEDULE_KARRAS;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);
    assert_non_null(strstr(e.msg, "Karras"));
    c.schedule = VKL_SCHEDULE_NORMAL;
    c.steps = 0;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), -1);

    /* a non-finite model output is reported, naming the step */
    vkl_sampler_config_default(&c);
    c.steps = 4;
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), 0);
    float x[16] = {0}, out[16] = {0};
    out[5] = NAN;
    assert_int_equal(vkl_sampler_step(s, x, out, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "step 1/4"));
    assert_non_null(strstr(e.msg, "not finite"));
    assert_int_equal(vkl_sampler_step_cfg(s, x, out, out, INFINITY, NULL, &e), -1);
    vkl_sampler_free(s);

    /* the model's own error comes back with the step in front */
    assert_int_equal(vkl_sampler_create(&c, 16, &s, &e), 0);
    vkl_sampler_callbacks cb = {.model = failing_model, .guidance_scale = 7.5f};
    assert_int_equal(vkl_sampler_run(s, x, &cb, &e), -1);
    assert_non_null(strstr(e.msg, "step 1/4"));
    assert_non_null(strstr(e.msg, "out of device memory"));
    cb.model = NULL;
    assert_int_equal(vkl_sampler_run(s, x, &cb, &e), -1);
    vkl_sampler_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replay_kdiff),
        cmocka_unit_test(replay_diffusers),
        cmocka_unit_test(diffusers_loops),
        cmocka_unit_test(perfect_denoiser),
        cmocka_unit_test(driver),
        cmocka_unit_test(names),
        cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
