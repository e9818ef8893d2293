/* Adapters applied at run time: the model's weights stay untouched and every
 * adapted linear/convolution runs the low-rank path beside the frozen weight
 * (runtime/ops.h vkl_linear_lora / vkl_conv2d_lora). All adapters of one
 * layer are concatenated along the rank, with a per-rank scale
 * (multiplier * scale of its adapter) on the device: changing multipliers is
 * one small upload, without rebuilding or re-planning anything. */
#ifndef VKL_LORA_APPLY_H
#define VKL_LORA_APPLY_H

#include "lora/lora_file.h"
#include "vkl.h"

typedef struct vkl_lora_use {
    const vkl_lora *lora;
    float unet_mult;   /* multiplier on UNet modules */
    float te_mult;     /* multiplier on text-encoder modules */
} vkl_lora_use;

typedef struct vkl_lora_slot {
    char *module;          /* internal module name, e.g. unet.down_blocks.0.attentions.0.proj_in */
    vkl_tensor *a_cat;     /* [R, in] or [R, in, kh, kw] (f32) */
    vkl_tensor *b_cat;     /* [out, R] or [out, R, 1, 1] (f32) */
    vkl_tensor *rank_scale;/* [R] f32 */
    int R;
    int *owner;            /* adapter index of each rank row */
    int conv;              /* 1: a convolution (a_cat 4-D) */
} vkl_lora_slot;

typedef struct vkl_lora_set vkl_lora_set;

/* Builds the device tensors for every module any of the adapters touches.
 * LoRA and LoCon modules are supported; LoHa, LoKr, DoRA and Tucker LoCon
 * modules are refused with a message naming the module (bake those with
 * `vklora merge --model`). */
int vkl_lora_set_build(vkl_ctx *c, const vkl_lora_use *uses, int n, vkl_lora_set **out, vkl_err *e);
void vkl_lora_set_free(vkl_lora_set *s);
/* New multipliers for the same adapters (same count and order as built). */
int vkl_lora_set_multipliers(vkl_lora_set *s, const vkl_lora_use *uses, int n, vkl_err *e);
const vkl_lora_slot *vkl_lora_set_find(const vkl_lora_set *s, const char *module);
int vkl_lora_set_count(const vkl_lora_set *s);
const vkl_lora_slot *vkl_lora_set_at(const vkl_lora_set *s, int i);

/* A linear layer `module` (weight w [out,in], bias may be NULL) with the
 * set's adapters if it has any for that module (s may be NULL). */
vkl_tensor *vkl_lora_linear(vkl_graph *g, const vkl_lora_set *s, const char *module, vkl_tensor *x, vkl_tensor *w,
                            vkl_tensor *bias);

#endif
