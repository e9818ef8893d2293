/* `vklora tokenizer build` end to end: the built binary (VKLORA_BINARY) on a
 * temporary caption folder; the folder it writes is read back with the
 * library, and the usage errors exit with 2, the failures with 1. */
#include "vkl_test.h"

#include "tokenizer/clip_tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char root[256];

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int setup(void **state)
{
    (void)state;
    snprintf(root, sizeof root, "%s", vkl_test_tmpdir());
    char d[400];
    snprintf(d, sizeof d, "%s/emoji", root);
    mkdir(d, 0755);
    write_file(d, "0001.txt", "red heart");
    write_file(d, "0002.txt", "grinning face with big eyes");
    write_file(d, "0003.txt", "red apple");
    snprintf(d, sizeof d, "%s/more", root);
    mkdir(d, 0755);
    write_file(d, "x.txt", "Green Apple!");
    snprintf(d, sizeof d, "%s/nothing", root);
    mkdir(d, 0755);
    snprintf(d, sizeof d, "%s/latin1", root);
    mkdir(d, 0755);
    write_file(d, "caf.txt", "caf\xe9");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(root);
    return 0;
}

/* Runs vklora in root; returns the exit status, output in *out (freed by the caller). */
static int run(const char *args, char **out)
{
    int rc = vkl_test_run_cli(root, NULL, args, out);
    fprintf(stderr, "vklora %s -> %d\n%s", args, rc, *out ? *out : "");
    return rc;
}

static void expect(const char *args, int want_rc, const char *phrase)
{
    char *o = NULL;
    int rc = run(args, &o);
    if (rc != want_rc) fail_msg("vklora %s: exit %d, want %d", args, rc, want_rc);
    if (phrase && (!o || !strstr(o, phrase))) fail_msg("vklora %s: output lacks \"%s\"", args, phrase);
    free(o);
}

static vkl_clip_tokenizer *load(const char *rel)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {{0}};
    if (vkl_clip_tokenizer_load(&t, p, &e)) fail_msg("%s", e.msg);
    return t;
}

static void test_build(void **state)
{
    (void)state;
    /* red 2; then big, eyes, face, grinning, heart, with, apple 1 each in byte order */
    expect("tokenizer build --captions emoji -o tok", 0, "vocabulary size: 11");
    vkl_clip_tokenizer *t = load("tok");
    assert_int_equal(vkl_clip_vocab_size(t), 11);
    assert_int_equal(vkl_clip_token_id(t, "red"), 3);
    assert_int_equal(vkl_clip_token_id(t, "apple"), 4);
    assert_int_equal(vkl_clip_token_id(t, "with"), 10);
    int32_t row[VKL_CLIP_CONTEXT];
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(vkl_clip_encode_padded(t, "Red Heart", 0, row, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_int_equal(row[0], 0);
    assert_int_equal(row[1], 3);
    assert_int_equal(row[2], vkl_clip_token_id(t, "heart"));
    assert_int_equal(row[3], 1);
    assert_int_equal(row[VKL_CLIP_CONTEXT - 1], 1);
    vkl_clip_tokenizer_free(t);

    /* an existing folder is kept unless --force */
    expect("tokenizer build --captions emoji -o tok", 1, "exists");
    expect("tokenizer build --captions emoji --captions more --min-count 2 --max-length 64 -o tok --force", 0,
           "vocabulary size: 5");
    t = load("tok");
    assert_int_equal(vkl_clip_token_id(t, "apple"), 3); /* 2 uses now: before red in byte order */
    assert_int_equal(vkl_clip_token_id(t, "red"), 4);
    assert_int_equal(vkl_clip_token_id(t, "heart"), -1);
    vkl_clip_tokenizer_free(t);
    char *cfg = vkl_test_slurp(root, "tok/tokenizer_config.json");
    assert_non_null(cfg);
    assert_non_null(strstr(cfg, "\"model_max_length\":\t64"));
    free(cfg);

    /* a model folder: tokenizer/ inside it */
    char model[400];
    snprintf(model, sizeof model, "%s/model", root);
    mkdir(model, 0755);
    expect("tokenizer build --captions emoji -o model/tokenizer", 0, "vocabulary size: 11");
    t = load("model");
    assert_int_equal(vkl_clip_token_id(t, "grinning"), 8);
    vkl_clip_tokenizer_free(t);
}

static void test_same_bytes(void **state)
{
    (void)state;
    expect("tokenizer build --captions emoji --captions more -o a", 0, NULL);
    expect("tokenizer build --captions more --captions emoji -o b/", 0, NULL);
    const char *names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"};
    for (int i = 0; i < 3; i++) {
        char pa[64], pb[64];
        snprintf(pa, sizeof pa, "a/%s", names[i]);
        snprintf(pb, sizeof pb, "b/%s", names[i]);
        char *x = vkl_test_slurp(root, pa), *y = vkl_test_slurp(root, pb);
        assert_non_null(x);
        assert_non_null(y);
        if (strcmp(x, y)) fail_msg("%s differs between two builds", names[i]);
        free(x);
        free(y);
    }
}

static void test_usage(void **state)
{
    (void)state;
    expect("tokenizer build --help", 0, "--captions DIR");
    expect("tokenizer --help", 0, "--min-count");
    expect("--help", 0, "tokenizer");
    expect("tokenizer", 2, "missing subcommand");
    expect("tokenizer train", 2, "unknown subcommand");
    expect("tokenizer build -o x", 2, "--captions DIR is required");
    expect("tokenizer build --captions emoji", 2, "-o OUTDIR is required");
    expect("tokenizer build --captions emoji --min-count 0 -o x", 2, "--min-count '0': expected an integer");
    expect("tokenizer build --captions emoji --max-length 1x -o x", 2, "--max-length '1x': expected an integer");
    expect("tokenizer build --captions emoji --bogus -o x", 2, "unknown option '--bogus'");
    expect("tokenizer build --captions nothing -o x", 1, "no *.txt caption files in nothing");
    expect("tokenizer build --captions missing -o x", 1, "missing");
    expect("tokenizer build --captions latin1 -o x", 1, "latin1/caf.txt: invalid UTF-8");
    struct stat st;
    char x[400];
    snprintf(x, sizeof x, "%s/x", root);
    assert_int_equal(stat(x, &st), -1); /* nothing written by a failed build */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build),
        cmocka_unit_test(test_same_bytes),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
