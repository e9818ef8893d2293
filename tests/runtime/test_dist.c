/* The communicator's helpers (runtime/dist.h) against a stand-in transport
 * in this process: a second "rank" that holds a copy of this rank's
 * gradients (a sum doubles them) and answers agreements with chosen values.
 * Checks the bucketed tensor sum (values, scale, the bucket bound, a scale
 * of 0 over NaN), the single-process no-ops, and the agreement helpers. */
#include "vkl_test.h"
#include "dist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct mirror {
    vkl_dist d;
    int calls;
    size_t sizes[16];
    double peer_flag;  /* the other rank's flag (vkl_dist_any) */
    double peer_delta; /* the other rank's values minus ours (vkl_dist_check_same) */
} mirror;

static int mirror_sum_f32(vkl_dist *d, float *buf, size_t n, vkl_err *e)
{
    (void)e;
    mirror *m = (mirror *)d;
    if (m->calls < 16) m->sizes[m->calls] = n;
    m->calls++;
    for (size_t i = 0; i < n; i++) buf[i] += buf[i];
    return 0;
}

static int mirror_sum_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e)
{
    (void)d;
    (void)e;
    for (size_t i = 0; i < n; i++) buf[i] += buf[i];
    return 0;
}

/* n == 1: a flag; otherwise check_same's [v, -v] layout */
static int mirror_max_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e)
{
    (void)e;
    mirror *m = (mirror *)d;
    if (n == 1) {
        buf[0] = fmax(buf[0], m->peer_flag);
        return 0;
    }
    for (size_t i = 0; i < n / 2; i++) {
        double peer = buf[i] + m->peer_delta;
        buf[i] = fmax(buf[i], peer);
        buf[n / 2 + i] = fmax(buf[n / 2 + i], -peer);
    }
    return 0;
}

static int mirror_bcast(vkl_dist *d, void *buf, size_t bytes, int root, vkl_err *e)
{
    (void)d, (void)buf, (void)bytes, (void)root, (void)e;
    return 0;
}

static void mirror_init(mirror *m)
{
    memset(m, 0, sizeof *m);
    m->d.rank = 0;
    m->d.size = 2;
    m->d.local_size = 2;
    m->d.sum_f32 = mirror_sum_f32;
    m->d.sum_f64 = mirror_sum_f64;
    m->d.max_f64 = mirror_max_f64;
    m->d.bcast = mirror_bcast;
}

/* Tensors of 1000, 3000, 500 and 5000 floats under a 16 KiB (4096-float)
 * bound: the largest tensor widens the bucket to 5000, so two sums go out,
 * 1000 + 3000 + 500 and then 5000; each value becomes 2 * scale * x. */
