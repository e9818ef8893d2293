/* Host-side number conversions against exactly known values. */
#include "vkl_test.h"

#include <math.h>
#include <string.h>

static void f16_known_values(void **state)
{
    (void)state;
    assert_int_equal(vkl_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(vkl_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(vkl_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(vkl_f32_to_f16(65520.0f), 0x7c00);        /* rounds up to inf */
    assert_int_equal(vkl_f32_to_f16(5.9604644775390625e-8f), 0x0001); /* smallest subnormal */
    assert_int_equal(vkl_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);     /* tie -> even */
    assert_int_equal(vkl_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);     /* tie -> even (up) */
    assert_true(vkl_f16_to_f32(0x7e00) != vkl_f16_to_f32(0x7e00));    /* NaN */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaNs */
        assert_int_equal(vkl_f32_to_f16(vkl_f16_to_f32((uint16_t)h)), h);
    }
}

static void bf16_known_values(void **state)
{
    (void)state;
    assert_int_equal(vkl_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(vkl_f32_to_bf16(-3.0f), 0xc040);
    assert_true(vkl_bf16_to_f32(0x3f80) == 1.0f);
    /* 1 + 2^-8 is a tie between 1 and 1+2^-7: even is 1 */
    assert_int_equal(vkl_f32_to_bf16(1.0f + 1.0f / 256), 0x3f80);
    float nan = NAN;
    assert_true(isnan(vkl_bf16_to_f32(vkl_f32_to_bf16(nan))));
}

static void dtype_names(void **state)
{
    (void)state;
    vkl_dtype t;
    assert_int_equal(vkl_dtype_parse("float16", &t), 0);
    assert_int_equal(t, VKL_F16);
    assert_int_equal(vkl_dtype_parse("BF16", &t), 0);
    assert_int_equal(t, VKL_BF16);
    assert_int_equal(vkl_dtype_parse("q17", &t), -1);
    assert_int_equal(vkl_dtype_size(VKL_I64), 8);
}

static void host_convert(void **state)
{
    (void)state;
    int64_t src[3] = {1, -7, 1LL << 40};
    int32_t dst[3];
    vkl_err e = {{0}};
    assert_int_equal(vkl_convert_host(src, VKL_I64, dst, VKL_I32, 2, &e), 0);
    assert_int_equal(dst[1], -7);
    assert_int_equal(vkl_convert_host(src, VKL_I64, dst, VKL_I32, 3, &e), -1);
    assert_non_null(strstr(e.msg, "does not fit"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(f16_known_values),
        cmocka_unit_test(bf16_known_values),
        cmocka_unit_test(dtype_names),
        cmocka_unit_test(host_convert),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
