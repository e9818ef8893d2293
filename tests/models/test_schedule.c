/* Noise schedules against the diffusers 0.25.1 scheduler tables
 * (refkit/sd/vectors/schedulers.safetensors, configs in schedulers.json) and
 * the k-diffusion tables of refkit/sd/vectors/kdiff.
 *
 * Tolerances: integer timesteps (DDIM, DPM-Solver) exact; float timesteps,
 * sigmas, alphas_cumprod and init_noise_sigma within 1e-6 relative (the
 * references are float32; the computation follows their precision step by
 * step, so most values are bit-equal and the rest differ by an ulp of libm). */
#include "vkl_test.h"
#include "io/text.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "sd/schedule.h"

#define SCHED_ST "refkit/sd/vectors/schedulers.safetensors"
#define SCHED_JSON "refkit/sd/vectors/schedulers.json"
#define KDIFF_DIR "refkit/sd/vectors/kdiff/"

static const double REL = 1e-6;

static vkl_st_file *open_st(const char *rel)
{
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(vkl_test_shared_path(rel), &f, &e)) fail_msg("%s", e.msg);
    return f;
}

/* Tensor `name` as floats (integers converted exactly); n must match. */
static float *read_tensor(const vkl_st_file *f, const char *name, size_t *n)
{
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) fail_msg("%s: tensor %s missing", vkl_st_path(f), name);
    float *p = malloc((t->nelem ? t->nelem : 1) * sizeof *p);
    assert_non_null(p);
    vkl_err e = {{0}};
    if (vkl_st_read(f, t, VKL_F32, p, &e)) fail_msg("%s", e.msg);
    *n = (size_t)t->nelem;
    return p;
}

/* Largest relative error; fails when above tol. */
static double check_rel(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double r = want[i] != 0 ? d / fabs((double)want[i]) : d;
        if (r > worst || isnan(r)) {
            worst = isnan(r) ? INFINITY : r;
            at = i;
        }
    }
    if (worst > tol)
        fail_msg("%s: element %zu is %.9g, want %.9g (rel %.3g > %.3g)", what, at, (double)got[at],
                 (double)want[at], worst, tol);
    return worst;
}

static size_t count_not_equal(const float *a, const float *b, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += a[i] != b[i];
    return c;
}

static void table(vkl_noise_table *t, vkl_acp_precision prec)
{
    vkl_beta_params p;
    vkl_beta_params_sd(&p);
    vkl_err e = {{0}};
    if (vkl_noise_table_init(t, &p, prec, &e)) fail_msg("%s", e.msg);
}

static void diffusers_tables(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(SCHED_ST);
    vkl_st_file *f = open_st(SCHED_ST);
    vkl_noise_table t;
    table(&t, VKL_ACP_F32);
    size_t n;
    float *betas = read_tensor(f, "betas", &n);
    assert_int_equal(n, 1000);
    float *acp = read_tensor(f, "alphas_cumprod", &n);
    double rb = check_rel("betas", t.betas, betas, n, REL);
    double ra = check_rel("alphas_cumprod (float32)", t.alphas_cumprod, acp, n, REL);
    fprintf(stderr, "diffusers betas: %zu/1000 differ (max rel %.2g); alphas_cumprod: %zu differ "
                    "(max rel %.2g)\n", count_not_equal(t.betas, betas, n), rb,
            count_not_equal(t.alphas_cumprod, acp, n), ra);
    free(betas);
    free(acp);
    vkl_noise_table_free(&t);
    vkl_st_close(f);
}

