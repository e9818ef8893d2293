/* Building blocks shared by the UNet and the VAE (diffusers module names):
 * resnet blocks, attention layers, spatial transformers, and the layout
 * changes between NCHW activations and [B, tokens, C] sequences. */
#ifndef VKL_SD_BLOCKS_H
#define VKL_SD_BLOCKS_H

#include "ops.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Adapter hook: a model applies LoRA at every linear/conv it names through
 * this table (NULL = no adapters). */
typedef struct vkl_lora_set vkl_lora_set;

typedef struct vkl_sd_net {
    vkl_graph *g;
    const vkl_weights *w;
    const vkl_lora_set *lora;
    /* Mixed-precision training: activations that live long (kept from the
     * forward pass for the backward one) are stored as f16 (vkl_sd_store16). 0:
     * everything f32. Set only where the device has 16-bit storage and fp16
     * arithmetic. */
    int act16;
} vkl_sd_net;

/* x as f16 when n->act16 (a convert after the producing op; the consumers
 * read f16 directly and the f32 original dies at once), else x unchanged.
 * The convert is transparent to autograd: gradients stay f32. */
vkl_tensor *vkl_sd_store16(const vkl_sd_net *n, vkl_tensor *x);

/* x [B,C,H,W] -> [B,H*W,C] (contiguous) and back. */
vkl_tensor *vkl_sd_to_tokens(vkl_graph *g, vkl_tensor *x);
vkl_tensor *vkl_sd_from_tokens(vkl_graph *g, vkl_tensor *t, int64_t H, int64_t W);

/* Linear / conv through the weights named prefix.weight / prefix.bias (bias optional). */
vkl_tensor *vkl_sd_linear(vkl_sd_net *n, vkl_tensor *x, const char *prefix);
vkl_tensor *vkl_sd_conv(vkl_sd_net *n, vkl_tensor *x, const char *prefix, int stride, int pad);
vkl_tensor *vkl_sd_conv_ex(vkl_sd_net *n, vkl_tensor *x, const char *prefix, const vkl_conv2d_params *p);
/* A 1x1 conv or a linear weight applied to a token sequence [B,L,C]. */
vkl_tensor *vkl_sd_proj_tokens(vkl_sd_net *n, vkl_tensor *x, const char *prefix);
vkl_tensor *vkl_sd_group_norm(vkl_sd_net *n, vkl_tensor *x, const char *prefix, int groups, float eps, int silu);
vkl_tensor *vkl_sd_layer_norm(vkl_sd_net *n, vkl_tensor *x, const char *prefix, float eps);

/* Resnet block: GN-SiLU-conv1 (+ time_emb_proj(silu(temb))) GN-SiLU-conv2 + shortcut.
 * temb_silu may be NULL (VAE). */
vkl_tensor *vkl_sd_resnet(vkl_sd_net *n, vkl_tensor *x, vkl_tensor *temb_silu, const char *prefix, int groups,
                          float eps);
/* Multi-head attention on token sequences: q from x [B,Lq,C], k/v from ctx (x when NULL). */
vkl_tensor *vkl_sd_attention(vkl_sd_net *n, vkl_tensor *x, vkl_tensor *ctx, const char *prefix, int heads);
/* Transformer2DModel: GN, proj_in, transformer blocks, proj_out, + input. */
vkl_tensor *vkl_sd_spatial_transformer(vkl_sd_net *n, vkl_tensor *x, vkl_tensor *ctx, const char *prefix, int heads,
                                       int layers, int groups, float gn_eps, float ln_eps);

#ifdef __cplusplus
}
#endif

#endif
