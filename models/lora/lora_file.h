/* LoRA-family adapter files in one in-memory form.
 *
 * Formats read: kohya-ss / LyCORIS (`lora_unet_<path with _>.lora_down.weight`,
 * `.lora_up.weight`, `.lora_mid.weight`, `.alpha`, `.dora_scale`, `hada_*`,
 * `lokr_*`; `lora_te_`, `lora_te1_`, `lora_te2_` for text encoders),
 * diffusers (`<module>.lora.down/up.weight`, `<module>.lora_linear_layer.down/up.weight`,
 * attention-processor `<attn>.processor.to_q_lora.down.weight`) and PEFT
 * (`<module>.lora_A/lora_B.weight`, `.lora_magnitude_vector`, with
 * adapter_config.json next to the file giving r, lora_alpha, rank/alpha
 * patterns and use_rslora).
 *
 * An adapter is a list of modules. Each names the weight it changes by its
 * internal name (the weight name minus ".weight": `unet.down_blocks.0...to_q`,
 * `text_encoder.text_model...q_proj`, `model.layers.0.self_attn.q_proj`), its
 * kind, rank, alpha, the product scale, and its factor tensors as f32 host
 * arrays. Kohya names are resolved against a target list (the weights of a
 * model); without one, kohya modules keep only their kohya name.
 *
 * Scale: delta W = scale * (product of the factors). Kohya and LyCORIS:
 * alpha / rank (alpha = rank when absent). diffusers files and PEFT files
 * without adapter_config.json carry alpha/rank folded into the up matrix:
 * scale 1. PEFT with a config: lora_alpha / r (rsLoRA: lora_alpha / sqrt(r)). */
#ifndef VKL_LORA_FILE_H
#define VKL_LORA_FILE_H

#include "io/safetensors.h"
#include "sd/sd_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vkl_lora_kind {
    VKL_LORA_KIND_LORA = 0, /* LoRA / LoCon (optionally with a Tucker lora_mid) */
    VKL_LORA_KIND_LOHA,
    VKL_LORA_KIND_LOKR,
    VKL_LORA_KIND_DORA,     /* LoRA factors + magnitude (kohya dora_scale or PEFT lora_magnitude_vector) */
    VKL_LORA_KIND_IA3       /* (IA)^3 (PEFT IA3Config): one scaling vector, see VKL_LORA_IA3 */
} vkl_lora_kind;

typedef enum vkl_lora_format {
    VKL_LORA_FMT_KOHYA = 0, /* also LyCORIS */
    VKL_LORA_FMT_DIFFUSERS,
    VKL_LORA_FMT_PEFT
} vkl_lora_format;

/* Factor roles. Shapes (PyTorch order):
 *   DOWN [r,in] or [r,in,kh,kw]; UP [out,r] or [out,r,1,1];
 *   MID  [r,r,kh,kw] (LoCon Tucker: down and up are then 1x1);
 *   HADA_W*A [out,r], HADA_W*B [r,in*kh*kw]; with Tucker HADA_T* [r,r,kh,kw],
 *     HADA_W*A [r,out], HADA_W*B [r,in];
 *   LOKR_W1 [a,c] or LOKR_W1A [a,r] @ LOKR_W1B [r,c];
 *   LOKR_W2 [b,d(,kh,kw)] or LOKR_W2A [b,r] @ LOKR_W2B [r,d*kh*kw]; with
 *     LOKR_T2 [r,r,kh,kw], LOKR_W2A [r,b], LOKR_W2B [r,d];
 *   MAG: DoRA magnitude, [out] (PEFT), [out,1(,1,1)] or [1,in(,1,1)] (LyCORIS);
 *   IA3: PEFT's ia3_l, [out,1] (scales the layer's output: y = l * (W x)) or
 *     [1,in] (a feed-forward module: scales its input, y = W (l * x)); the
 *     module's on_input says which. Not additive: merged it is W * l on rows
 *     (output) or columns (input); readers of delta W refuse it. */