/* A diffusers config (schedulers.json entry) as vklora's schedule rule. */
static vkl_schedule_spec spec_from_config(const cJSON *c, int steps)
{
    vkl_schedule_spec sp = {0};
    const char *cls = cJSON_GetObjectItem(c, "_class_name")->valuestring;
    if (!strcmp(cls, "DDIMScheduler")) sp.rule = VKL_RULE_DDIM;
    else if (!strcmp(cls, "DPMSolverMultistepScheduler")) sp.rule = VKL_RULE_DIFFUSERS_DPM;
    else sp.rule = VKL_RULE_DIFFUSERS_EULER; /* Euler, Euler ancestral, LMS */
    vkl_err e = {{0}};
    if (vkl_spacing_parse(cJSON_GetObjectItem(c, "timestep_spacing")->valuestring, &sp.spacing, &e))
        fail_msg("%s", e.msg);
    const cJSON *k = cJSON_GetObjectItem(c, "use_karras_sigmas");
    sp.kind = cJSON_IsTrue(k) ? VKL_SCHEDULE_KARRAS : VKL_SCHEDULE_NORMAL;
    sp.steps_offset = cJSON_GetObjectItem(c, "steps_offset")->valueint;
    sp.set_alpha_to_one = cJSON_IsTrue(cJSON_GetObjectItem(c, "set_alpha_to_one"));
    sp.steps = steps;
    return sp;
}

static void diffusers_schedules(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(SCHED_ST);
    VKL_REQUIRE_SHARED(SCHED_JSON);
    vkl_st_file *f = open_st(SCHED_ST);
    char *text = NULL;
    vkl_err e = {{0}};
    if (vkl_read_text_file(vkl_test_shared_path(SCHED_JSON), 1 << 20, &text, NULL, &e))
        fail_msg("%s", e.msg);
    /* Python's json writes -Infinity (lambda_min_clipped), which is not JSON */
    for (char *p = strstr(text, "-Infinity"); p; p = strstr(p, "-Infinity")) memcpy(p, "-1e+99999", 9);
    cJSON *all = cJSON_Parse(text);
    if (!all) fail_msg("%s: not JSON near \"%.40s\"", SCHED_JSON, cJSON_GetErrorPtr());
    vkl_noise_table t;
    table(&t, VKL_ACP_F32);
    /* heun's tables are per model evaluation (repeated entries): test_sampler
     * checks them evaluation by evaluation; pndm is no vklora sampler. Every
     * other scheduler of the set is checked here. */
    static const char *names[] = {"ddim", "dpmpp_2m", "dpmpp_2m_karras", "euler", "euler_a",
                                  "euler_karras", "euler_leading", "euler_trailing", "lms"};
    static const int steps[] = {8, 20};
    int checked = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        const cJSON *c = cJSON_GetObjectItem(all, names[i]);
        if (!c) fail_msg("schedulers.json has no %s", names[i]);
        for (int si = 0; si < 2; si++) {
            vkl_schedule_spec sp = spec_from_config(c, steps[si]);
            vkl_schedule s;
            if (vkl_schedule_build(&t, &sp, &s, &e)) fail_msg("%s n%d: %s", names[i], steps[si], e.msg);
            char key[96], what[128];
            size_t n;
            snprintf(key, sizeof key, "%s.n%d.timesteps", names[i], steps[si]);
            float *ts = read_tensor(f, key, &n);
            assert_int_equal(n, (size_t)s.steps);
            const vkl_st_tensor *tt = vkl_st_find(f, key);
            assert_int_equal(s.integer_timesteps, tt->dtype == VKL_I64);
            snprintf(what, sizeof what, "%s", key);
            double rt = s.integer_timesteps ? (memcmp(s.timesteps, ts, n * sizeof *ts)
                                                   ? (check_rel(what, s.timesteps, ts, n, 0), 0)
                                                   : 0)
                                            : check_rel(what, s.timesteps, ts, n, REL);
            free(ts);
            double rs = 0;
            snprintf(key, sizeof key, "%s.n%d.sigmas", names[i], steps[si]);
            if (vkl_st_find(f, key)) {
                float *sg = read_tensor(f, key, &n);
                assert_int_equal(n, (size_t)s.steps + 1);
                rs = check_rel(key, s.sigmas, sg, n, REL);
                free(sg);
            }
            snprintf(key, sizeof key, "%s.n%d.init_noise_sigma", names[i], steps[si]);
            float *ins = read_tensor(f, key, &n);
            check_rel(key, &s.init_noise_sigma, ins, 1, REL);
            fprintf(stderr, "%-16s n%-2d timesteps max rel %.2g, sigmas max rel %.2g, init %g\n",
                    names[i], steps[si], rt, rs, (double)s.init_noise_sigma);
            free(ins);
            vkl_schedule_free(&s);
            checked++;
        }
    }
    assert_int_equal(checked, 18);
    vkl_noise_table_free(&t);
    cJSON_Delete(all);
    free(text);
    vkl_st_close(f);
}

