/* The diffusion training loss of a few image/caption pairs at fixed
 * timesteps and fixed noise, forward only: what LoRAHub's image search
 * evaluates for every candidate adapter, so that candidates are compared on
 * exactly the same noisy inputs.
 *
 * For image i (latents x0, encoded once by the VAE) and each of its n_t
 * timesteps t_j = floor((j + 1/2) T / n_t) (T: the scheduler's training
 * steps, so 1000 gives 125, 375, 625, 875 for n_t = 4), noise e_ij drawn from
 * the seed (Philox, addressed by image, timestep and element):
 *     noisy = sqrt(acp_t) x0 + sqrt(1 - acp_t) e,
 *     target = e (epsilon models) or sqrt(acp_t) e - sqrt(1 - acp_t) x0 (v),
 *     loss = mean over images and timesteps of mean((UNet(noisy, t, text) - target)^2),
 * the training loss of `vklora train` without min-SNR weighting or noise
 * offset. The text states come from the caption through the text encoder.
 *
 * The adapters are the model's (m->unet.lora, m->te.lora) when the
 * evaluator is made: its graphs are built and planned once with that set, so
 * the set's factors may be rewritten between runs (vkl_lora_slot_upload)
 * but the set itself must stay. te_adapted: the set has text-encoder
 * modules, so the text states are recomputed at every run (else once). */
#ifndef VKL_SD_FIXED_LOSS_H
#define VKL_SD_FIXED_LOSS_H

#include "sd/sd_model.h"
#include "train/dataset.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_sd_fixed_loss vkl_sd_fixed_loss;

/* Every image of d (opened with bucket 0: one square size), n_t >= 1
 * timesteps each. SD 1.x / 2.x models (one text encoder). */
int vkl_sd_fixed_loss_new(vkl_sd_model *m, const vkl_dataset *d, int n_t, uint64_t seed, int te_adapted,
                          vkl_sd_fixed_loss **out, vkl_err *e);
int vkl_sd_fixed_loss_run(vkl_sd_fixed_loss *l, double *loss, vkl_err *e);
void vkl_sd_fixed_loss_free(vkl_sd_fixed_loss *l);

#ifdef __cplusplus
}
#endif

#endif
