#include "vkl_test.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void *read_as(const char *rel, const char *name, vkl_dtype dt, int64_t *nelem)
{
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(vkl_test_shared_path(rel), &f, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    const vkl_st_tensor *t = vkl_st_find(f, name);
    if (!t) {
        print_error("reference tensor %s not found in %s\n", name, rel);
        vkl_st_close(f);
        fail();
    }
    void *out = malloc(4 * (t->nelem ? t->nelem : 1));
    if (vkl_st_read(f, t, dt, out, &e)) {
        print_error("%s\n", e.msg);
        vkl_st_close(f);
        fail();
    }
    *nelem = (int64_t)t->nelem;
    vkl_st_close(f);
    return out;
}

float *vkl_test_ref_f32(const char *rel, const char *name, int64_t *nelem) { return read_as(rel, name, VKL_F32, nelem); }
int32_t *vkl_test_ref_i32(const char *rel, const char *name, int64_t *nelem) { return read_as(rel, name, VKL_I32, nelem); }

void vkl_test_assert_scaled(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double scale = 0, worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= worst)) {
            worst = d;
            at = i;
        }
    }
    print_message("%s: max abs diff %.3g (scale %.3g, ratio %.3g, limit %.3g)\n", what, worst, scale,
                  scale ? worst / scale : worst, tol);
    if (!(worst <= tol * (scale > 0 ? scale : 1))) {
        print_error("%s: max abs diff %.6g at %zu (got %.8g want %.8g) exceeds %.3g x scale %.6g\n", what, worst, at,
                    got[at], want[at], tol, scale);
        fail();
    }
}

/* Both safetensors files hold the same tensors, bit for bit. */
void vkl_test_same_tensors(const char *a, const char *b)
{
    vkl_err e = {{0}};
    vkl_st_file *fa = NULL, *fb = NULL;
    assert_int_equal(vkl_st_open(a, &fa, &e), 0);
    assert_int_equal(vkl_st_open(b, &fb, &e), 0);
    assert_true(vkl_st_count(fa) > 0);
    assert_int_equal(vkl_st_count(fa), vkl_st_count(fb));
    for (int i = 0; i < vkl_st_count(fa); i++) {
        const vkl_st_tensor *x = vkl_st_at(fa, i), *y = vkl_st_find(fb, x->name);
        assert_non_null(y);
        assert_int_equal(x->nbytes, y->nbytes);
        if (memcmp(x->data, y->data, x->nbytes)) fail_msg("%s differs between %s and %s", x->name, a, b);
    }
    vkl_st_close(fa);
    vkl_st_close(fb);
}
