/* Stable Diffusion model configuration: everything the networks need to know
 * about sizes and conventions, for SD 1.x, 2.x and XL at any size.
 * Filled from diffusers config.json files when a model folder has them
 * (sd_config_json.c), otherwise inferred from tensor names and shapes of an
 * original single-file checkpoint (sd_config_infer.c), optionally refined by an
 * original-repository yaml next to the file (sd_config_yaml.c). */
#ifndef VKL_SD_CONFIG_H
#define VKL_SD_CONFIG_H

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_SD_MAX_LEVELS 8
#define VKL_SD_MAX_TEXT_ENCODERS 2

typedef enum vkl_sd_family {
    VKL_SD_FAMILY_UNKNOWN = 0,
    VKL_SD_FAMILY_SD1, /* CLIP ViT-L text encoder, 768 context, 8 heads per level */
    VKL_SD_FAMILY_SD2, /* OpenCLIP ViT-H text encoder, 1024 context, head width 64 */
    VKL_SD_FAMILY_SDXL /* CLIP-L + OpenCLIP bigG, 2048 context, size/crop conditioning */
} vkl_sd_family;

typedef enum vkl_sd_prediction { VKL_SD_PRED_EPSILON = 0, VKL_SD_PRED_V } vkl_sd_prediction;
typedef enum vkl_sd_beta_schedule {
    VKL_SD_BETA_SCALED_LINEAR = 0,
    VKL_SD_BETA_LINEAR,
    VKL_SD_BETA_SQUAREDCOS_CAP_V2
} vkl_sd_beta_schedule;
typedef enum vkl_sd_act { VKL_SD_ACT_QUICK_GELU = 0, VKL_SD_ACT_GELU } vkl_sd_act;

typedef struct vkl_sd_unet_config {
    int in_channels, out_channels;
    int n_levels;
    int block_out_channels[VKL_SD_MAX_LEVELS];
    int layers_per_block;
    /* 1 where the level has spatial transformers (CrossAttnDownBlock2D /
     * CrossAttnUpBlock2D); up blocks are listed in up order (deepest first). */
    int down_attn[VKL_SD_MAX_LEVELS];
    int up_attn[VKL_SD_MAX_LEVELS];
    int mid_attn;                             /* UNetMidBlock2DCrossAttn */
    int heads[VKL_SD_MAX_LEVELS];             /* per down level; up level i uses heads[n-1-i] */
    int mid_heads;
    int transformer_layers[VKL_SD_MAX_LEVELS]; /* per down level, 0 where no attention */
    int mid_transformer_layers;
    int cross_attention_dim;
    int use_linear_projection; /* proj_in/proj_out are Linear, not 1x1 conv */
    int upcast_attention;
    int norm_num_groups;
    float norm_eps;             /* resnet GroupNorms and conv_norm_out */
    float transformer_norm_eps; /* GroupNorm in front of each spatial transformer */
    float layer_norm_eps;       /* transformer block LayerNorms */
    int time_proj_dim;          /* sinusoidal embedding width */
    int time_embed_dim;         /* width after time_embedding MLP */
    int flip_sin_to_cos;
    int freq_shift;
    /* SDXL micro-conditioning ("text_time"): add_embedding takes the pooled text
     * embedding concatenated with 6 sinusoidal embeddings of this width. */
    int add_text_time;
    int addition_time_embed_dim;
    int projection_class_embeddings_input_dim;
    int sample_size; /* latent size the model was trained at */
} vkl_sd_unet_config;

typedef struct vkl_sd_vae_config {
    int in_channels, out_channels;
    int n_levels;
    int block_out_channels[VKL_SD_MAX_LEVELS];
    int layers_per_block;
    int latent_channels;
    int norm_num_groups;
    float norm_eps;
    float scaling_factor;
    int sample_size;
} vkl_sd_vae_config;

typedef struct vkl_sd_text_config {
    int hidden;
    int layers;
    int heads;
    int intermediate;
    vkl_sd_act act;
    int max_positions;
    int vocab;
    int bos_id, eos_id, pad_id; /* as config.json says (legacy CLIP configs: 0, 2, 1) */
    float layer_norm_eps;
    int projection_dim; /* >0: CLIPTextModelWithProjection (text_projection weight) */
} vkl_sd_text_config;

