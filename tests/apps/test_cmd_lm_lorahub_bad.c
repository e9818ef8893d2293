/* `vklora lm lorahub` on bad input: one adapter, an empty list entry, a
 * missing adapter, other ranks, other targets, another recorded base, a DoRA
 * adapter, bad --steps / --l1, an unknown option: each fails with a message
 * naming the cause and leaves no output or temporary folder. A recorded base
 * path that does not exist here cannot be compared: a warning, and the mix
 * runs. --help prints the usage; an existing output is replaced only with
 * --force. The adapters are trained here for one step (only their shapes and
 * kinds matter). */
#include "lm_lorahub_fixture.h"

#include <dirent.h>
#include <sys/stat.h>

/* No folder of the output's name, nor a temporary one, is left. */
static void expect_no_output(const char *out)
{
    struct stat st;
    assert_int_not_equal(stat(path_in(out, NULL), &st), 0);
    DIR *d = opendir(vkl_test_dir);
    assert_non_null(d);
    for (struct dirent *x; (x = readdir(d));)
        if (strstr(x->d_name, ".tmp-")) fail_msg("temporary folder %s left behind", x->d_name);
    closedir(d);
}

static void expect_fail(const char *adapters, const char *extra, int status, const char *w1, const char *w2)
{
    char args[2048], *log = NULL;
    snprintf(args, sizeof args, "lm lorahub --model '%s' --adapters %s --data few.jsonl -o BAD --seq-len 16 --steps 3 %s",
             vkl_test_shared_path(MODEL), adapters, extra);
    int st = vkl_test_cli(args, NULL, &log);
    printf("  --adapters %s %s: status %d: %s", adapters, extra, st, log ? log : "\n");
    assert_int_equal(st, status);
    assert_non_null(strstr(log, w1));
    if (w2) assert_non_null(strstr(log, w2));
    free(log);
    expect_no_output("BAD");
}

static void copy_binary(const char *from, const char *to)
{
    struct stat st;
    assert_int_equal(stat(path_in(from, NULL), &st), 0);
    FILE *in = fopen(path_in(from, NULL), "rb"), *out = fopen(path_in(to, NULL), "wb");
    assert_non_null(in);
    assert_non_null(out);
    char *buf = malloc((size_t)st.st_size);
    assert_int_equal(fread(buf, 1, (size_t)st.st_size, in), (size_t)st.st_size);
    assert_int_equal(fwrite(buf, 1, (size_t)st.st_size, out), (size_t)st.st_size);
    fclose(in);
    fclose(out);
    free(buf);
}

/* A text file with its first `find` replaced by `repl` (which must occur). */
static void copy_replacing(const char *from, const char *to, const char *find, const char *repl)
{
    char *s = vkl_test_slurp(vkl_test_dir, from);
    assert_non_null(s);
    const char *p = strstr(s, find);
    assert_non_null(p);
    FILE *f = fopen(path_in(to, NULL), "wb");
    assert_non_null(f);
    fwrite(s, 1, (size_t)(p - s), f);
    fputs(repl, f);
    fputs(p + strlen(find), f);
    fclose(f);
    free(s);
}

static void test_bad_input(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    const char *fast = "--seq-len 16 --batch 4 --seed 1 --max-steps 1";
    char extra[512];
    snprintf(extra, sizeof extra, "%s --rank 4", fast);
    train("a.jsonl", "P", extra);
    train("b.jsonl", "Q", extra);
    snprintf(extra, sizeof extra, "%s --rank 2", fast);
    train("b.jsonl", "R2", extra);
    snprintf(extra, sizeof extra, "%s --rank 4 --targets q_proj", fast);
    train("b.jsonl", "QONLY", extra);
    snprintf(extra, sizeof extra, "%s --rank 4 --network dora", fast);
    train("b.jsonl", "DORA", extra);
    /* the same adapter, recorded as made for another base */
    assert_int_equal(mkdir(path_in("OTHER", NULL), 0755), 0);
    copy_binary("Q/adapter_model.safetensors", "OTHER/adapter_model.safetensors");
    char base[1100];
    snprintf(base, sizeof base, "\"%s\"", vkl_test_shared_path(MODEL));
    char other[1100];
    snprintf(other, sizeof other, "\"%s\"", vkl_test_shared_path("refkit/lm/stories260K"));
    copy_replacing("Q/adapter_config.json", "OTHER/adapter_config.json", base, other);
    /* and as made for a base named by a path that does not exist here: not comparable, a warning */
    assert_int_equal(mkdir(path_in("ELSEWHERE", NULL), 0755), 0);
    copy_binary("Q/adapter_model.safetensors", "ELSEWHERE/adapter_model.safetensors");
    copy_replacing("Q/adapter_config.json", "ELSEWHERE/adapter_config.json", base, "\"../models/tiny-llama\"");

    char *text = NULL;
    assert_int_equal(vkl_test_cli("lm lorahub --help", NULL, &text), 0);
    assert_non_null(strstr(text, "usage: vklora lm lorahub"));
    free(text);
    assert_int_equal(vkl_test_cli("lm lorahub --no-such-option 1", NULL, &text), 2);
    assert_non_null(strstr(text, "--no-such-option"));
    free(text);
    expect_fail("P", "", 2, "at least 2", NULL);
    expect_fail("P,,Q", "", 2, "empty entry", NULL);
    expect_fail("P,MISSING", "", 1, "MISSING", "No such file");
    expect_fail("P,R2", "", 1, "ranks", "R2");
    expect_fail("P,QONLY", "", 1, "same modules", "QONLY");
    expect_fail("P,OTHER", "", 1, "stories260K", "one base model");
    expect_fail("P,DORA", "", 1, "dora", "plain LoRA");
    expect_fail("P,Q", "--steps 0", 2, "--steps", NULL);
    expect_fail("P,Q", "--l1 -1", 2, "--l1", NULL);
    /* the mix itself works; then its folder is not replaced without --force */
    char args[2048], *log = NULL;
    snprintf(args, sizeof args, "lm lorahub --model '%s' --adapters P,Q --data few.jsonl -o BAD --seq-len 16 --steps 3",
             vkl_test_shared_path(MODEL));
    free(run_ok(args));
    snprintf(args, sizeof args, "lm lorahub --model '%s' --adapters P,ELSEWHERE --data few.jsonl -o WARNED --seq-len 16 "
             "--steps 3", vkl_test_shared_path(MODEL));
    char *warned = run_ok(args);
    assert_non_null(strstr(warned, "warning: P names its base"));
    assert_non_null(strstr(warned, "../models/tiny-llama"));
    free(warned);
    snprintf(args, sizeof args, "lm lorahub --model '%s' --adapters P,Q --data few.jsonl -o BAD --seq-len 16 --steps 3",
             vkl_test_shared_path(MODEL));
    int st = vkl_test_cli(args, NULL, &log);
    assert_int_equal(st, 1);
    assert_non_null(strstr(log, "--force"));
    free(log);
    snprintf(args + strlen(args), sizeof args - strlen(args), " --force");
    free(run_ok(args));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, vkl_test_group_teardown);
}
