/* Checks of full-network weight gradients shared by the SD and SDXL tests
 * (tests/models/test_sd_full_grad.c, test_sdxl_full_grad.c): the adapted
 * weights' gradients against the reference kit's LoRA factor gradients, and
 * the other weights' against central differences of the loss. */
#ifndef VKL_TEST_GRAD_CHECK_H
#define VKL_TEST_GRAD_CHECK_H

#include "vkl_test.h"

#include "lora/lora_file.h"
#include "train/full_network.h"
#include "train/sd_train_step.h"

/* For a linear module y = (W + s B A) x the factors' gradients follow from the
 * weight's, G = dL/dW: dL/dB = s G A^T and dL/dA = s B^T G. Every 2-D
 * parameter "<module>.weight" of net that lora adapts has its gradient (the
 * step's gradient of the same index) taken through both products and compared
 * with the kit's grad.<key>.lora_up.weight / lora_down.weight in vec (key: the
 * module's kohya name, or with by_source its key in the adapter file read);
 * fails beyond a relative L2 error of 1e-4. Returns how many were checked. */
int vkl_test_check_adapted_weights(vkl_ctx *c, const char *vec, const vkl_lora *lora, const vkl_full_net *net,
                                   vkl_sd_train_step *s, int by_source);

/* The largest element of parameter i's gradient (nonzero) against a central
 * difference (h = 1e-2) of loss(user), within 3 % + 2e-4: f32 losses near 1
 * resolve differences of about 1e-6 / h. The parameter is restored. */
void vkl_test_check_difference(vkl_ctx *c, const vkl_full_net *net, vkl_sd_train_step *s, const char *name,
                               float (*loss)(void *user), void *user);

#endif
