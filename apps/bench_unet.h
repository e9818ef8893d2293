#ifndef VKL_BENCH_UNET_H
#define VKL_BENCH_UNET_H
/* vklora bench unet --family sd1.5 --width W --height H: seconds per sampling
 * step (UNet with guidance: batch 2) and peak device memory, random weights. */
int vkl_bench_unet(int argc, char **argv);
#endif