static void kdiff_tables(void **state)
{
    (void)state;
    static const char *files[] = {"kdiff_euler_normal", "kdiff_euler_a_karras",
                                  "kdiff_dpmpp_2m_karras"};
    static const vkl_schedule_kind kinds[] = {VKL_SCHEDULE_NORMAL, VKL_SCHEDULE_KARRAS,
                                              VKL_SCHEDULE_KARRAS};
    vkl_noise_table t;
    table(&t, VKL_ACP_F64);
    for (int i = 0; i < 3; i++) {
        char buf[256];
        snprintf(buf, sizeof buf, KDIFF_DIR "%s.safetensors", files[i]);
        const char *rel = buf;
        VKL_REQUIRE_SHARED(rel);
        vkl_st_file *f = open_st(rel);
        size_t n;
        float *acp = read_tensor(f, "alphas_cumprod", &n);
        assert_int_equal(n, 1000);
        double ra = check_rel("alphas_cumprod (float64 LDM)", t.alphas_cumprod, acp, n, REL);
        float *ms = read_tensor(f, "model_sigmas", &n);
        double rm = check_rel("model_sigmas", t.sigmas, ms, n, REL);
        fprintf(stderr, "%s: alphas_cumprod %zu/1000 differ (max rel %.2g), model_sigmas %zu "
                        "differ (max rel %.2g)\n", files[i], count_not_equal(t.alphas_cumprod, acp, n),
                ra, count_not_equal(t.sigmas, ms, n), rm);
        free(acp);
        free(ms);

        float *sg = read_tensor(f, "sigmas", &n);
        float *ts = read_tensor(f, "timesteps", &n);
        vkl_schedule_spec sp = {.rule = VKL_RULE_KDIFF, .kind = kinds[i], .steps = (int)n};
        vkl_schedule s;
        vkl_err e = {{0}};
        if (vkl_schedule_build(&t, &sp, &s, &e)) fail_msg("%s", e.msg);
        double rs = check_rel("kdiff sigmas", s.sigmas, sg, n + 1, REL);
        double rt = check_rel("kdiff timesteps", s.timesteps, ts, n, REL);
        assert_true(s.sigmas[n] == 0.0f);
        assert_true(s.init_noise_sigma == s.sigmas[0]);
        fprintf(stderr, "%s: sigmas max rel %.2g (%zu differ), timesteps max rel %.2g (%zu differ)\n",
                files[i], rs, count_not_equal(s.sigmas, sg, n + 1), rt,
                count_not_equal(s.timesteps, ts, n));
        vkl_schedule_free(&s);
        free(sg);
        free(ts);
        vkl_st_close(f);
    }
    vkl_noise_table_free(&t);
}

