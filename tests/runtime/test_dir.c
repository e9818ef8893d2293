/* The folder helpers every writer relies on: durable rename (the new file
 * under its name, the old one replaced in one step), atomic text files,
 * atomic folder installation, and mkdir -p. Durability itself (the folder's
 * fsync) cannot be observed without cutting power; what is checked is that
 * each helper leaves exactly the files it promises and reports failures with
 * errno or a message naming the path. */
#include "vkl_test.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/dir.h"

static void put(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int exists(const char *dir, const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat st;
    return stat(p, &st) == 0;
}

static void rename_durable_replaces_and_reports(void **state)
{
    (void)state;
    const char *d = vkl_test_tmpdir();
    char tmp[512], dst[512];
    put(d, "a.tmp", "new");
    put(d, "a.txt", "old");
    snprintf(tmp, sizeof tmp, "%s/a.tmp", d);
    snprintf(dst, sizeof dst, "%s/a.txt", d);
    assert_int_equal(vkl_rename_durable(tmp, dst), 0);
    char *text = vkl_test_slurp(d, "a.txt");
    assert_string_equal(text, "new");
    free(text);
    assert_false(exists(d, "a.tmp"));

    /* a missing source is an error with errno, and the target is untouched */
    errno = 0;
    assert_int_equal(vkl_rename_durable(tmp, dst), -1);
    assert_int_equal(errno, ENOENT);
    text = vkl_test_slurp(d, "a.txt");
    assert_string_equal(text, "new");
    free(text);

    /* a target in a folder that does not exist */
    put(d, "b.tmp", "x");
    snprintf(tmp, sizeof tmp, "%s/b.tmp", d);
    snprintf(dst, sizeof dst, "%s/no-such-folder/b.txt", d);
    assert_int_equal(vkl_rename_durable(tmp, dst), -1);
    assert_true(exists(d, "b.tmp"));

    /* a bare file name: the folder to sync is the working folder */
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(d), 0);
    assert_int_equal(vkl_rename_durable("b.tmp", "b.txt"), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_true(exists(d, "b.txt"));
    assert_false(exists(d, "b.tmp"));
    vkl_test_rmtree(d);
}

static void text_atomic_leaves_no_temporary(void **state)
{
    (void)state;
    const char *d = vkl_test_tmpdir();
    char p[512];
    snprintf(p, sizeof p, "%s/latest", d);
    vkl_err e = {0};
    assert_int_equal(vkl_write_text_atomic(p, "step-000100\n", &e), 0);
    assert_int_equal(vkl_write_text_atomic(p, "step-000200\n", &e), 0);
    char *text = vkl_test_slurp(d, "latest");
    assert_string_equal(text, "step-000200\n");
    free(text);
    int n = 0;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", d);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%d", &n), 1);
    pclose(f);
    assert_int_equal(n, 1); /* no *.tmp left beside it */

    snprintf(p, sizeof p, "%s/missing/latest", d);
    assert_int_not_equal(vkl_write_text_atomic(p, "x", &e), 0);
    assert_non_null(strstr(e.msg, "missing/latest"));
    vkl_test_rmtree(d);
}

static void dir_install_refuses_then_replaces(void **state)
{
    (void)state;
    const char *d = vkl_test_tmpdir();
    char tmp[512], dst[512];
    snprintf(tmp, sizeof tmp, "%s/out.tmp", d);
    snprintf(dst, sizeof dst, "%s/out", d);
    assert_int_equal(vkl_mkdir_p(tmp), 0);
    put(tmp, "f", "first");
    vkl_err e = {0};
    assert_int_equal(vkl_dir_install(tmp, dst, 0, &e), 0);
    assert_false(exists(d, "out.tmp"));

    assert_int_equal(vkl_mkdir_p(tmp), 0);
    put(tmp, "f", "second");
    assert_int_not_equal(vkl_dir_install(tmp, dst, 0, &e), 0);
    assert_non_null(strstr(e.msg, "--force"));
    char *text = vkl_test_slurp(dst, "f");
    assert_string_equal(text, "first");
    free(text);

    assert_int_equal(vkl_dir_install(tmp, dst, 1, &e), 0);
    text = vkl_test_slurp(dst, "f");
    assert_string_equal(text, "second");
    free(text);
    assert_false(exists(d, "out.tmp"));
    vkl_test_rmtree(d);
}

static void replace_atomic_swaps_whole_folders(void **state)
{
    (void)state;
    const char *d = vkl_test_tmpdir();
    char tmp[512], dst[512];
    snprintf(tmp, sizeof tmp, "%s/s.tmp", d);
    snprintf(dst, sizeof dst, "%s/s", d);
    vkl_err e = {0};
    assert_int_equal(vkl_mkdir_p(tmp), 0);
    put(tmp, "state.json", "1");
    assert_int_equal(vkl_dir_replace_atomic(tmp, dst, &e), 0); /* absent: moved in */
    assert_int_equal(vkl_mkdir_p(tmp), 0);
    put(tmp, "state.json", "2");
    put(tmp, "extra", "x");
    assert_int_equal(vkl_dir_replace_atomic(tmp, dst, &e), 0); /* present: exchanged, old removed */
    char *text = vkl_test_slurp(dst, "state.json");
    assert_string_equal(text, "2");
    free(text);
    assert_true(exists(d, "s/extra"));
    assert_false(exists(d, "s.tmp"));
    /* a missing source is refused and the folder stays */
    assert_int_not_equal(vkl_dir_replace_atomic(tmp, dst, &e), 0);
    assert_true(exists(d, "s/state.json"));
    vkl_test_rmtree(d);
}

static void mkdir_p_nested_and_too_long(void **state)
{
    (void)state;
    const char *d = vkl_test_tmpdir();
    char p[512];
    snprintf(p, sizeof p, "%s/a/b/c", d);
    assert_int_equal(vkl_mkdir_p(p), 0);
    assert_int_equal(vkl_mkdir_p(p), 0); /* existing is fine */
    assert_true(exists(d, "a/b/c"));
    char *longp = malloc(5000);
    assert_non_null(longp);
    memset(longp, 'x', 4999);
    longp[0] = '/';
    longp[4999] = 0;
    errno = 0;
    assert_int_equal(vkl_mkdir_p(longp), -1);
    assert_int_equal(errno, ENAMETOOLONG);
    free(longp);
    vkl_test_rmtree(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rename_durable_replaces_and_reports),
        cmocka_unit_test(text_atomic_leaves_no_temporary),
        cmocka_unit_test(dir_install_refuses_then_replaces),
        cmocka_unit_test(replace_atomic_swaps_whole_folders),
        cmocka_unit_test(mkdir_p_nested_and_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
