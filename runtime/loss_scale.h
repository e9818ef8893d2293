/* Dynamic loss scaling for mixed-precision training, with the rules of
 * PyTorch's GradScaler: the loss gradient is seeded with a scale S (so small
 * gradients stay representable where they pass through 16-bit storage); the
 * optimiser divides by S (vkl_adamw_set_grad_scale folds 1/S into the clip
 * factor, once per optimiser step, after any accumulation); a step whose
 * gradient is not finite is skipped on the device (no parameter or moment
 * changes) and S is multiplied by `backoff`; after `interval` finite steps in
 * a row S is multiplied by `growth`. The state is two numbers, saved with a
 * training run so a resumed run continues with the same scale. Host-only. */
#ifndef VKL_LOSS_SCALE_H
#define VKL_LOSS_SCALE_H

typedef struct vkl_loss_scaler {
    float scale;      /* S: the current multiplier of the loss gradient */
    int good;         /* finite steps since the last change of S */
    float growth, backoff, min_scale, max_scale;
    int interval;
} vkl_loss_scaler;

/* GradScaler's defaults: S = 65536, growth 2 every 2000 steps, backoff 0.5;
 * S stays within [1, 2^24] (below 1 scaling only loses range; above 2^24
 * f32 gradients of ordinary size would overflow the squared-norm sum). */
void vkl_loss_scaler_init(vkl_loss_scaler *s);

/* After an optimiser step: skipped = the gradient was not finite. Returns 1
 * when the skip is an overflow that the smaller scale may cure (S was above
 * its minimum and has been lowered), 0 otherwise (a finite step, or a
 * non-finite gradient at the minimum scale: a real divergence). */
int vkl_loss_scaler_update(vkl_loss_scaler *s, int skipped);

#endif
