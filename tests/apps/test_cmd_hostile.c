/* Bad input a new (or hostile) user gives the command line, answered before
 * any model is loaded where it can be, with the exit codes of every command
 * (1 error, 2 usage), a message naming the bad value, and nothing written:
 * generate's output name, folder, size, guidance, adapter weights and seed;
 * merge's weights, mixed model families and an existing output; lm
 * generate's adapters for another model and device names. */
#include "vkl_test.h"
#include "io/image.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


static int exists(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", vkl_test_dir, name);
    struct stat st;
    return !stat(path, &st);
}

typedef struct {
    const char *args; /* after "generate --model TINY --prompt cat --steps 1" */
    int status;
    const char *says;
} bad_case;

static void generate_checks_before_loading(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char path[512];
    snprintf(path, sizeof path, "%s/a.safetensors", vkl_test_dir);
    FILE *f = fopen(path, "w"); /* found, never read: every case fails first */
    fputs("x", f);
    fclose(f);
    const bad_case cases[] = {
        {"-o out.jpg", 2, "*.png"},
        {"-o out", 2, "*.png"},
        {"-o nofolder/x.png", 1, "nofolder does not exist"},
        {"-o . ", 2, "*.png"},
        {"--width 65", 1, "--width 65"},
        {"--height 63", 1, "--height 63"},
        {"--cfg inf", 2, "'inf'"},
        {"--cfg nan", 2, "'nan'"},
        {"--cfg 1e9", 2, "--cfg"},
        {"--strength 2", 2, "--strength"},
        {"--seed -5", 2, "'-5'"},
        {"--seed 1x", 2, "'1x'"},
        {"--lora a.safetensors:abc", 1, "'abc'"},
        {"--lora a.safetensors:nan", 1, "'nan'"},
        {"--lora a.safetensors:1:inf", 1, "'inf'"},
        {"--lora missing.safetensors:0.5", 1, "missing.safetensors not found"},
        {"--prompt '<lora:a:abc>' --lora-dir .", 1, "'abc'"},
        {"--prompt '<lora:a:dyn=4>' --lora-dir .", 1, "'dyn='"},
        {"--prompt '<lora:a:1>'", 1, "--lora-dir"},
        {"--prompt '<lora:a:1'", 1, "unclosed"},
        {"--lora-sweep a.safetensors:0,x", 1, "'x'"},
        {"--init-image missing.png", 1, "missing.png"},
        {"--tokenizer missing-vocab", 1, "missing-vocab"},
        {"--steps 0", 2, "--steps"},
        {"--bogus 1", 2, "unknown option '--bogus'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[2048], *out;
        snprintf(args, sizeof args, "generate --model '%s' --prompt cat --steps 1 %s", vkl_test_shared_path("refkit/sd/tiny-sd"),
                 cases[i].args);
        int rc = vkl_test_cli(args, NULL, &out);
        if (rc != cases[i].status || !strstr(out, cases[i].says) || strstr(out, "loaded ")) {
            print_error("generate ... %s: exit %d (want %d), output:\n%s(want it to say \"%s\", before loading)\n",
                        cases[i].args, rc, cases[i].status, out, cases[i].says);
            free(out);
            fail();
        }
        free(out);
    }
    assert_false(exists("out.jpg") || exists("out.png") || exists("out"));
}

/* --seed -1: a random seed, printed and stored in the PNG */
static void seed_minus_one_is_random(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char args[2048], *out;
    snprintf(args, sizeof args, "generate --model '%s' --prompt cat --steps 1 --width 64 --height 64 --seed -1 -o s.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    const char *p = strstr(out, "seed ");
    assert_non_null(p);
    unsigned long long seed = strtoull(p + 5, NULL, 10);
    assert_true(seed < 4294967296ull);
    free(out);
    assert_int_equal(vkl_test_cli("info s.png", NULL, &out), 0);
    char want[64];
    snprintf(want, sizeof want, "Seed: %llu", seed);
    assert_non_null(strstr(out, want));
    free(out);
}

static void merge_refuses_bad_input(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora");
    const char *sd = vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors");
    char sdp[1024], lmp[1024], args[4096], *out;
    snprintf(sdp, sizeof sdp, "%s", sd);
    snprintf(lmp, sizeof lmp, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-lora/adapter_model.safetensors"));
    snprintf(args, sizeof args, "merge --lora '%s:nan' -o m.safetensors", sdp);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 2);
    assert_non_null(strstr(out, "'nan'"));
    free(out);
    snprintf(args, sizeof args, "merge --lora '%s:0.5' --lora '%s:0.5' --to peft -o m.safetensors", sdp, lmp);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "cannot be merged"));
    free(out);
    assert_false(exists("m.safetensors"));
    snprintf(args, sizeof args, "merge --lora '%s:0.5' -o m.safetensors", sdp);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    free(out);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "--force"));
    free(out);
    snprintf(args, sizeof args, "merge --lora '%s:0.5' -o m.safetensors --force", sdp);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    free(out);
}

