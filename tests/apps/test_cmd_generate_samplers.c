/* vklora generate with the samplers and schedules people use with SDXL, on
 * the tiny reference model: one small image each for Heun, LMS, DPM++ 2M SDE
 * and DPM++ SDE (each with one of the schedules karras, sgm_uniform,
 * exponential), named in the PNG parameters as AUTOMATIC1111 names them; the
 * SDE noise follows --seed (same initial noise, another seed: other
 * latents); --help lists the names; a convention without the sampler is
 * refused before the model loads. The step equations themselves are checked
 * in tests/models/test_sampler_kdiff.c. */
#include "vkl_test.h"
#include "io/image.h"
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

static char tmp[256];

static int run(const char *args, char **output) { return vkl_test_run_cli(tmp, NULL, args, output); }

static const char *model(void) { return vkl_test_shared_path("refkit/sd/tiny-sd"); }

static char *parameters(const char *png)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, png);
    vkl_png_text *t;
    int nt;
    vkl_err e = {{0}};
    if (vkl_png_read_texts_file(path, &t, &nt, &e)) fail_msg("%s", e.msg);
    const char *p = vkl_png_text_get(t, nt, "parameters");
    assert_non_null(p);
    char *copy = strdup(p);
    vkl_png_texts_free(t, nt);
    return copy;
}

static void read_latents(const char *file, float *out, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    vkl_st_file *f;
    vkl_err e = {{0}};
    if (vkl_st_open(path, &f, &e) || vkl_st_read_f32(f, "latents", out, n, &e)) fail_msg("%s", e.msg);
    vkl_st_close(f);
}

static void each_new_sampler(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    static const struct {
        const char *sampler, *schedule, *cfg, *file, *want;
    } cases[] = {
        /* guidance on one of them; the others run the cond half only, to keep the test short */
        {"Heun", "karras", "7", "heun.png",
         "Steps: 2, Sampler: Heun, Schedule type: Karras, CFG scale: 7, Seed: 5,"},
        {"lms", "sgm_uniform", "1", "lms.png",
         "Steps: 2, Sampler: LMS, Schedule type: SGM Uniform, CFG scale: 1,"},
        {"DPM++ 2M SDE", "exponential", "1", "sde2m.png",
         "Steps: 2, Sampler: DPM++ 2M SDE, Schedule type: Exponential, CFG scale: 1,"},
        {"dpmpp_sde", NULL, "1", "sde.png", "Steps: 2, Sampler: DPM++ SDE, CFG scale: 1, Seed: 5,"},
    };
    /* the same initial noise for every run, so that only the sampler (and for
     * the SDE samplers the seed of their noise) differs */
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e = {{0}};
    float init[64];
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 4);
    vkl_test_fill(&r, init, 64, -2.0f, 2.0f);
    int64_t shape[4] = {1, 4, 4, 4};
    assert_int_equal(vkl_st_writer_add(w, "latents", VKL_F32, 4, shape, init, &e), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/noise.safetensors", tmp);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
    vkl_st_writer_free(w);

    char args[4096];
    float lat[4][64];
    for (int i = 0; i < 4; i++) {
        char sched[64] = "";
        if (cases[i].schedule) snprintf(sched, sizeof sched, "--schedule %s", cases[i].schedule);
        snprintf(args, sizeof args,
                 "generate --model '%s' --prompt cube --steps 2 --width 32 --height 32 --seed 5 --quiet "
                 "--cfg %s --init-noise noise.safetensors --sampler '%s' %s --save-latents lat%d.safetensors "
                 "-o %s",
                 model(), cases[i].cfg, cases[i].sampler, sched, i, cases[i].file);
        char *out = NULL;
        int rc = run(args, &out);
        if (rc) fail_msg("%s: exit %d: %s", args, rc, out ? out : "");
        free(out);
        char *p = parameters(cases[i].file);
        if (!strstr(p, cases[i].want)) fail_msg("%s: parameters \"%s\" lack \"%s\"", cases[i].sampler, p, cases[i].want);
        free(p);
        char f[64];
        snprintf(f, sizeof f, "lat%d.safetensors", i);
        read_latents(f, lat[i], 64);
        for (int j = 0; j < 64; j++) assert_true(lat[i][j] == lat[i][j] && lat[i][j] < 1e6f && lat[i][j] > -1e6f);
    }
    /* four samplers, four different results from the same seed */
    for (int i = 0; i < 4; i++)
        for (int k = i + 1; k < 4; k++) assert_true(vkl_test_max_abs_diff(lat[i], lat[k], 64) > 1e-4f);

    /* DPM++ 2M SDE from the same initial noise under another seed: the
     * Brownian noise follows --seed */
    snprintf(args, sizeof args,
             "generate --model '%s' --prompt cube --steps 2 --width 32 --height 32 --seed 6 --quiet "
             "--cfg 1 --init-noise noise.safetensors --sampler 'DPM++ 2M SDE' --schedule exponential "
             "--save-latents n.safetensors -o n.png",
             model());
    assert_int_equal(run(args, NULL), 0);
    float other[64];
    read_latents("n.safetensors", other, 64);
    assert_true(vkl_test_max_abs_diff(lat[2], other, 64) > 1e-4f);
}

static void help_and_refusals(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(run("generate --help", &out), 0);
    static const char *names[] = {"heun", "lms", "dpmpp_2m_sde", "dpmpp_sde", "\"DPM++ 2M SDE\"",
                                  "\"DPM++ SDE\"", "exponential", "sgm_uniform"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (!strstr(out, names[i])) fail_msg("--help does not name %s", names[i]);
    free(out);
    /* refused before any model is read (the model path does not exist) */
    char args[1024];
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --sampler 'DPM++ SDE' "
                                "--sampler-convention diffusers -o x.png", model());
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "a1111"));
    assert_null(strstr(out, "loaded"));
    free(out);
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --sampler heun --schedule sgm_uniform "
                                "--sampler-convention diffusers -o x.png", model());
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "sgm_uniform"));
    free(out);
    snprintf(args, sizeof args, "generate --model '%s' --prompt x --schedule polyexponential -o x.png", model());
    assert_int_equal(run(args, &out), 2);
    assert_non_null(strstr(out, "polyexponential"));
    free(out);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(tmp);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_new_sampler),
        cmocka_unit_test(help_and_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
