/* One training step of a whole VAE (diffusers AutoencoderKL) on the device:
 *   moments = encoder(images)               images [B, 3, H, W] in [-1, 1]
 *   mean, logvar = the two halves of moments, logvar clamped to [-30, 20]
 *   z = mean + exp(logvar / 2) * eps         eps ~ N(0, 1) drawn on the host
 *   rec = decoder(z)
 *   loss = rec_loss + kl_weight * kl
 * rec_loss: mean over every pixel and channel of |rec - images| (l1) or
 * (rec - images)^2 (mse). kl: KL(N(mean, var) || N(0, 1)) per latent element,
 * 0.5 (mean^2 + var - 1 - logvar), averaged over all latent elements (the
 * batch included), so kl_weight weighs one latent element's KL against one
 * pixel's reconstruction error whatever the image size.
 * Every VAE weight is a trainable f32 tensor; gradients come from autograd
 * and AdamW updates them inside the same graph, built and planned once for
 * one image shape and replayed every step. */
#ifndef VKL_VAE_TRAIN_STEP_H
#define VKL_VAE_TRAIN_STEP_H

#include "optim.h"
#include "sd/vae.h"

typedef enum { VKL_VAE_LOSS_L1 = 0, VKL_VAE_LOSS_MSE = 1 } vkl_vae_loss_kind;
/* "l1" / "mse" */
int vkl_vae_loss_parse(const char *name, vkl_vae_loss_kind *k);
const char *vkl_vae_loss_name(vkl_vae_loss_kind k);

/* The VAE's weights (borrowed from vae->w) in the order of its parameter
 * list (sd_layout.h: vkl_sd_vae_params_build); *params is malloc'd. Every
 * one must be a persistent f32 tensor. */
int vkl_vae_train_params(const vkl_vae *vae, vkl_tensor ***params, int *n, vkl_err *e);

typedef struct vkl_vae_train_opts {
    vkl_vae_loss_kind loss;
    float kl_weight;
    vkl_adamw *opt; /* fused update (borrowed, over vkl_vae_train_params), or NULL: gradients kept */
} vkl_vae_train_opts;

typedef struct vkl_vae_train_step vkl_vae_train_step;

int vkl_vae_train_step_new(vkl_ctx *c, const vkl_vae *vae, int batch, int height, int width,
                           const vkl_vae_train_opts *o, vkl_vae_train_step **out, vkl_err *e);
void vkl_vae_train_step_free(vkl_vae_train_step *s);
/* Elements of eps: batch * latent_channels * (height / f) * (width / f). */
size_t vkl_vae_train_step_eps_count(const vkl_vae_train_step *s);

typedef struct vkl_vae_losses {
    float loss, rec, kl;
} vkl_vae_losses;

/* images [B, 3, H, W], eps [B, latent, h, w]; step 1-based and lr for the
 * optimiser (ignored without one). out may be NULL. */
int vkl_vae_train_step_run(vkl_vae_train_step *s, const float *images, const float *eps, int step, float lr,
                           vkl_vae_losses *out, vkl_err *e);
int vkl_vae_train_step_param_count(const vkl_vae_train_step *s);
vkl_tensor *vkl_vae_train_step_param(const vkl_vae_train_step *s, int i);
vkl_tensor *vkl_vae_train_step_grad(const vkl_vae_train_step *s, int i); /* kept only without an optimiser */

/* Inference for evaluation: the posterior means of images and their
 * reconstruction decoder(mean), one planned graph per batch shape. */
typedef struct vkl_vae_recon vkl_vae_recon;
int vkl_vae_recon_new(vkl_ctx *c, const vkl_vae *vae, int batch, int height, int width, vkl_vae_recon **out,
                      vkl_err *e);
void vkl_vae_recon_free(vkl_vae_recon *r);
/* means [B, latent, h, w] and rec [B, 3, H, W]; either may be NULL. */
int vkl_vae_recon_run(vkl_vae_recon *r, const float *images, float *means, float *rec, vkl_err *e);

#endif