/* Exactly known values of the interpolations. */
static void kdiff_interpolation(void **state)
{
    (void)state;
    vkl_noise_table t;
    table(&t, VKL_ACP_F64);
    for (int k = 0; k < t.n; k += 37) {
        /* an integer timestep lands on its table entry up to exp(log(x)) */
        float s = vkl_kdiff_t_to_sigma(&t, (float)k);
        assert_true(fabsf(s - t.sigmas[k]) <= 2e-7f * t.sigmas[k]);
        float back = vkl_kdiff_sigma_to_t(&t, t.sigmas[k]);
        assert_true(fabsf(back - (float)k) <= 1e-3f);
    }
    /* halfway in log sigma is halfway in t */
    float mid = expf(0.5f * (t.log_sigmas[500] + t.log_sigmas[501]));
    assert_true(fabsf(vkl_kdiff_sigma_to_t(&t, mid) - 500.5f) < 1e-3f);
    /* outside the table: clamped to its ends */
    assert_true(vkl_kdiff_sigma_to_t(&t, 1e-4f) == 0.0f);
    assert_true(vkl_kdiff_sigma_to_t(&t, 1e4f) == 999.0f);
    assert_true(vkl_kdiff_sigma_to_t(&t, 0.0f) == 0.0f);
    /* Karras endpoints are the given extremes and the schedule decreases */
    float k[11];
    vkl_kdiff_sigmas_karras(0.03, 14.6, 7.0, 10, k);
    assert_true(fabsf(k[0] - 14.6f) < 1e-4f && fabsf(k[9] - 0.03f) < 1e-6f && k[10] == 0.0f);
    for (int i = 1; i < 10; i++) assert_true(k[i] < k[i - 1]);
    vkl_noise_table_free(&t);
}

/* exponential: exp(linspace(log sigma_max, log sigma_min, n)) then 0, with
 * the table's ends (k-diffusion get_sigmas_exponential as A1111 calls it). */
static void exponential_schedule(void **state)
{
    (void)state;
    vkl_noise_table t;
    table(&t, VKL_ACP_F64);
    const double smin = t.sigmas[0], smax = t.sigmas[t.n - 1];
    static const int counts[] = {1, 2, 8, 20, 37};
    double worst = 0;
    for (int c = 0; c < 5; c++) {
        const int n = counts[c];
        vkl_schedule_spec sp = {.rule = VKL_RULE_KDIFF, .kind = VKL_SCHEDULE_EXPONENTIAL, .steps = n};
        vkl_schedule s;
        vkl_err e = {{0}};
        if (vkl_schedule_build(&t, &sp, &s, &e)) fail_msg("%s", e.msg);
        float want[38];
        for (int i = 0; i < n; i++) {
            double frac = n == 1 ? 0.0 : (double)i / (n - 1);
            want[i] = (float)exp(log(smax) + frac * (log(smin) - log(smax)));
        }
        want[n] = 0;
        worst = fmax(worst, check_rel("exponential sigmas", s.sigmas, want, (size_t)n + 1, REL));
        assert_true(s.sigmas[n] == 0.0f);
        for (int i = 1; i < n; i++) assert_true(s.sigmas[i] < s.sigmas[i - 1]);
        /* timesteps: where the sigmas sit in the table, as for every k-diffusion schedule */
        for (int i = 0; i < n; i++)
            assert_true(s.timesteps[i] == vkl_kdiff_sigma_to_t(&t, s.sigmas[i]));
        assert_true(fabsf(s.timesteps[0] - 999.0f) < 1e-3f);
        if (n > 1) assert_true(fabsf(s.timesteps[n - 1]) < 1e-3f);
        assert_true(s.init_noise_sigma == s.sigmas[0]);
        vkl_schedule_free(&s);
    }
    fprintf(stderr, "exponential: sigmas within %.2g of the formula\n", worst);
    vkl_noise_table_free(&t);
}

/* sgm_uniform: t = linspace(t(sigma_max), t(sigma_min), n + 1)[:n],
 * sigma = exp of the log sigma interpolated at t, then 0 (A1111's
 * sd_schedulers.sgm_uniform, ComfyUI's normal_scheduler with sgm=True). */
