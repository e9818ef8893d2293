#include "vkl_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *vkl_test_shared(void)
{
    static char path[8192];
    static int done;
    if (done) return path[0] ? path : NULL;
    done = 1;
    const char *env = getenv("VKLORA_SHARED");
    if (env && *env) {
        snprintf(path, sizeof path, "%.4000s", env);
    } else {
        const char *src = getenv("VKLORA_SOURCE_DIR");
        snprintf(path, sizeof path, "%.4000s/../shared", src ? src : ".");
    }
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) path[0] = 0;
    return path[0] ? path : NULL;
}

const char *vkl_test_shared_path(const char *rel)
{
    static char bufs[8][8400];
    static int next;
    char *b = bufs[next++ & 7];
    const char *root = vkl_test_shared();
    snprintf(b, 8400, "%s/%s", root ? root : "(missing shared folder)", rel ? rel : "");
    return b;
}

int vkl_test_shared_exists(const char *rel)
{
    if (!vkl_test_shared()) return 0;
    if (!rel) return 1;
    struct stat st;
    return stat(vkl_test_shared_path(rel), &st) == 0;
}

void vkl_test_rng_seed(vkl_test_rng *r, uint64_t seed) { r->s = seed * 0x9e3779b97f4a7c15ull + 1; }

uint64_t vkl_test_rng_u64(vkl_test_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float vkl_test_rng_uniform(vkl_test_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * (float)((vkl_test_rng_u64(r) >> 40) * (1.0 / 16777216.0));
}

int vkl_test_rng_int(vkl_test_rng *r, int lo, int hi)
{
    return lo + (int)(vkl_test_rng_u64(r) % (uint64_t)(hi - lo + 1));
}

void vkl_test_fill(vkl_test_rng *r, float *x, size_t n, float lo, float hi)
{
    for (size_t i = 0; i < n; i++) x[i] = vkl_test_rng_uniform(r, lo, hi);
}

float vkl_test_max_abs_diff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

void vkl_test_assert_close(const char *what, const float *got, const float *want, size_t n,
                           float atol, float rtol)
{
    size_t worst = 0, bad = 0;
    double worst_excess = -1, max_abs = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double lim = atol + rtol * fabs((double)want[i]);
        if (isnan(got[i]) != isnan(want[i])) d = INFINITY;
        if (d > max_abs) max_abs = d;
        if (d > lim) {
            bad++;
            if (d - lim > worst_excess) { worst_excess = d - lim; worst = i; }
        }
    }
    if (bad) {
        print_error("%s: %zu of %zu elements out of tolerance (atol %g, rtol %g); max abs diff %g; "
                    "worst at %zu: got %.8g want %.8g\n",
                    what, bad, n, atol, rtol, max_abs, worst, got[worst], want[worst]);
        fail();
    }
}

const char *vkl_test_tmpdir(void)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/vklora-test-XXXXXX");
    if (!mkdtemp(path)) {
        print_error("cannot create a temporary directory\n");
        fail();
    }
    return path;
}

void vkl_test_rmtree(const char *path)
{
    char cmd[4200];
    if (!path || strncmp(path, "/tmp/vklora-test-", 17) != 0) return;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", path);
}

int vkl_test_skips;

int vkl_test_exit_status(int failed)
{
    if (failed) return failed;
    if (vkl_test_skips) {
        fprintf(stderr, "%d test case(s) SKIPPED: this program is reported as skipped, not passed\n", vkl_test_skips);
        return 77;
    }
    return 0;
}

void vkl_test_require_shared(const char *rel)
{
    if (vkl_test_shared_exists(rel)) return;
    /* the test script counts these lines to report skips loudly */
    fprintf(stderr, "SKIPPED: reference data %s not found (set VKLORA_SHARED)\n", rel ? rel : "folder");
    skip();
}