typedef struct vkl_sd_sched_config {
    vkl_sd_beta_schedule beta_schedule;
    float beta_start, beta_end;
    int train_steps;
    vkl_sd_prediction prediction;
    int steps_offset;
    int set_alpha_to_one;
    int clip_sample;
    /* scheduler_config.json's timestep_spacing as a vkl_timestep_spacing value
     * (0: not stated, the scheduler class's default; 1 leading, 2 linspace,
     * 3 trailing); SDXL's config says "leading" */
    int timestep_spacing;
} vkl_sd_sched_config;

typedef struct vkl_sd_config {
    vkl_sd_family family;
    vkl_sd_unet_config unet;
    vkl_sd_vae_config vae;
    int n_text_encoders; /* 1, or 2 for SDXL (text_encoder, text_encoder_2) */
    vkl_sd_text_config te[VKL_SD_MAX_TEXT_ENCODERS];
    vkl_sd_sched_config sched;
} vkl_sd_config;

const char *vkl_sd_family_name(vkl_sd_family f);
/* Full-size configuration of a public model: "sd1.5", "sd2.1" or "sdxl". */
int vkl_sd_config_preset(const char *name, vkl_sd_config *c, vkl_err *e); /* "SD1", "SD2", "SDXL", "unknown" */

/* Conventions of a family that tensor shapes cannot tell (epsilons, time
 * embedding, scheduler, VAE scaling factor, sample sizes, norm groups = 32 as
 * the original code hard-codes). Sizes are left 0 for the caller to fill. */
void vkl_sd_config_family_defaults(vkl_sd_config *c, vkl_sd_family f);

/* Attention heads of a level from its width under the family's rule: SD 1.x
 * uses 8 heads everywhere, SD 2.x and XL use heads of width 64. -1 when the
 * width does not fit the rule. */
int vkl_sd_family_heads(vkl_sd_family f, int channels);

/* Checks internal consistency (positive sizes, divisibility of channels by
 * groups and heads, level counts in range). Error names the field. */
int vkl_sd_config_validate(const vkl_sd_config *c, vkl_err *e);

/* The VAE's part of vkl_sd_config_validate (a lone VAE folder has no UNet). */
int vkl_sd_vae_config_validate(const vkl_sd_vae_config *v, vkl_err *e);

/* Writes "field: a vs b" for every differing field, separated by "; ", into
 * buf (always NUL-terminated). Returns the number of differing fields. */
int vkl_sd_config_diff(const vkl_sd_config *a, const vkl_sd_config *b, char *buf, size_t size);

/* ---- diffusers config.json (sd_config_json.c) ----
 * Each reader applies the fields present in the JSON text on top of what c
 * already holds (start from vkl_sd_config_family_defaults) and rejects
 * architectures vklora does not implement, naming the option. label names the
 * file in messages. */
int vkl_sd_unet_config_from_json(const char *text, const char *label, vkl_sd_unet_config *u,
                                 vkl_err *e);
int vkl_sd_vae_config_from_json(const char *text, const char *label, vkl_sd_vae_config *v,
                                vkl_err *e);
/* with_projection: the model is a CLIPTextModelWithProjection (SDXL text_encoder_2). */
int vkl_sd_text_config_from_json(const char *text, const char *label, int with_projection,
                                 vkl_sd_text_config *t, vkl_err *e);
int vkl_sd_sched_config_from_json(const char *text, const char *label, vkl_sd_sched_config *s,
                                  vkl_err *e);
/* Family of a diffusers folder from its unet and first text-encoder configs
 * (either may be NULL): text_time addition embedding -> XL, OpenCLIP (gelu)
 * text encoder or 1024 context -> 2.x, quick_gelu CLIP or 768 context -> 1.x. */
int vkl_sd_family_from_json(const char *unet_json, const char *te_json, int has_text_encoder_2,
                            vkl_sd_family *f, vkl_err *e);
/* Reads model_index.json and the unet/vae/text_encoder(_2)/scheduler configs
 * of a diffusers folder into c (validated). */
int vkl_sd_config_read_diffusers(const char *dir, vkl_sd_config *c, vkl_err *e);


/* ---- original-repository yaml (sd_config_yaml.c) ----
 * Applies what an LDM/SGM yaml states and shapes cannot (heads or head width,
 * norm groups, parameterization, scale factor, betas, sample sizes) on top of
 * c. Reads the block-style subset of YAML those files use. */
int vkl_sd_config_apply_ldm_yaml(const char *text, const char *label, vkl_sd_config *c,
                                 vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