static void lm_refuses_foreign_adapter_and_bad_device(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama");
    char args[4096], *out;
    /* an SD adapter in PEFT layout: its modules are no projection of the LM */
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --max-tokens 2 --lora '%s'",
             vkl_test_shared_path("refkit/lm/tiny-llama"),
             vkl_test_shared_path("refkit/sd/vectors/lora/lora_peft.safetensors"));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc != 1 || !strstr(out, "match no projection")) print_error("%s\n", out);
    assert_int_equal(rc, 1);
    assert_non_null(strstr(out, "match no projection"));
    free(out);
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --max-tokens 2 --lora '%s:abc'",
             vkl_test_shared_path("refkit/lm/tiny-llama"), vkl_test_shared_path("refkit/lm/tiny-llama-lora"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 2);
    assert_non_null(strstr(out, "'abc'"));
    free(out);
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --max-tokens 2 --device abc",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "--device abc"));
    free(out);
    snprintf(args, sizeof args, "--device 5 generate --model '%s' --prompt cat --steps 1 --width 64 --height 64",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "--device 5"));
    assert_null(strstr(out, "VKLORA_DEVICE"));
    free(out);
}

/* Every command and subcommand answers --help (exit 0, a usage text on
 * stdout) and names an unknown option (exit 2); the commands are those the
 * program lists, so a new one without --help fails here. */
static void every_command_has_help(void **state)
{
    (void)state;
    char *out;
    assert_int_equal(vkl_test_cli("--help", NULL, &out), 0);
    char names[64][64];
    int n = 0;
    const char *p = strstr(out, "commands");
    assert_non_null(p);
    for (p = strchr(p, '\n'); p && p[1] == ' ' && p[2] == ' ' && n < 48; p = strchr(p + 1, '\n'))
        if (sscanf(p + 3, "%63s", names[n]) == 1) n++;
    free(out);
    assert_true(n >= 12);
    const char *subs[] = {"lm generate", "lm train", "dataset emoji", "tokenizer build", "bench gemm", "bench unet",
                          "bench attention", "bench conv2d", "bench linear-lora", "bench group-norm",
                          "bench train-step"};
    for (size_t i = 0; i < sizeof subs / sizeof *subs; i++) snprintf(names[n++], sizeof names[0], "%s", subs[i]);
    for (int i = 0; i < n; i++) {
        char args[512];
        snprintf(args, sizeof args, "%.63s --help", names[i]);
        int rc = vkl_test_cli(args, NULL, &out);
        if (rc != 0 || !strstr(out, "usage")) {
            print_error("vklora %s: exit %d\n%s\n", args, rc, out);
            fail();
        }
        free(out);
        snprintf(args, sizeof args, "%.63s --no-such-option 1", names[i]);
        rc = vkl_test_cli(args, NULL, &out);
        if (rc != 2 || !strstr(out, "--no-such-option")) {
            print_error("vklora %s: exit %d (want 2, naming the option)\n%s\n", args, rc, out);
            fail();
        }
        free(out);
    }
    assert_int_equal(vkl_test_cli("--version", NULL, &out), 0);
    assert_true(!strncmp(out, "vklora ", 7) && out[7] >= '0' && out[7] <= '9');
    free(out);
    assert_int_equal(vkl_test_cli("--no-such-option generate", NULL, &out), 2);
    assert_non_null(strstr(out, "--no-such-option"));
    free(out);
    assert_int_equal(vkl_test_cli("no-such-command", NULL, &out), 2);
    assert_non_null(strstr(out, "no-such-command"));
    free(out);
}