typedef enum vkl_lora_role {
    VKL_LORA_DOWN = 0,
    VKL_LORA_UP,
    VKL_LORA_MID,
    VKL_LORA_HADA_W1A,
    VKL_LORA_HADA_W1B,
    VKL_LORA_HADA_W2A,
    VKL_LORA_HADA_W2B,
    VKL_LORA_HADA_T1,
    VKL_LORA_HADA_T2,
    VKL_LORA_LOKR_W1,
    VKL_LORA_LOKR_W1A,
    VKL_LORA_LOKR_W1B,
    VKL_LORA_LOKR_W2,
    VKL_LORA_LOKR_W2A,
    VKL_LORA_LOKR_W2B,
    VKL_LORA_LOKR_T2,
    VKL_LORA_MAG,
    VKL_LORA_IA3,
    VKL_LORA_ROLES
} vkl_lora_role;

typedef struct vkl_lora_tensor {
    int ndim;
    int64_t shape[4];
    float *data;     /* NULL when the module has no tensor of this role */
    vkl_dtype dtype; /* dtype in the file it came from (writers keep it) */
} vkl_lora_tensor;

typedef struct vkl_lora_module {
    char *name;   /* internal module name; NULL for a kohya module read without targets */
    char *kname;  /* kohya name (lora_unet_..., lora_te_...), always set */
    char *source; /* key prefix in the file it was read from */
    vkl_lora_kind kind;
    int rank;     /* 0 for LoKr with both factors full */
    float alpha;  /* = rank when the file has none */
    int has_alpha;
    vkl_dtype alpha_dtype; /* of the .alpha tensor (writers keep it) */
    double scale; /* delta W = scale * product (see the header comment) */
    vkl_lora_tensor t[VKL_LORA_ROLES];
    /* The weight this module changes: the target's shape when resolved, else
     * what the factors imply (LoHa/LoKr conv factors stored flat stay 2-D). */
    int wndim;
    int64_t wshape[4];
    /* Convolution geometry of the target (kernel from wshape): the down
     * convolution of a LoCon runs with the target's stride and padding. */
    int stride, padding;
    /* IA3 only: 1 when the vector scales the input (PEFT feedforward_modules),
     * 0 when it scales the output. wshape holds the weight's shape when
     * resolved against a target; without one only the scaled axis is known
     * (the other is 0). rank 0, scale 1. */
    int on_input;
} vkl_lora_module;

typedef struct vkl_lora {
    vkl_lora_format format;
    vkl_lora_module *m;
    int n, cap;
    char **meta_key, **meta_val; /* __metadata__ of the file, kept in order */
    int n_meta;
    int rslora;          /* PEFT use_rslora */
    int has_config;      /* PEFT adapter_config.json was read */
    int n_unmatched;     /* keys left unresolved (only with allow_unmatched) */
} vkl_lora;

/* What a module name may resolve to: weight names of a model minus ".weight",
 * with their shapes, and a kohya-name index built from them. */
typedef struct vkl_lora_target {
    char *name;  /* internal name */
    char *kname; /* kohya name */
    char *ldm;   /* kohya name in the original LDM UNet numbering, or NULL */
    int ndim;
    int64_t shape[4];
} vkl_lora_target;

typedef struct vkl_lora_name_ix {
    const char *s; /* points into the target */
    int i;
} vkl_lora_name_ix;

typedef struct vkl_lora_targets {
    vkl_lora_target *v;
    int n, cap;
    vkl_lora_name_ix *by_name, *by_kname, *by_ldm; /* sorted by s */
    int n_ldm;
    int has_te2;             /* text_encoder_2 present (SDXL) */
    int context_dim;         /* UNet cross-attention width, 0 when not SD */
    char model_kind[16];     /* "SD1", "SD2", "SDXL", "LLM", ... for messages */
} vkl_lora_targets;

