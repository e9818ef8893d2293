#include "vkl_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

int vkl_test_run_cli(const char *cwd, const char *env, const char *args, char **output)
{
    const char *bin = getenv("VKLORA_BINARY");
    if (!bin || !*bin) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run the tests through ctest)\n");
        skip();
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && %s '%s' %s 2>&1", cwd ? cwd : ".", env ? env : "", bin, args);
    FILE *p = popen(cmd, "r");
    if (!p) {
        print_error("cannot run %s\n", cmd);
        fail();
    }
    size_t cap = 1 << 16, n = 0, k;
    char *out = malloc(cap);
    while (out && (k = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (cap - n < 4096) {
            char *bigger = realloc(out, cap * 2);
            if (!bigger) break;
            out = bigger;
            cap *= 2;
        }
    }
    if (out) out[n] = 0;
    int st = pclose(p);
    if (output) *output = out;
    else free(out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

char *vkl_test_slurp(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0, k;
    char *b = malloc(cap);
    while (b && (k = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (cap - n < 4096) {
            char *bigger = realloc(b, cap * 2);
            if (!bigger) break;
            b = bigger;
            cap *= 2;
        }
    }
    if (b) b[n] = 0;
    fclose(f);
    return b;
}

void vkl_test_csv_first_columns(char *csv, int ncols)
{
    for (char *line = csv; line && *line;) {
        char *nl = strchr(line, '\n'), *c = line;
        for (int k = 0; k < ncols && c; k++) c = strchr(c + 1, ',');
        if (c && (!nl || c < nl)) memmove(c, nl ? nl : c + strlen(c), strlen(nl ? nl : c + strlen(c)) + 1);
        nl = strchr(line, '\n');
        line = nl ? nl + 1 : NULL;
    }
}

/* The group's folder (vkl_test_group_setup / vkl_test_group_teardown). */
char vkl_test_dir[256];

int vkl_test_group_setup(void **state)
{
    (void)state;
    snprintf(vkl_test_dir, sizeof vkl_test_dir, "%s", vkl_test_tmpdir());
    return 0;
}

int vkl_test_group_teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(vkl_test_dir);
    return 0;
}

int vkl_test_cli(const char *args, const char *env, char **output)
{
    return vkl_test_run_cli(vkl_test_dir, env, args, output);
}

void vkl_test_copy_images(const char *rel)
{
    const char *src = vkl_test_shared_path(rel);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/images' && cp '%s'/*.png '%s'/*.txt '%s/images/'", vkl_test_dir, src, src,
             vkl_test_dir);
    if (system(cmd) != 0) {
        print_error("cannot copy %s into %s/images\n", src, vkl_test_dir);
        fail();
    }
}

int vkl_test_story_setup(void **state)
{
    vkl_test_group_setup(state);
    char p[512];
    snprintf(p, sizeof p, "%s/story.txt", vkl_test_dir);
    FILE *f = fopen(p, "w");
    if (!f) return -1;
    for (int i = 0; i < 40; i++)
        fputs("You may convey verbatim copies of the Program's source code as you receive it. ", f);
    return fclose(f) ? -1 : 0;
}
