#include "lora_fixture.h"

#include <stdlib.h>
#include <string.h>

void vkl_test_add_random_lora(vkl_lora *l, const vkl_lora_target *t, vkl_test_rng *r, float up_amp)
{
    vkl_err e = {{0}};
    assert_int_equal(t->ndim, 2);
    vkl_lora_module *m = vkl_lora_add_module(l, &e);
    assert_non_null(m);
    m->name = strdup(t->name);
    m->kname = strdup(t->kname);
    m->source = strdup(t->kname);
    m->kind = VKL_LORA_KIND_LORA;
    m->alpha = 4;
    m->has_alpha = 1;
    m->alpha_dtype = VKL_F32;
    int64_t ds[2] = {4, t->shape[1]}, us[2] = {t->shape[0], 4};
    float *down = vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], 2, ds, &e);
    float *up = vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], 2, us, &e);
    assert_true(down && up);
    m->t[VKL_LORA_DOWN].dtype = m->t[VKL_LORA_UP].dtype = VKL_F32;
    vkl_test_fill(r, down, (size_t)(ds[0] * ds[1]), -0.2f, 0.2f);
    if (up_amp > 0) vkl_test_fill(r, up, (size_t)(us[0] * us[1]), -up_amp, up_amp);
    else memset(up, 0, sizeof(float) * (size_t)(us[0] * us[1]));
    if (vkl_lora_module_finish(m, t, &e)) fail_msg("%s", e.msg);
}
