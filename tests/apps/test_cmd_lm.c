/* `vklora lm generate` end to end (the built binary, VKLORA_BINARY): the
 * stories260K model with its llama2.c tokenizer prints run.c's greedy
 * continuation of "Once upon a time" byte for byte; tiny-llama with its
 * SentencePiece tokenizer prints the text of transformers' 20 greedy tokens
 * (reference ids decoded); bad arguments and a missing model fail clearly. */
#include "vkl_test.h"
#include "tokenizer/sp_bpe.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

typedef struct {
    char *out;
    int status;
} run_result;

static const char *binary(void)
{
    const char *b = getenv("VKLORA_BINARY");
    if (!b || !*b) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run through ctest)\n");
        skip();
    }
    return b;
}

/* stdout only, or stdout and stderr together */
static run_result run(const char *args, int with_stderr)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s %s", binary(), args, with_stderr ? "2>&1" : "2>/dev/null");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0, k;
    char *out = malloc(cap);
    while ((k = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (cap - n < 4096) out = realloc(out, cap *= 2);
    }
    out[n] = 0;
    int st = pclose(p);
    return (run_result){out, WIFEXITED(st) ? WEXITSTATUS(st) : -1};
}

static char *read_text(const char *rel)
{
    FILE *f = fopen(vkl_test_shared_path(rel), "rb");
    assert_non_null(f);
    char *s = calloc(1, 1 << 16);
    size_t n = fread(s, 1, (1 << 16) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

/* model_rel (an HF folder or the llama2.c checkpoint) continues the prompt
 * exactly as llama2.c's run.c does */
static void expect_runc_story(const char *model_rel)
{
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --tokenizer '%s' --prompt 'Once upon a time' --max-tokens 60",
             vkl_test_shared_path(model_rel), vkl_test_shared_path("refkit/lm/stories260K/tok512.bin"));
    run_result r = run(args, 0);
    char *want = read_text("refkit/lm/stories260K/runc_greedy_prompt.txt");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, want + strlen("Once upon a time"));
    free(want);
    free(r.out);
}

static void test_stories(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/hf/model.safetensors");
    expect_runc_story("refkit/lm/stories260K/hf");
}

/* The llama2.c checkpoint itself (run.c's format) gives run.c's story; a
 * truncated one is refused with the size it should have. */
static void test_stories_llama2c_bin(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/stories260K.bin");
    expect_runc_story("refkit/lm/stories260K/stories260K.bin");
    char args[4096];
    run_result r;
    char cut[] = "/tmp/vklora-test-cut-XXXXXX";
    int fd = mkstemp(cut);
    assert_true(fd >= 0);
    close(fd);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "head -c 100000 '%s' > %s", vkl_test_shared_path("refkit/lm/stories260K/stories260K.bin"), cut);
    assert_int_equal(system(cmd), 0);
    snprintf(args, sizeof args, "lm generate --model %s --tokenizer '%s' --prompt x --max-tokens 2", cut,
             vkl_test_shared_path("refkit/lm/stories260K/tok512.bin"));
    r = run(args, 1);
    unlink(cut);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "100000 bytes, but a llama2.c checkpoint"));
    free(r.out);
}

static void test_tiny(void **state)
{
    (void)state;
    const char *rel = "refkit/lm/vectors/generation.safetensors";
    VKL_REQUIRE_SHARED(rel);
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
    int64_t n = 0, np = 0;
    int32_t *all = vkl_test_ref_i32(rel, "output_ids", &n), *prompt = vkl_test_ref_i32(rel, "prompt_ids", &np);
    char *full = vkl_sp_decode(sp, all, (int)n), *head = vkl_sp_decode(sp, prompt, (int)np);
    assert_int_equal(strncmp(full, head, strlen(head)), 0);
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt 'You may convey verbatim copies of the Program' "
             "--max-tokens 20", vkl_test_shared_path("refkit/lm/tiny-llama"));
    run_result r = run(args, 0);
    assert_int_equal(r.status, 0);
    size_t hl = strlen(head), fl = strlen(full);
    /* the printed continuation, then a newline */
    assert_int_equal(strlen(r.out), fl - hl + 1);
    assert_memory_equal(r.out, full + hl, fl - hl);
    free(r.out);
    free(full);
    free(head);
    free(all);
    free(prompt);
    vkl_sp_free(sp);
}

static void test_errors(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    run_result r = run("lm generate --prompt hi", 1);
    assert_int_equal(r.status, 2);
    free(r.out);
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --max-tokens 0",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    r = run(args, 1);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.out, "--max-tokens"));
    free(r.out);
    r = run("lm generate --model /nonexistent/model --prompt hi", 1);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "/nonexistent/model/config.json"));
    free(r.out);
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --max-tokens 300",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    r = run(args, 1);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "positions"));
    free(r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories),
        cmocka_unit_test(test_stories_llama2c_bin),
        cmocka_unit_test(test_tiny),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
