/* The shared whole-file reader and string builder (runtime/io/text.h): a
 * file's bytes come back exactly with a NUL after them (empty, NUL bytes
 * inside, a size the initial buffer does not hold); the limit holds at its
 * edge for files and for a pipe; a missing file and a folder are refused by
 * name. The builder's text equals the same text written by snprintf, for
 * many small appends and for formatted pieces longer than any fixed buffer. */
#include "vkl_test.h"
#include "io/text.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[256];

static const char *path_of(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void write_bytes(const char *name, const char *bytes, size_t n)
{
    FILE *f = fopen(path_of(name), "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void reads_files_whole(void **state)
{
    (void)state;
    char *text;
    size_t n;
    vkl_err e = {{0}};
    write_bytes("empty", "", 0);
    assert_int_equal(vkl_read_text_file(path_of("empty"), 10, &text, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(text[0], 0);
    free(text);
    write_bytes("nul", "a\0b\n", 4);
    assert_int_equal(vkl_read_text_file(path_of("nul"), 4, &text, &n, &e), 0);
    assert_int_equal(n, 4);
    assert_memory_equal(text, "a\0b\n", 5);
    free(text);
    /* 300 000 bytes of a pattern, no size asked for */
    size_t big = 300000;
    char *want = malloc(big);
    for (size_t i = 0; i < big; i++) want[i] = (char)('a' + (i * 7) % 26);
    write_bytes("big", want, big);
    assert_int_equal(vkl_read_text_file(path_of("big"), big, &text, NULL, &e), 0);
    assert_memory_equal(text, want, big);
    assert_int_equal(text[big], 0);
    free(text);
    uint8_t *bytes;
    assert_int_equal(vkl_read_file_bytes(path_of("big"), big, &bytes, &n, &e), 0);
    assert_int_equal(n, big);
    assert_memory_equal(bytes, want, big);
    free(bytes);
    /* one byte over the limit */
    assert_int_equal(vkl_read_text_file(path_of("big"), big - 1, &text, &n, &e), -1);
    assert_null(text);
    assert_non_null(strstr(e.msg, path_of("big")));
    assert_non_null(strstr(e.msg, "299999-byte limit"));
    free(want);
}

static void refuses_by_name(void **state)
{
    (void)state;
    char *text = (char *)1;
    vkl_err e = {{0}};
    assert_int_equal(vkl_read_text_file(path_of("missing.json"), 100, &text, NULL, &e), -1);
    assert_null(text);
    assert_non_null(strstr(e.msg, "missing.json: cannot open"));
    assert_int_equal(vkl_read_text_file(dir, 100, &text, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "a folder, not a file"));
}

/* A stream has no size to check first: its limit holds as it is read. */
static int read_fifo(size_t len, size_t max, char **text, size_t *n, vkl_err *e)
{
    const char *p = path_of("fifo");
    unlink(p);
    assert_int_equal(mkfifo(p, 0600), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (!child) {
        signal(SIGPIPE, SIG_DFL);
        FILE *f = fopen(p, "wb");
        for (size_t i = 0; f && i < len; i++) fputc('0' + (int)(i % 10), f);
        _exit(f && fclose(f) == 0 ? 0 : 1);
    }
    int rc = vkl_read_text_file(p, max, text, n, e);
    int status;
    waitpid(child, &status, 0);
    return rc;
}

static void reads_streams_to_the_limit(void **state)
{
    (void)state;
    char *text;
    size_t n;
    vkl_err e = {{0}};
    assert_int_equal(read_fifo(200000, 200000, &text, &n, &e), 0);
    assert_int_equal(n, 200000);
    for (size_t i = 0; i < n; i++)
        if (text[i] != '0' + (int)(i % 10)) fail_msg("byte %zu", i);
    assert_int_equal(text[n], 0);
    free(text);
    assert_int_equal(read_fifo(200001, 200000, &text, &n, &e), -1);
    assert_non_null(strstr(e.msg, "longer than the 200000-byte limit"));
}

static void builder_equals_snprintf(void **state)
{
    (void)state;
    vkl_strbuf b = {0};
    char want[40000];
    size_t at = 0;
    for (int i = 0; i < 2000; i++) {
        vkl_strbuf_printf(&b, "%d,", i);
        at += (size_t)snprintf(want + at, sizeof want - at, "%d,", i);
    }
    char longer[1000];
    memset(longer, 'x', sizeof longer - 1);
    longer[sizeof longer - 1] = 0;
    vkl_strbuf_printf(&b, "[%s|%s]", longer, "end");
    at += (size_t)snprintf(want + at, sizeof want - at, "[%s|%s]", longer, "end");
    vkl_strbuf_puts(&b, "tail");
    vkl_strbuf_putn(&b, "\0z", 2);
    memcpy(want + at, "tail\0z", 6);
    at += 6;
    assert_false(b.failed);
    assert_int_equal(b.len, at);
    assert_memory_equal(b.s, want, at);
    assert_int_equal(b.s[b.len], 0);
    vkl_strbuf_free(&b);
    assert_null(b.s);
    assert_int_equal(b.len, 0);
    /* an empty append still gives a string */
    vkl_strbuf_puts(&b, "");
    assert_non_null(b.s);
    assert_string_equal(b.s, "");
    vkl_strbuf_free(&b);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/vklora-test-text-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    const char *names[] = {"empty", "nul", "big", "fifo"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) unlink(path_of(names[i]));
    rmdir(dir);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reads_files_whole),
        cmocka_unit_test(refuses_by_name),
        cmocka_unit_test(reads_streams_to_the_limit),
        cmocka_unit_test(builder_equals_snprintf),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
