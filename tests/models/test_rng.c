/* Philox4x32-10 against the Random123 known-answer vectors (kat_vectors), and
 * the normal stream's defining properties: position-addressed (drawing in
 * pieces equals drawing at once), separate streams, N(0,1) moments. */
#include "vkl_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

static void philox_known_answers(void **state)
{
    (void)state;
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        vkl_philox4x32_10(kat[i], kat[i] + 4, out);
        for (int k = 0; k < 4; k++) assert_int_equal(out[k], kat[i][6 + k]);
    }
}

static void stream_is_position_addressed(void **state)
{
    (void)state;
    enum { N = 1001 };
    float whole[N], parts[N];
    vkl_rng r;
    vkl_rng_init(&r, 1234567890123ull, VKL_RNG_STREAM_INIT);
    vkl_rng_normal(&r, whole, N);
    assert_int_equal(r.offset, N);
    vkl_rng_init(&r, 1234567890123ull, VKL_RNG_STREAM_INIT);
    static const size_t cuts[] = {1, 2, 5, 3, 64, 7, 300, 619};
    size_t at = 0;
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        vkl_rng_normal(&r, parts + at, cuts[i]);
        at += cuts[i];
    }
    assert_int_equal(at, N);
    assert_memory_equal(whole, parts, sizeof whole);
    for (size_t k = 0; k < N; k += 97)
        assert_true(vkl_rng_normal_at(1234567890123ull, VKL_RNG_STREAM_INIT, k) == whole[k]);
    /* another stream or seed gives other numbers */
    int same_stream = 0, same_seed = 0;
    for (size_t k = 0; k < 64; k++) {
        same_stream += vkl_rng_normal_at(1234567890123ull, VKL_RNG_STREAM_STEP, k) == whole[k];
        same_seed += vkl_rng_normal_at(1234567890124ull, VKL_RNG_STREAM_INIT, k) == whole[k];
    }
    assert_true(same_stream == 0 && same_seed == 0);
    /* the adapter draws from the same stream */
    vkl_rng_init(&r, 1234567890123ull, VKL_RNG_STREAM_INIT);
    vkl_rng_noise_fn(&r, parts, 10);
    assert_memory_equal(whole, parts, 10 * sizeof(float));
}

/* The transform of the first block, written out from the definition. */
static void box_muller_definition(void **state)
{
    (void)state;
    const uint64_t seed = 42;
    uint32_t ctr[4] = {0, 0, 0, 0}, key[2] = {42, 0}, x[4];
    vkl_philox4x32_10(ctr, key, x);
    double u1 = ((double)x[0] + 1.0) / 4294967296.0, u2 = (double)x[1] / 4294967296.0;
    double r = sqrt(-2.0 * log(u1));
    assert_true(vkl_rng_normal_at(seed, 0, 0) == (float)(r * cos(2 * M_PI * u2)));
    assert_true(vkl_rng_normal_at(seed, 0, 1) == (float)(r * sin(2 * M_PI * u2)));
}

static void normal_moments(void **state)
{
    (void)state;
    enum { N = 1 << 20 };
    float *z = malloc(N * sizeof *z);
    assert_non_null(z);
    vkl_rng r;
    vkl_rng_init(&r, 7, VKL_RNG_STREAM_STEP);
    vkl_rng_normal(&r, z, N);
    double m1 = 0, m2 = 0, m4 = 0;
    size_t beyond3 = 0;
    for (size_t i = 0; i < N; i++) {
        assert_true(isfinite(z[i]));
        m1 += z[i];
        m2 += (double)z[i] * z[i];
        m4 += (double)z[i] * z[i] * z[i] * z[i];
        beyond3 += fabsf(z[i]) > 3.0f;
    }
    m1 /= N;
    m2 /= N;
    m4 /= N;
    fprintf(stderr, "2^20 normals: mean %.5f, var %.5f, 4th moment %.4f, P(|z|>3) %.5f\n", m1, m2,
            m4, (double)beyond3 / N);
    /* 5 standard errors: mean 1/1024, variance sqrt(2)/1024, kurtosis sqrt(96)/1024 */
    assert_true(fabs(m1) < 5.0 / 1024);
    assert_true(fabs(m2 - 1) < 5 * 1.4143 / 1024);
    assert_true(fabs(m4 - 3) < 5 * 9.8 / 1024);
    assert_true(fabs((double)beyond3 / N - 0.0026998) < 0.0004);
    free(z);
}

/* splitmix64's published outputs for state 0 (Vigna's splitmix64.c), and
 * the shuffle it drives, worked out by hand from the same rule */
static void splitmix_and_shuffle(void **state)
{
    (void)state;
    uint64_t s = 0;
    assert_true(vkl_splitmix64(&s) == 0xe220a8397b1dcdafull);
    assert_true(vkl_splitmix64(&s) == 0x6e789e6aa1b965f4ull);
    assert_true(vkl_splitmix64(&s) == 0x06c45d188009454full);
    int v[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    const int want[10] = {0, 9, 5, 8, 6, 4, 7, 2, 1, 3};
    s = 42;
    vkl_shuffle_ints(v, 10, &s);
    assert_memory_equal(v, want, sizeof want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(philox_known_answers),
        cmocka_unit_test(stream_is_position_addressed),
        cmocka_unit_test(box_muller_definition),
        cmocka_unit_test(normal_moments),
        cmocka_unit_test(splitmix_and_shuffle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