/* Every weight of an SD configuration (UNet, VAE, text encoders). */
int vkl_lora_targets_from_sd(const vkl_sd_config *c, vkl_lora_targets *t, vkl_err *e);
/* Every ".weight" tensor of a safetensors file (e.g. an HF LLaMA checkpoint). */
int vkl_lora_targets_from_st(const vkl_st_file *f, vkl_lora_targets *t, vkl_err *e);
void vkl_lora_targets_free(vkl_lora_targets *t);
/* Targets of a model path: an SD model (single file or diffusers folder, see
 * sd_source.h) or any other safetensors checkpoint (its ".weight" tensors). */
int vkl_lora_targets_open(const char *model_path, vkl_lora_targets *t, vkl_err *e);
/* The same with the original yaml of a single-file SD checkpoint (NULL: <name>.yaml beside it). */
int vkl_lora_targets_open_yaml(const char *model_path, const char *yaml, vkl_lora_targets *t, vkl_err *e);
/* Target index for an internal name / a kohya name (either numbering), or -1. */
int vkl_lora_targets_find(const vkl_lora_targets *t, const char *name);
int vkl_lora_targets_find_kohya(const vkl_lora_targets *t, const char *kname);

/* Kohya name of an internal name: root prefix mapped (unet -> lora_unet,
 * text_encoder -> lora_te (lora_te1 when xl), text_encoder_2 -> lora_te2,
 * else lora_<root>), every '.' turned into '_'. Returns -1 when it does not fit. */
int vkl_lora_kohya_name(const char *internal, int xl, char *out, size_t size);

/* The internal name of a kohya name in diffusers' numbering, without a model:
 * root prefix mapped back and '_' turned into '.' except inside the known
 * parts of SD UNet and CLIP module paths (transformer_blocks, to_q, q_proj,
 * ...). -1 when a part is unknown: names in the original LDM numbering
 * (input_blocks_4_1_...) or of other models need the model's weight names. */
int vkl_lora_kohya_guess_internal(const char *kname, char *out, size_t size);

typedef struct vkl_lora_opts {
    const vkl_lora_targets *targets; /* NULL: no resolution, no shape checks */
    int allow_unmatched;             /* keep going (warning) instead of failing */
    const char *config_path;         /* PEFT config to use instead of the sidecar */
    int max_listed;                  /* examples quoted per error (0: 8) */
} vkl_lora_opts;

/* Reads an adapter file. Fails, naming the file and tensor, on unknown or
 * incomplete keys, keys matching no target (count, examples and a guess of what
 * the adapter was made for), shapes that disagree with each other or with the
 * target weight. opts may be NULL. A PEFT AdaLoRA adapter (its config's
 * peft_type "ADALORA") is read as LoRA modules (lora_adalora.h). */
int vkl_lora_load(const char *path, const vkl_lora_opts *opts, vkl_lora *out, vkl_err *e);
void vkl_lora_free(vkl_lora *l);

const char *vkl_lora_kind_name(vkl_lora_kind k);     /* "lora", "loha", "lokr", "dora", "ia3" */
const char *vkl_lora_format_name(vkl_lora_format f); /* "kohya", "diffusers", "peft" */
const char *vkl_lora_role_name(vkl_lora_role r);     /* kohya/LyCORIS suffix, e.g. "lora_down.weight" */
/* Module label for messages: internal name, else kohya name. */
const char *vkl_lora_module_label(const vkl_lora_module *m);
/* Module by internal name or kohya name, or NULL. */
const vkl_lora_module *vkl_lora_find(const vkl_lora *l, const char *name);
uint64_t vkl_lora_wnelem(const vkl_lora_module *m);
uint64_t vkl_lora_tensor_nelem(const vkl_lora_tensor *t);
const char *vkl_lora_meta_get(const vkl_lora *l, const char *key);

/* ---- building (combine, convert) ---- */
vkl_lora_module *vkl_lora_add_module(vkl_lora *l, vkl_err *e); /* zeroed, appended */
/* Allocates a tensor of a role (zero-filled). */
float *vkl_lora_tensor_alloc(vkl_lora_tensor *t, int ndim, const int64_t *shape, vkl_err *e);
/* Adds t's values to w under key with the given shape, in t's dtype when it
 * is f16 or bf16, else f32 (the kohya and PEFT writers). */
