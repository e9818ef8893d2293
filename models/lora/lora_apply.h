/* Adapters applied at run time: the model's weights stay untouched and every
 * adapted linear/convolution runs the adapters beside the frozen weight.
 *
 *  - LoRA / LoCon modules (and Tucker LoCon, whose core is folded into the
 *    down factor once: down'[r,i,k,l] = sum_s mid[r,s,k,l] down[s,i]) take the
 *    low-rank path (runtime/ops.h vkl_linear_lora / vkl_conv2d_lora): all
 *    adapters of one layer concatenated along the rank, with a per-rank scale
 *    (multiplier * scale of its adapter) on the device.
 *  - LoHa and LoKr modules have no cheap factored form: their delta W is
 *    computed once on the CPU (lora_delta.h, in double), kept on the device as
 *    an f32 tensor of the weight's shape, and run as a second linear /
 *    convolution on the layer's input: y += m * (delta W x), m read from a
 *    one-element device tensor.
 *  - DoRA is not additive in its factors: the layer runs with a replacement
 *    weight W' = W + m * (DoRA delta), f32, computed on the CPU from the base
 *    weight (so the set needs the model's weights), in place of W. Other
 *    adapters of the same layer add on top of W'. At most one DoRA module per
 *    layer.
 *  - Training mode (vkl_lora_set_build_train, one adapter, multiplier 1):
 *    LoRA / LoCon modules take the low-rank path as above (a_cat / b_cat are
 *    the trainable tensors); LoHa, LoKr and DoRA modules keep their factors
 *    as persistent trainable tensors (slot->tf, by role) and build delta W
 *    (DoRA: W') inside the graph from them with differentiable ops, so the
 *    gradient reaches every factor:
 *      LoHa  y = W x + (s (w1a @ w1b) * (w2a @ w2b)) x
 *      LoKr  y = W x + (s kron(w1, w2)) x, the Kronecker product as a
 *            broadcast product w1[a,1,c,1] * w2[1,b,1,x] read as [a*b, c*x]
 *      DoRA  y = W' x + bias, W' = mag * V / ||V||, V = W + s up @ down, the
 *            norm over the axis the magnitude's shape names (lora_delta.h);
 *            not detached (LyCORIS differentiates through it).
 *    The formulas are lora_delta.c's, so a saved adapter applied the usual
 *    way reproduces the training graph.
 * Changing multipliers is small uploads without rebuilding or re-planning
 * anything, except for DoRA layers whose multiplier changed: their W' is
 * recomputed on the CPU (base weight read back, delta, upload) into the same
 * tensor, so a planned graph stays valid. */
#ifndef VKL_LORA_APPLY_H
#define VKL_LORA_APPLY_H

#include "lora/lora_file.h"
#include "ops.h"
#include "vkl.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_lora_use {
    const vkl_lora *lora;
    float unet_mult;   /* multiplier on UNet modules */
    float te_mult;     /* multiplier on text-encoder modules */
} vkl_lora_use;

/* One LoHa / LoKr module of one adapter. Its factors stay factors on the
 * device (tf by role, f32) and each graph composes the delta where the layer
 * runs, so the set holds the factors' memory, not a weight-sized delta per
 * module; only Tucker forms (hada_t1, lokr_t2) are held as a full delta. */
typedef struct vkl_lora_full {
    vkl_tensor *delta; /* Tucker forms: f32, the weight's shape, scale * product; else NULL */
    vkl_tensor *tf[VKL_LORA_ROLES]; /* the factors by role (NULL where the module has none) */
    vkl_lora_kind kind;
    float scale;       /* the module's alpha / rank scale (multiplier not included) */
    vkl_tensor *mult;  /* [1] f32: the adapter's multiplier for this module */
    int owner;         /* adapter index */
} vkl_lora_full;

typedef struct vkl_lora_slot {
    char *module;          /* internal module name, e.g. unet.down_blocks.0.attentions.0.proj_in */
    vkl_tensor *a_cat;     /* [R, in] or [R, in, kh, kw] (f32) */
    vkl_tensor *b_cat;     /* [out, R] or [out, R, 1, 1] (f32) */
    vkl_tensor *rank_scale;/* [R] f32 */
    int R;                 /* 0 when no LoRA module: a_cat, b_cat, rank_scale NULL */
    int *owner;            /* adapter index of each rank row */
    int conv;              /* 1: a convolution (a_cat 4-D) */
    vkl_lora_full *full;   /* LoHa / LoKr modules */
    int n_full;
    vkl_tensor *w_dora;    /* DoRA: the weight to use instead of the model's (f32), or NULL */
    int dora_owner;        /* adapter index of the DoRA module */
    float dora_mult;       /* multiplier w_dora was computed for */
    int wndim;             /* the adapted weight's shape */
    int64_t wshape[4];
    /* training mode: a LoHa / LoKr / DoRA module's trainable factors by role
     * (NULL where the module has none), its kind and scale */
    int trained;
    vkl_lora_kind tkind;
    vkl_tensor *tf[VKL_LORA_ROLES];
    float tscale;
} vkl_lora_slot;