static void sums_in_bounded_buckets(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx("default");
    vkl_err e = {{0}};
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 3);
    const int64_t sizes[4] = {1000, 3000, 500, 5000};
    vkl_tensor *t[4];
    float *x[4], *got = malloc(sizeof(float) * 5000);
    for (int i = 0; i < 4; i++) {
        t[i] = vkl_tensor_new(c, VKL_F32, 1, &sizes[i], &e);
        assert_non_null(t[i]);
        x[i] = malloc(sizeof(float) * (size_t)sizes[i]);
        vkl_test_fill(&r, x[i], sizes[i], -3, 3);
        assert_int_equal(vkl_tensor_upload(c, t[i], x[i], VKL_F32, &e), 0);
    }
    mirror m;
    mirror_init(&m);
    assert_int_equal(vkl_dist_sum_tensors(&m.d, c, t, 4, 0.25f, 16384, &e), 0);
    assert_int_equal(m.calls, 2);
    assert_int_equal(m.sizes[0], 4500);
    assert_int_equal(m.sizes[1], 5000);
    assert_true(m.d.comm_bytes == 9500 * sizeof(float));
    for (int i = 0; i < 4; i++) {
        assert_int_equal(vkl_tensor_download(c, t[i], got, VKL_F32, &e), 0);
        for (int64_t k = 0; k < sizes[i]; k++) {
            float s = x[i][k] * 0.25f;
            assert_true(got[k] == s + s);
        }
    }
    /* a rank with nothing to add sends zeros, whatever its buffers hold */
    for (int64_t k = 0; k < 500; k++) x[2][k] = NAN;
    assert_int_equal(vkl_tensor_upload(c, t[2], x[2], VKL_F32, &e), 0);
    assert_int_equal(vkl_dist_sum_tensors(&m.d, c, &t[2], 1, 0.0f, 0, &e), 0);
    assert_int_equal(vkl_tensor_download(c, t[2], got, VKL_F32, &e), 0);
    for (int64_t k = 0; k < 500; k++) assert_true(got[k] == 0.0f);
    /* and one non-finite value reaches every rank's sum */
    x[0][7] = INFINITY;
    assert_int_equal(vkl_tensor_upload(c, t[0], x[0], VKL_F32, &e), 0);
    assert_int_equal(vkl_dist_sum_tensors(&m.d, c, t, 1, 1.0f, 0, &e), 0);
    assert_int_equal(vkl_tensor_download(c, t[0], got, VKL_F32, &e), 0);
    assert_true(isinf(got[7]));
    /* tensors other than f32 are refused by name */
    vkl_tensor *h = vkl_tensor_new(c, VKL_F16, 1, &sizes[0], &e);
    assert_int_equal(vkl_dist_sum_tensors(&m.d, c, &h, 1, 1.0f, 0, &e), -1);
    assert_non_null(strstr(e.msg, "not f32"));
    vkl_tensor_free(h);
    for (int i = 0; i < 4; i++) {
        vkl_tensor_free(t[i]);
        free(x[i]);
    }
    free(got);
    vkl_test_ctx_done(c);
}

/* One process (no communicator, or one of size 1): nothing changes, nothing is called. */
static void one_process_is_a_no_op(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx("default");
    vkl_err e = {{0}};
    int64_t n = 33;
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, 1, &n, &e);
    float x[33], got[33];
    for (int i = 0; i < 33; i++) x[i] = (float)i - 3.5f;
    assert_int_equal(vkl_tensor_upload(c, t, x, VKL_F32, &e), 0);
    mirror m;
    mirror_init(&m);
    m.d.size = 1;
    assert_int_equal(vkl_dist_sum_tensors(NULL, c, &t, 1, 0.5f, 0, &e), 0);
    assert_int_equal(vkl_dist_sum_tensors(&m.d, c, &t, 1, 0.5f, 0, &e), 0);
    assert_int_equal(m.calls, 0);
    assert_int_equal(vkl_tensor_download(c, t, got, VKL_F32, &e), 0);
    assert_memory_equal(got, x, sizeof x);
    double v[2] = {1, 2};
    assert_int_equal(vkl_dist_sum_f64(NULL, v, 2, &e), 0);
    assert_true(v[0] == 1 && v[1] == 2);
    int any = 0;
    assert_int_equal(vkl_dist_any(NULL, 1, &any, &e), 0);
    assert_int_equal(any, 1);
    assert_true(vkl_dist_is_root(NULL) && !vkl_dist_active(NULL) && !vkl_dist_active(&m.d));
    vkl_tensor_free(t);
    vkl_test_ctx_done(c);
}

static void agreement(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    mirror m;
    mirror_init(&m);
    int any = 1;
    assert_int_equal(vkl_dist_any(&m.d, 0, &any, &e), 0);
    assert_int_equal(any, 0);
    m.peer_flag = 1; /* a signal on the other rank stops this one too */
    assert_int_equal(vkl_dist_any(&m.d, 0, &any, &e), 0);
    assert_int_equal(any, 1);
    double v[2] = {0, 0.125};
    assert_int_equal(vkl_dist_check_same(&m.d, v, 2, "the step", &e), 0);
    m.peer_delta = 1e-7;
    assert_int_equal(vkl_dist_check_same(&m.d, v, 2, "the step", &e), -1);
    assert_non_null(strstr(e.msg, "disagree on the step"));
    /* NaN on both is the same value */
    m.peer_delta = 0;
    double nan2[1] = {NAN};
    assert_int_equal(vkl_dist_check_same(&m.d, nan2, 1, "the norm", &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sums_in_bounded_buckets),
        cmocka_unit_test(one_process_is_a_no_op),
        cmocka_unit_test(agreement),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
