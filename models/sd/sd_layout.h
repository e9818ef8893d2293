/* Stable Diffusion checkpoint layouts.
 *
 * vklora names every weight by its diffusers module path, prefixed with the
 * model it belongs to ("the internal name"):
 *   unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight
 *   vae.decoder.mid_block.attentions.0.to_q.weight
 *   text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight
 *   text_encoder_2.text_projection.weight                              (SDXL)
 * The list of internal names and their shapes follows from the configuration
 * alone (vkl_sd_params_build). A layout maps each internal name to the tensor
 * that holds it in a checkpoint:
 *   VKL_SD_LAYOUT_DIFFUSERS  folder of per-model files: strip the model prefix.
 *   VKL_SD_LAYOUT_LDM        original single file (model.diffusion_model.*,
 *                            first_stage_model.*, cond_stage_model.* or
 *                            conditioner.embedders.*), with block numbering
 *                            computed from the configuration.
 * Some tensors change form on the way (vkl_sd_xform): VAE mid-attention 1x1
 * convs [C,C,1,1] become linears [C,C]; OpenCLIP's fused in_proj [3D,D] is
 * split into q/k/v; OpenCLIP's text_projection [D,P] is transposed. */
#ifndef VKL_SD_LAYOUT_H
#define VKL_SD_LAYOUT_H

#include "io/safetensors.h"
#include "sd/sd_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vkl_sd_layout { VKL_SD_LAYOUT_LDM = 0, VKL_SD_LAYOUT_DIFFUSERS } vkl_sd_layout;

/* ---- key lists: the names and shapes a checkpoint holds ---- */
typedef struct vkl_sd_key {
    char *name;  /* lookup name (diffusers layout: "unet." + file key), owned */
    int file;    /* index of the file that holds it (caller's numbering) */
    int ndim;
    int64_t shape[VKL_ST_MAX_DIMS];
    const vkl_st_tensor *t; /* NULL for key lists without data */
} vkl_sd_key;

typedef struct vkl_sd_keys {
    vkl_sd_key *v;
    int n, cap;
    int *order; /* indices sorted by name, built by vkl_sd_keys_finish */
} vkl_sd_keys;

int vkl_sd_keys_add(vkl_sd_keys *k, const char *prefix, const char *name, int file, int ndim,
                    const int64_t *shape, const vkl_st_tensor *t, vkl_err *e);
/* Adds every tensor of a safetensors file, names prefixed by prefix (may be ""). */
int vkl_sd_keys_add_file(vkl_sd_keys *k, const vkl_st_file *f, const char *prefix, int file,
                         vkl_err *e);
/* Sorts for lookup; fails on duplicate names. */
int vkl_sd_keys_finish(vkl_sd_keys *k, vkl_err *e);
int vkl_sd_keys_find(const vkl_sd_keys *k, const char *name); /* index or -1 */
/* Number of keys starting with prefix. */
int vkl_sd_keys_count_prefix(const vkl_sd_keys *k, const char *prefix);
/* Shape of a key or NULL (ndim written to *ndim). */
const int64_t *vkl_sd_keys_shape(const vkl_sd_keys *k, const char *name, int *ndim);
void vkl_sd_keys_free(vkl_sd_keys *k);

/* ---- internal parameter list, from the configuration ---- */
typedef struct vkl_sd_param {
    char *name;
    int ndim;
    int64_t shape[4];
} vkl_sd_param;

typedef struct vkl_sd_params {
    vkl_sd_param *v;
    int n, cap;
} vkl_sd_params;

int vkl_sd_params_build(const vkl_sd_config *c, vkl_sd_params *p, vkl_err *e);
/* The VAE's parameters alone ("vae.*", same order as in the whole list). */
int vkl_sd_vae_params_build(const vkl_sd_vae_config *v, vkl_sd_params *p, vkl_err *e);
void vkl_sd_params_free(vkl_sd_params *p);

/* ---- detection and inference from original single-file keys ---- */

/* Family from keys and shapes: XL (conditioner.embedders.* or label_emb),
 * 2.x (OpenCLIP cond_stage_model.model.*), 1.x (CLIP cond_stage_model.transformer.*),
 * else by the UNet context width (768 / 1024 / 2048). Error when the keys are
 * not an SD checkpoint or the family is unknown, quoting what was found. */
int vkl_sd_detect_family(const vkl_sd_keys *k, vkl_sd_family *f, vkl_err *e);
/* Configuration from names and shapes of an original single file: levels,
 * channels, layers per block, attention placement, transformer depth, context
 * width, projection kind, VAE and text-encoder sizes. What shapes cannot tell
 * (heads, norm groups, prediction type, ...) follows the family's conventions;
 * vkl_sd_config_apply_ldm_yaml refines it. */
int vkl_sd_config_infer_ldm(const vkl_sd_keys *k, vkl_sd_family f, vkl_sd_config *c, vkl_err *e);

/* ---- mapping ---- */
typedef enum vkl_sd_xform {
    VKL_SD_X_NONE = 0,
    VKL_SD_X_RESHAPE,   /* same data, trailing unit dims dropped ([C,C,1,1] -> [C,C]) */
    VKL_SD_X_SPLIT,     /* rows [part*n, (part+1)*n) of a fused tensor along dim 0 */
    VKL_SD_X_TRANSPOSE  /* 2-D transpose */
} vkl_sd_xform;

typedef struct vkl_sd_entry {
    const char *name; /* internal name (points into the params list) */
    int ndim;
    int64_t shape[4]; /* internal shape */
    int key;          /* index into the source keys */
    vkl_sd_xform xform;
    int part, parts;  /* VKL_SD_X_SPLIT */
} vkl_sd_entry;

typedef struct vkl_sd_mapping {
    vkl_sd_params params;
    vkl_sd_entry *v; /* one per param, same order */
    int n;
    int n_ignored; /* source keys deliberately unused (EMA copies, schedule buffers, ...) */
} vkl_sd_mapping;

/* Maximum number of names quoted per category in an error message. */
#define VKL_SD_MAX_LISTED 8

/* Maps every internal parameter of config c to a key of k. Fails when keys are
 * missing, have the wrong shape or are unexpected (neither mapped nor a known
 * unused buffer), listing up to VKL_SD_MAX_LISTED of each with their counts. */
int vkl_sd_map(const vkl_sd_config *c, vkl_sd_layout layout, const vkl_sd_keys *k,
               vkl_sd_mapping *m, vkl_err *e);
void vkl_sd_mapping_free(vkl_sd_mapping *m);
/* Entry for an internal name, NULL when absent. */
const vkl_sd_entry *vkl_sd_mapping_find(const vkl_sd_mapping *m, const char *name);

/* Source name candidates of one internal name in a layout (used by vkl_sd_map;
 * exposed for tests and tools). Writes up to max candidates, returns how many,
 * or -1 when the name does not belong to the configuration. */
typedef struct vkl_sd_src_name {
    char name[256];
    vkl_sd_xform xform; /* NONE here means "identical or reshape", decided by shape */
    int part, parts;
} vkl_sd_src_name;
int vkl_sd_ldm_source_name(const vkl_sd_config *c, const char *internal, vkl_sd_src_name *out,
                           int max);
int vkl_sd_diffusers_source_name(const vkl_sd_config *c, const char *internal,
                                 vkl_sd_src_name *out, int max);
/* 1 when an unmapped source key is a known unused tensor of the layout. */
int vkl_sd_ldm_key_ignorable(const vkl_sd_config *c, const char *name);
int vkl_sd_diffusers_key_ignorable(const vkl_sd_config *c, const char *name);

#ifdef __cplusplus
}
#endif

#endif