int vkl_lora_tensor_write(vkl_st_writer *w, const char *key, const vkl_lora_tensor *t, int ndim, const int64_t *shape,
                          vkl_err *e);
int vkl_lora_meta_set(vkl_lora *l, const char *key, const char *value, vkl_err *e);
/* Checks role combination and shapes, sets kind, rank, wshape (from target when
 * given), scale from alpha; shared by the readers. */
int vkl_lora_module_finish(vkl_lora_module *m, const vkl_lora_target *target, vkl_err *e);

/* ---- writing ---- */
/* kohya / LyCORIS keys (lora_down/up/mid, .alpha, hada_*, lokr_*, dora_scale),
 * metadata carried over. Every module needs a kohya name. */
int vkl_lora_save_kohya(const vkl_lora *l, const char *path, vkl_err *e);
/* PEFT keys `<internal>.lora_A.weight` / `.lora_B.weight` (+ `.lora_magnitude_vector`)
 * and adapter_config.json written to config_path with r and lora_alpha (the
 * most common pair), rank_pattern / alpha_pattern for the others, use_dora,
 * use_rslora. Only LoRA and DoRA (output-axis magnitude) modules; every module
 * needs an internal name. An adapter made only of IA3 modules is written as
 * PEFT saves IA3: `<internal>.ia3_l` ([out,1] or [1,in]) and a config with
 * peft_type "IA3", target_modules and feedforward_modules (the modules with
 * on_input); IA3 mixed with other kinds is refused. */
int vkl_lora_save_peft(const vkl_lora *l, const char *path, const char *config_path, vkl_err *e);

/* ---- internal to the readers (lora_kohya.c, lora_peft.c, lora_lycoris.c) ---- */
/* If key ends with a suffix of the format, returns the prefix length and role
 * (-1 role for ".alpha"), else 0. */
size_t vkl_lora_kohya_part(const char *key, int *role);
size_t vkl_lora_lycoris_part(const char *key, int *role);
size_t vkl_lora_peft_part(const char *key, int *role, vkl_lora_format *fmt);
/* Internal module name of a diffusers/PEFT key prefix (root prefixes and
 * attention-processor spellings undone). Writes into out; -1 when too long. */
int vkl_lora_peft_module_name(const char *prefix, char *out, size_t size);
/* Shape checks and implied weight shape of LoHa / LoKr modules. */
int vkl_lora_lycoris_finish(vkl_lora_module *m, vkl_err *e);
/* Reads adapter_config.json: r, lora_alpha, use_rslora, rank_pattern, alpha_pattern;
 * sets each module's rank/alpha/scale. With peft_type "IA3": checks every
 * module is IA3 and that feedforward_modules (a list matched as suffixes of
 * the module path, or a regex matched against the whole path, as PEFT does)
 * names exactly the modules whose vector scales the input. */
int vkl_lora_peft_apply_config(vkl_lora *l, const char *config_path, vkl_err *e);
/* IA3 parts of the PEFT reader and writer (lora_ia3.c): the checks of a parsed
 * IA3 config (a cJSON object), a module's fitness for the writer, and the
 * adapter_config.json text of an all-IA3 adapter (malloc'd). */
struct cJSON;
int vkl_lora_ia3_apply_config(vkl_lora *l, const struct cJSON *config, const char *path, vkl_err *e);
int vkl_lora_ia3_check(const vkl_lora_module *m, vkl_err *e);
char *vkl_lora_ia3_config_json(const vkl_lora *l, vkl_err *e);
/* One line guessing what unmatched names were made for (SDXL, SD2, LLM, ...). */
void vkl_lora_guess_unmatched(const vkl_lora_targets *t, const char *const *keys, int n,
                              const int64_t *in_dims, char *out, size_t size);

#ifdef __cplusplus
}
#endif

#endif