static void sgm_uniform_schedule(void **state)
{
    (void)state;
    /* a 1000-step table and one of another length: the ends come from the table */
    vkl_beta_params ps[2];
    vkl_beta_params_sd(&ps[0]);
    ps[1] = (vkl_beta_params){VKL_SD_BETA_LINEAR, 0.0001, 0.02, 500};
    double worst = 0;
    for (int tb = 0; tb < 2; tb++) {
        vkl_noise_table t;
        vkl_err e = {{0}};
        if (vkl_noise_table_init(&t, &ps[tb], VKL_ACP_F64, &e)) fail_msg("%s", e.msg);
        const double T = t.n - 1;
        static const int counts[] = {1, 3, 8, 20};
        for (int c = 0; c < 4; c++) {
            const int n = counts[c];
            vkl_schedule_spec sp = {.rule = VKL_RULE_KDIFF, .kind = VKL_SCHEDULE_SGM_UNIFORM, .steps = n};
            vkl_schedule s;
            if (vkl_schedule_build(&t, &sp, &s, &e)) fail_msg("%s", e.msg);
            float want[21];
            for (int i = 0; i < n; i++) {
                double ti = T * (1.0 - (double)i / n), lo = floor(ti), w = ti - lo;
                int l = (int)lo, h = l + (w > 0);
                want[i] = (float)exp((1 - w) * t.log_sigmas[l] + w * t.log_sigmas[h]);
            }
            want[n] = 0;
            worst = fmax(worst, check_rel("sgm_uniform sigmas", s.sigmas, want, (size_t)n + 1, REL));
            assert_true(s.sigmas[0] == vkl_kdiff_t_to_sigma(&t, (float)T));
            for (int i = 0; i < n; i++)
                assert_true(fabs((double)s.timesteps[i] - T * (1.0 - (double)i / n)) < 2e-3);
            /* the same timesteps as the normal schedule one step longer, without its last */
            vkl_schedule_spec np = {.rule = VKL_RULE_KDIFF, .kind = VKL_SCHEDULE_NORMAL, .steps = n + 1};
            vkl_schedule ns;
            if (vkl_schedule_build(&t, &np, &ns, &e)) fail_msg("%s", e.msg);
            assert_memory_equal(s.sigmas, ns.sigmas, (size_t)n * sizeof(float));
            vkl_schedule_free(&ns);
            vkl_schedule_free(&s);
        }
        vkl_noise_table_free(&t);
    }
    fprintf(stderr, "sgm_uniform: sigmas within %.2g of the formula\n", worst);
}

static void linear_betas(void **state)
{
    (void)state;
    vkl_beta_params p = {VKL_SD_BETA_LINEAR, 0.0001, 0.02, 1000};
    vkl_noise_table t;
    vkl_err e = {{0}};
    assert_int_equal(vkl_noise_table_init(&t, &p, VKL_ACP_F64, &e), 0);
    assert_true(t.betas[0] == 0.0001f && t.betas[999] == 0.02f);
    assert_true(fabsf(t.betas[500] - (float)(0.0001 + 500 * (0.0199 / 999))) <= 1e-9f);
    double acp = 1;
    for (int i = 0; i < 1000; i++) acp *= 1 - (0.0001 + i * (0.0199 / 999));
    assert_true(fabs((double)t.alphas_cumprod[999] - acp) <= 1e-6 * acp);
    vkl_noise_table_free(&t);

    /* the float config values are taken back to the decimals of the file */
    vkl_sd_sched_config sc = {.beta_schedule = VKL_SD_BETA_SCALED_LINEAR, .beta_start = 0.00085f,
                              .beta_end = 0.012f, .train_steps = 1000};
    assert_int_equal(vkl_beta_params_from_sd(&sc, &p, &e), 0);
    assert_true(p.beta_start == 0.00085 && p.beta_end == 0.012 && p.train_steps == 1000);
    sc.beta_schedule = VKL_SD_BETA_SQUAREDCOS_CAP_V2;
    assert_int_equal(vkl_beta_params_from_sd(&sc, &p, &e), -1);
    assert_non_null(strstr(e.msg, "beta schedule"));
}

