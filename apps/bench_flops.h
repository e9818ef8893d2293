/* Floating-point work of a UNet forward pass, counted from its configuration
 * (2 flops per multiply-add of every convolution, linear layer and attention
 * product; norms, activations and additions left out), for the GFLOP/s
 * figures of the benchmarks. */
#ifndef VKL_BENCH_FLOPS_H
#define VKL_BENCH_FLOPS_H

#include "sd/sd_config.h"

/* latents [batch, in_channels, lh, lw], text states [batch, tokens, cross_attention_dim]. */
double vkl_bench_unet_forward_flops(const vkl_sd_unet_config *u, int batch, int lh, int lw, int tokens);

#endif
