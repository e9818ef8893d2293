/* Checks on what a command left in a folder after it was killed or failed:
 * no half-written file under a final name, a state folder that `latest`
 * names whole, two adapters equal bit for bit. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int vkl_test_safetensors_whole(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *x;
    int n = 0;
    while ((x = readdir(d))) {
        const char *dot = strrchr(x->d_name, '.');
        if (!dot || strcmp(dot, ".safetensors") || strstr(x->d_name, ".tmp")) continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, x->d_name);
        vkl_st_file *f = NULL;
        vkl_err e = {0};
        if (vkl_st_open(path, &f, &e)) {
            print_error("%s is half-written under its final name: %s\n", path, e.msg);
            fail();
        }
        vkl_st_close(f);
        n++;
    }
    closedir(d);
    return n;
}

int vkl_test_state_whole(const char *state_dir, char *name, size_t cap)
{
    char *latest = vkl_test_slurp(state_dir, "latest");
    if (!latest) return 0;
    latest[strcspn(latest, "\n")] = 0;
    char path[1200];
    snprintf(path, sizeof path, "%s/%s/state.json", state_dir, latest);
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) {
        print_error("%s/latest names %s, which is not a whole state\n", state_dir, latest);
        fail();
    }
    if (name) snprintf(name, cap, "%s", latest);
    free(latest);
    return 1;
}

void vkl_test_same_safetensors(const char *pa, const char *pb)
{
    vkl_st_file *fa = NULL, *fb = NULL;
    vkl_err e = {0};
    assert_int_equal(vkl_st_open(pa, &fa, &e), 0);
    assert_int_equal(vkl_st_open(pb, &fb, &e), 0);
    assert_int_equal(vkl_st_count(fa), vkl_st_count(fb));
    for (int i = 0; i < vkl_st_count(fa); i++) {
        const vkl_st_tensor *ta = vkl_st_at(fa, i), *tb = vkl_st_find(fb, ta->name);
        assert_non_null(tb);
        assert_int_equal(ta->nbytes, tb->nbytes);
        void *da = malloc(ta->nbytes), *db = malloc(tb->nbytes);
        assert_int_equal(vkl_st_read(fa, ta, ta->dtype, da, &e), 0);
        assert_int_equal(vkl_st_read(fb, tb, tb->dtype, db, &e), 0);
        if (memcmp(da, db, ta->nbytes)) {
            print_error("%s differs between %s and %s\n", ta->name, pa, pb);
            fail();
        }
        free(da);
        free(db);
    }
    vkl_st_close(fa);
    vkl_st_close(fb);
}

void vkl_test_same_run(const char *want, const char *got)
{
    char a[600], b[600];
    snprintf(a, sizeof a, "%s.csv", want);
    snprintf(b, sizeof b, "%s.csv", got);
    char *wl = vkl_test_slurp(vkl_test_dir, a), *gl = vkl_test_slurp(vkl_test_dir, b);
    assert_non_null(wl);
    assert_non_null(gl);
    vkl_test_csv_first_columns(wl, 3);
    vkl_test_csv_first_columns(gl, 3);
    assert_string_equal(gl, wl);
    free(wl);
    free(gl);
    char pa[1200], pb[1200];
    snprintf(pa, sizeof pa, "%s/%s.safetensors", vkl_test_dir, want);
    snprintf(pb, sizeof pb, "%s/%s.safetensors", vkl_test_dir, got);
    vkl_test_same_safetensors(pa, pb);
}