static void bad_input(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    vkl_noise_table t;
    vkl_beta_params p;
    vkl_beta_params_sd(&p);
    p.beta_end = 1.5;
    assert_int_equal(vkl_noise_table_init(&t, &p, VKL_ACP_F32, &e), -1);
    assert_non_null(strstr(e.msg, "betas"));
    vkl_beta_params_sd(&p);
    p.train_steps = 1;
    assert_int_equal(vkl_noise_table_init(&t, &p, VKL_ACP_F32, &e), -1);
    assert_non_null(strstr(e.msg, "num_train_timesteps"));

    table(&t, VKL_ACP_F32);
    vkl_schedule s;
    vkl_schedule_spec sp = {.rule = VKL_RULE_DDIM, .kind = VKL_SCHEDULE_KARRAS, .steps = 8};
    assert_int_equal(vkl_schedule_build(&t, &sp, &s, &e), -1);
    assert_non_null(strstr(e.msg, "Karras"));
    sp.kind = VKL_SCHEDULE_NORMAL;
    sp.steps = 0;
    assert_int_equal(vkl_schedule_build(&t, &sp, &s, &e), -1);
    assert_non_null(strstr(e.msg, "steps"));
    sp.steps = 1000; /* leading with offset 1 reaches timestep 1000 */
    sp.steps_offset = 1;
    assert_int_equal(vkl_schedule_build(&t, &sp, &s, &e), -1);
    assert_non_null(strstr(e.msg, "outside"));
    sp.steps = 1001;
    assert_int_equal(vkl_schedule_build(&t, &sp, &s, &e), -1);
    vkl_timestep_spacing sc;
    assert_int_equal(vkl_spacing_parse("uniform", &sc, &e), -1);
    assert_non_null(strstr(e.msg, "uniform"));
    vkl_schedule_kind k;
    assert_int_equal(vkl_schedule_kind_parse("polyexponential", &k, &e), -1);
    assert_non_null(strstr(e.msg, "polyexponential"));
    assert_int_equal(vkl_schedule_kind_parse("Karras", &k, &e), 0);
    assert_int_equal(k, VKL_SCHEDULE_KARRAS);
    static const struct { const char *name; vkl_schedule_kind kind; const char *a1111; } names[] = {
        {"exponential", VKL_SCHEDULE_EXPONENTIAL, "Exponential"},
        {"Exponential", VKL_SCHEDULE_EXPONENTIAL, "Exponential"},
        {"sgm_uniform", VKL_SCHEDULE_SGM_UNIFORM, "SGM Uniform"},
        {"SGM Uniform", VKL_SCHEDULE_SGM_UNIFORM, "SGM Uniform"},
        {"karras", VKL_SCHEDULE_KARRAS, "Karras"},
        {"Automatic", VKL_SCHEDULE_NORMAL, NULL},
    };
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        assert_int_equal(vkl_schedule_kind_parse(names[i].name, &k, &e), 0);
        assert_int_equal(k, names[i].kind);
        const char *a = vkl_schedule_kind_a1111_name(k);
        if (names[i].a1111) assert_string_equal(a, names[i].a1111);
        else assert_null(a);
    }
    /* the k-diffusion schedules are refused by the diffusers rules */
    sp.steps = 8;
    sp.steps_offset = 1;
    sp.rule = VKL_RULE_DIFFUSERS_EULER;
    sp.kind = VKL_SCHEDULE_EXPONENTIAL;
    assert_int_equal(vkl_schedule_build(&t, &sp, &s, &e), -1);
    assert_non_null(strstr(e.msg, "exponential"));
    sp.rule = VKL_RULE_DIFFUSERS_DPM;
    sp.kind = VKL_SCHEDULE_SGM_UNIFORM;
    assert_int_equal(vkl_schedule_build(&t, &sp, &s, &e), -1);
    assert_non_null(strstr(e.msg, "sgm_uniform"));
    vkl_noise_table_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(diffusers_tables),   cmocka_unit_test(diffusers_schedules),
        cmocka_unit_test(kdiff_tables),       cmocka_unit_test(kdiff_interpolation),
        cmocka_unit_test(exponential_schedule), cmocka_unit_test(sgm_uniform_schedule),
        cmocka_unit_test(linear_betas),       cmocka_unit_test(bad_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