/* the program's --quiet silences every command (here generate) */
static void global_quiet(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char args[2048], *out;
    snprintf(args, sizeof args, "--quiet generate --model '%s' --prompt cat --steps 2 --width 64 --height 64 --seed 1 -o q.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    if (out[0]) print_error("said: %s\n", out);
    assert_string_equal(out, "");
    free(out);
    assert_true(exists("q.png"));
}

/* A single-file checkpoint whose yaml is not <name>.yaml: the error names the
 * name tried and the option; --model-config gives the same image as the
 * sidecar does. */
static void model_config_option(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm.yaml");
    char cmd[2048], args[4096], *out;
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/model-fp16.safetensors'", vkl_test_shared_path("refkit/sd/tiny-sd-ldm.safetensors"),
             vkl_test_dir);
    assert_int_equal(system(cmd), 0);
    char common[2048];
    snprintf(common, sizeof common, "--quiet generate --tokenizer '%s' --prompt cat --steps 2 --seed 3 --width 64 --height 64",
             vkl_test_shared_path("refkit/sd/tiny-sd/tokenizer"));
    snprintf(args, sizeof args, "%s --model model-fp16.safetensors -o a.png", common);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "model-fp16.yaml not found"));
    assert_non_null(strstr(out, "--model-config"));
    free(out);
    snprintf(args, sizeof args, "%s --model model-fp16.safetensors --model-config '%s' -o b.png", common,
             vkl_test_shared_path("refkit/sd/tiny-sd-ldm.yaml"));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    snprintf(args, sizeof args, "%s --model '%s' -o c.png", common, vkl_test_shared_path("refkit/sd/tiny-sd-ldm.safetensors"));
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    vkl_image b, c;
    vkl_err e = {{0}};
    char pb[512], pc[512];
    snprintf(pb, sizeof pb, "%s/b.png", vkl_test_dir);
    snprintf(pc, sizeof pc, "%s/c.png", vkl_test_dir);
    assert_int_equal(vkl_image_read_file(pb, 3, VKL_PIX_U8, &b, NULL, &e), 0);
    assert_int_equal(vkl_image_read_file(pc, 3, VKL_PIX_U8, &c, NULL, &e), 0);
    assert_int_equal(memcmp(vkl_image_u8(&b), vkl_image_u8(&c), (size_t)64 * 64 * 3), 0);
    vkl_image_free(&b);
    vkl_image_free(&c);
    /* merge --model (baking) takes it too */
    const char *kohya = vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors");
    char kp[1024];
    snprintf(kp, sizeof kp, "%s", kohya);
    snprintf(args, sizeof args, "merge --model model-fp16.safetensors --lora '%s:0.5' -o baked.safetensors", kp);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "--model-config"));
    free(out);
    snprintf(args, sizeof args, "merge --model model-fp16.safetensors --model-config '%s' --lora '%s:0.5' -o baked.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd-ldm.yaml"), kp);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    free(out);
    assert_true(exists("baked.safetensors"));
}

/* A first run on a device says that shaders compile (the slow first steps),
 * once: the next run finds its cache and says nothing. */
static void first_run_says_shaders_compile(void **state)
{
    (void)state;
    char env[512], *out;
    snprintf(env, sizeof env, "XDG_CACHE_HOME=%s/cache", vkl_test_dir);
    assert_int_equal(vkl_test_cli("bench gemm --m 8 --n 8 --k 8 --reps 1", env, &out), 0);
    assert_non_null(strstr(out, "first run on"));
    free(out);
    assert_int_equal(vkl_test_cli("bench gemm --m 8 --n 8 --k 8 --reps 1", env, &out), 0);
    assert_null(strstr(out, "first run on"));
    free(out);
}

/* plot: the loss column of any vklora log, wherever it is; a log without one is refused */
static void plot_a_log(void **state)
{
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/log.csv", vkl_test_dir);
    FILE *f = fopen(path, "w");
    fputs("step,epoch,loss,lr\n1,0,0.9,1e-3\n2,0,0.7,1e-3\n3,0,0.75,1e-3\n", f);
    fclose(f);
    char *out;
    assert_int_equal(vkl_test_cli("plot log.csv -o curve.png", NULL, &out), 0);
    free(out);
    vkl_image im;
    vkl_err e = {{0}};
    snprintf(path, sizeof path, "%s/curve.png", vkl_test_dir);
    assert_int_equal(vkl_image_read_file(path, 3, VKL_PIX_U8, &im, NULL, &e), 0);
    assert_int_equal(im.width, 640);
    vkl_image_free(&im);
    snprintf(path, sizeof path, "%s/nolos.csv", vkl_test_dir);
    f = fopen(path, "w");
    fputs("step,rec\n1,2\n", f);
    fclose(f);
    assert_int_equal(vkl_test_cli("plot nolos.csv -o c2.png", NULL, &out), 1);
    assert_non_null(strstr(out, "no loss column"));
    free(out);
    assert_false(exists("c2.png"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_checks_before_loading),
        cmocka_unit_test(seed_minus_one_is_random),
        cmocka_unit_test(merge_refuses_bad_input),
        cmocka_unit_test(lm_refuses_foreign_adapter_and_bad_device),
        cmocka_unit_test(every_command_has_help),
        cmocka_unit_test(global_quiet),
        cmocka_unit_test(model_config_option),
        cmocka_unit_test(first_run_says_shaders_compile),
        cmocka_unit_test(plot_a_log),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