typedef struct vkl_lora_set vkl_lora_set;

/* Builds the device tensors for every module any of the adapters touches
 * (every module must be resolved to an internal name). base: the model's
 * weights (internal names), needed only by DoRA modules; it must outlive the
 * set (a DoRA multiplier change reads it again). vkl_lora_set_build is
 * vkl_lora_set_build_ex without base weights: it refuses DoRA modules. */
int vkl_lora_set_build_ex(vkl_ctx *c, const vkl_lora_use *uses, int n, const vkl_weights *base, vkl_lora_set **out,
                          vkl_err *e);
int vkl_lora_set_build(vkl_ctx *c, const vkl_lora_use *uses, int n, vkl_lora_set **out, vkl_err *e);
void vkl_lora_set_free(vkl_lora_set *s);
/* Training mode (see the header comment): one adapter at multiplier 1, every
 * module resolved; Tucker forms are refused. The model's weights are not
 * needed (a DoRA layer reads the weight the layer is given). */
int vkl_lora_set_build_train(vkl_ctx *c, const vkl_lora *l, vkl_lora_set **out, vkl_err *e);
/* A LoHa / LoKr delta composed in the graph from factors by role: scale *
 * (w1a w1b) * (w2a w2b) element-wise, or scale * kron(w1, w2); [out, in *
 * kernel]. Every op it uses has a backward rule (training uses it too). */
vkl_tensor *vkl_lora_factored_delta(vkl_graph *g, vkl_tensor *const *tf, vkl_lora_kind kind, float scale,
                                    const char *module);
/* The trainable tensors of a slot in a fixed order, with their roles: LoRA
 * a_cat (DOWN), b_cat (UP); the others the roles present in role order (LoHa
 * w1a, w1b, w2a, w2b; LoKr w1 or w1a, w1b, then w2 or w2a, w2b; DoRA down, up,
 * magnitude). t and roles hold VKL_LORA_ROLES entries. Returns the count. */
int vkl_lora_slot_params(const vkl_lora_slot *sl, vkl_tensor **t, vkl_lora_role *roles);
/* Copies a slot's trainable tensors into / from the module's host tensors of
 * the same roles (element counts must agree). */
int vkl_lora_slot_download(vkl_ctx *c, const vkl_lora_slot *sl, vkl_lora_module *m, vkl_err *e);
int vkl_lora_slot_upload(vkl_ctx *c, const vkl_lora_slot *sl, const vkl_lora_module *m, vkl_err *e);
/* New multipliers for the same adapters (same count and order as built). */
int vkl_lora_set_multipliers(vkl_lora_set *s, const vkl_lora_use *uses, int n, vkl_err *e);
const vkl_lora_slot *vkl_lora_set_find(const vkl_lora_set *s, const char *module);
int vkl_lora_set_count(const vkl_lora_set *s);
const vkl_lora_slot *vkl_lora_set_at(const vkl_lora_set *s, int i);

/* A linear layer `module` (weight w [out,in], bias may be NULL) with the
 * set's adapters if it has any for that module (s may be NULL). */
vkl_tensor *vkl_lora_linear(vkl_graph *g, const vkl_lora_set *s, const char *module, vkl_tensor *x, vkl_tensor *w,
                            vkl_tensor *bias);
/* The same for a convolution (weight [out,in,kh,kw]). */
vkl_tensor *vkl_lora_conv2d(vkl_graph *g, const vkl_lora_set *s, const char *module, vkl_tensor *x, vkl_tensor *w,
                            vkl_tensor *bias, const vkl_conv2d_params *p);

/* ---- internal: the training-mode layers (lora_train_graph.c) ---- */
vkl_tensor *vkl_lora_trained_linear(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *x, vkl_tensor *w,
                                    vkl_tensor *bias);
vkl_tensor *vkl_lora_trained_conv2d(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *x, vkl_tensor *w,
                                    vkl_tensor *bias, const vkl_conv2d_params *p);
/* The slot's LoHa / LoKr delta W (scale included) or DoRA W' (from the layer's
 * weight w) as a [out, in*kh*kw] matrix. */
vkl_tensor *vkl_lora_trained_weight(vkl_graph *g, const vkl_lora_slot *sl, vkl_tensor *w);

#ifdef __cplusplus
}
#endif

#endif
