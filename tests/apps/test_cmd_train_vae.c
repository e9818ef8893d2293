/* vklora train-vae end to end on a tiny VAE and the shared emoji images: an
 * interrupted run resumed from its state ends bit for bit where the
 * uninterrupted one does (log, weights, config); an existing output folder
 * is kept unless --force or --resume; bad options and a missing image folder
 * give clear errors. */
#include "vkl_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char tmp[256];

static int run(const char *args, const char *env, char **output) { return vkl_test_run_cli(tmp, env, args, output); }

static char *slurp(const char *name) { return vkl_test_slurp(tmp, name); }

static void write_config(void)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vae.json", tmp);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"_class_name\": \"AutoencoderKL\", \"block_out_channels\": [8, 16], \"layers_per_block\": 1, "
          "\"latent_channels\": 4, \"norm_num_groups\": 4, \"sample_size\": 16}\n", f);
    fclose(f);
}

/* The bytes of a file, for exact comparison (length in *n). */
static char *slurp_bytes(const char *rel, size_t *n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    *n = fread(buf, 1, (size_t)len, f);
    fclose(f);
    return buf;
}

static void expect(const char *args, int status, const char *needle)
{
    char *out = NULL;
    int rc = run(args, NULL, &out);
    if (rc != status || (needle && !strstr(out, needle))) {
        print_error("vklora %s: exit %d (want %d), output:\n%s\n(want \"%s\" in it)\n", args, rc, status, out,
                    needle ? needle : "");
        free(out);
        fail();
    }
    free(out);
}

static void resume_is_exact(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/noto-emoji/test16-128px");
    write_config();
    char common[1024], args[1200];
    snprintf(common, sizeof common,
             "train-vae --images '%s' --config vae.json --size 16 --batch 4 --steps 6 --lr 2e-3 --seed 3 "
             "--kl-weight 1e-4 --save-every 2 --quiet",
             vkl_test_shared_path("data/noto-emoji/test16-128px"));
    char *out = NULL;
    snprintf(args, sizeof args, "%s -o a", common);
    int rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    assert_non_null(strstr(out, "reconstruction PSNR"));
    free(out);
    /* stopped after step 3 as Ctrl-C would: the state of step 3, then resumed */
    snprintf(args, sizeof args, "%s -o b", common);
    assert_int_equal(run(args, "VKLORA_TRAIN_INTERRUPT_AT=3", &out), 130);
    assert_non_null(strstr(out, "--resume"));
    free(out);
    char *latest = slurp("b/state/latest");
    assert_non_null(latest);
    assert_string_equal(latest, "step-000003\n");
    free(latest);
    /* the state of step 2 was replaced by step 3's */
    size_t n;
    assert_null(slurp_bytes("b/state/step-000002/state.json", &n));
    snprintf(args, sizeof args, "%s -o b --resume", common);
    rc = run(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    char *la = slurp("a/train_log.csv"), *lb = slurp("b/train_log.csv");
    assert_non_null(la);
    assert_non_null(lb);
    vkl_test_csv_first_columns(la, 4); /* step, loss, rec, kl: the seconds differ */
    vkl_test_csv_first_columns(lb, 4);
    assert_string_equal(la, lb);
    assert_non_null(strstr(la, "\n6,"));
    free(la);
    free(lb);
    size_t na, nb;
    char *wa = slurp_bytes("a/diffusion_pytorch_model.safetensors", &na),
         *wb = slurp_bytes("b/diffusion_pytorch_model.safetensors", &nb);
    assert_non_null(wa);
    assert_non_null(wb);
    assert_int_equal(na, nb);
    assert_memory_equal(wa, wb, na);
    free(wa);
    free(wb);
    char *ca = slurp("a/config.json"), *cb = slurp("b/config.json");
    assert_string_equal(ca, cb);
    assert_non_null(strstr(ca, "\"_class_name\":\t\"AutoencoderKL\""));
    assert_non_null(strstr(ca, "\"scaling_factor\""));
    free(ca);
    free(cb);

    /* an existing output is kept without --force; --force starts over (f16 weights) */
    snprintf(args, sizeof args, "%s -o a", common);
    expect(args, 1, "--force");
    snprintf(args, sizeof args, "%s -o a --force --steps 1 --dtype f16", common);
    expect(args, 0, "PSNR");
    char *log = slurp("a/train_log.csv");
    int lines = 0;
    for (const char *p = log; *p; p++) lines += *p == '\n';
    assert_int_equal(lines, 2); /* the header and step 1: the old log went */
    free(log);
    /* nothing to resume in a folder without a state */
    snprintf(args, sizeof args, "%s -o nothing --resume", common);
    expect(args, 1, "no training state");
}

static void bad_options(void **state)
{
    (void)state;
    write_config();
    expect("train-vae --config vae.json -o o", 2, "--images and -o are required");
    expect("train-vae --images x -o o", 2, "exactly one of --init");
    expect("train-vae --images x --init a --config vae.json -o o", 2, "exactly one of --init");
    expect("train-vae --images x --config vae.json -o o --loss huber", 2, "--loss 'huber': expected l1 or mse");
    expect("train-vae --images x --config vae.json -o o --size 0", 2, "--size '0': expected an integer");
    expect("train-vae --images x --config vae.json -o o --steps many", 2, "--steps 'many': expected an integer");
    expect("train-vae --images x --config vae.json -o o --lr -1", 2, "--lr '-1': expected a number");
    expect("train-vae --images x --config vae.json -o o --dtype bf16", 2, "--dtype 'bf16': expected one of f32|f16");
    expect("train-vae --images x --config vae.json -o o --batch", 2, "--batch needs a value");
    expect("train-vae --images x --config vae.json -o o --frobnicate 1", 2, "unknown option '--frobnicate'");
    expect("train-vae --help", 0, "--kl-weight");
    expect("train-vae --images /nonexistent/images --config vae.json -o o", 1, "/nonexistent/images: no such folder");
    if (!vkl_test_shared_exists("data/noto-emoji/test16-128px")) return;
    char args[1024];
    const char *imgs = vkl_test_shared_path("data/noto-emoji/test16-128px");
    snprintf(args, sizeof args, "train-vae --images '%s' --config missing.json -o o2", imgs);
    expect(args, 1, "missing.json");
    snprintf(args, sizeof args, "train-vae --images '%s' --init nowhere -o o3", imgs);
    expect(args, 1, "nowhere");
    snprintf(args, sizeof args, "train-vae --images '%s' --config vae.json -o o4 --size 15", imgs);
    expect(args, 1, "not a multiple of the VAE's down-sampling factor 2");
    snprintf(args, sizeof args, "train-vae --images '%s' --config vae.json -o o5 --batch 17", imgs);
    expect(args, 1, "fewer than one batch of 17");
    char path[512];
    snprintf(path, sizeof path, "%s/groups.json", tmp);
    FILE *f = fopen(path, "w");
    fputs("{\"block_out_channels\": [8, 12], \"norm_num_groups\": 8}\n", f);
    fclose(f);
    snprintf(args, sizeof args, "train-vae --images '%s' --config groups.json -o o6", imgs);
    expect(args, 1, "norm groups");
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
        cmocka_unit_test(resume_is_exact),
        cmocka_unit_test(bad_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
