/* Adapters built in a test: random LoRA modules on a model's targets (the
 * text-encoder training tests, tests/models/test_sd_train_te.c and
 * test_sdxl_train_te.c). */
#ifndef VKL_TEST_LORA_FIXTURE_H
#define VKL_TEST_LORA_FIXTURE_H

#include "vkl_test.h"

#include "lora/lora_file.h"

/* Adds to l a rank-4 LoRA (alpha 4, f32) on the 2-D target t: down uniform
 * in [-0.2, 0.2], then up in [-up_amp, up_amp] (up_amp 0: zero, nothing
 * drawn), both drawn from r. */
void vkl_test_add_random_lora(vkl_lora *l, const vkl_lora_target *t, vkl_test_rng *r, float up_amp);

#endif
