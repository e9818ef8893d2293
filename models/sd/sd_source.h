/* A Stable Diffusion model on disk, whichever way it is stored:
 *   - one .safetensors file in the original layout (+ optional <name>.yaml
 *     next to it, as A1111/ComfyUI use), config inferred from shapes;
 *   - a diffusers folder (model_index.json; unet/, vae/, text_encoder/,
 *     text_encoder_2/ with config.json and diffusion_pytorch_model[.fp16].safetensors
 *     or model[.fp16].safetensors), config read from the JSON files.
 * Either way it yields the configuration and every weight under its internal
 * (diffusers) name, converted on request to f32 in the internal shape. */
#ifndef VKL_SD_SOURCE_H
#define VKL_SD_SOURCE_H

#include "sd/sd_layout.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_sd_source vkl_sd_source;

typedef struct vkl_sd_source_opts {
    const char *yaml;  /* original config to use instead of the sidecar (single file only) */
    int no_sidecar;    /* ignore <name>.yaml next to a single file */
} vkl_sd_source_opts;

/* opts may be NULL. Errors name the file and what does not match. */
int vkl_sd_source_open(const char *path, const vkl_sd_source_opts *opts, vkl_sd_source **out,
                       vkl_err *e);
void vkl_sd_source_close(vkl_sd_source *s);

const vkl_sd_config *vkl_sd_source_config(const vkl_sd_source *s);
vkl_sd_layout vkl_sd_source_layout(const vkl_sd_source *s);
/* The yaml that refined an inferred config, or NULL. */
const char *vkl_sd_source_yaml(const vkl_sd_source *s);

int vkl_sd_source_count(const vkl_sd_source *s);
const vkl_sd_entry *vkl_sd_source_at(const vkl_sd_source *s, int i);
const vkl_sd_entry *vkl_sd_source_find(const vkl_sd_source *s, const char *internal_name);
/* Where an entry's data comes from: file path and tensor. */
const char *vkl_sd_source_file(const vkl_sd_source *s, const vkl_sd_entry *x);
const vkl_st_tensor *vkl_sd_source_tensor(const vkl_sd_source *s, const vkl_sd_entry *x);
uint64_t vkl_sd_entry_nelem(const vkl_sd_entry *x);

/* Reads one weight as f32 in its internal shape (nelem = vkl_sd_entry_nelem). */
int vkl_sd_source_read_f32(const vkl_sd_source *s, const vkl_sd_entry *x, float *dst,
                           uint64_t nelem, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
