/* Generation parameters in AUTOMATIC1111's "parameters" text, the PNG text
 * chunk that A1111, Forge, civitai and most image viewers read:
 *
 *   <prompt, may span lines>
 *   Negative prompt: <negative prompt>          (line left out when empty)
 *   Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, ...
 *
 * Values holding ',', ':' or a newline are written as JSON strings, as A1111's
 * infotext quote() does; the parser follows parse_generation_parameters: the
 * last line is the key/value line when it holds at least three "Key: value"
 * pairs, otherwise it belongs to the prompt. */
#ifndef VKL_SD_GEN_PARAMS_H
#define VKL_SD_GEN_PARAMS_H

#include "vkl_base.h"

typedef struct vkl_gen_params {
    char *prompt;          /* never NULL after init/parse */
    char *negative_prompt; /* never NULL; "" when absent */
    int count;             /* key/value pairs, in the order they are written */
    char **keys;
    char **values;
} vkl_gen_params;

void vkl_gen_params_init(vkl_gen_params *p);
void vkl_gen_params_free(vkl_gen_params *p);
int vkl_gen_params_set_prompts(vkl_gen_params *p, const char *prompt, const char *negative,
                               vkl_err *e);
/* Replaces the value of key if present, else appends. A key must look like
 * A1111's (a word character, then word characters, spaces, '-' or '/'). */
int vkl_gen_params_set(vkl_gen_params *p, const char *key, const char *value, vkl_err *e);
const char *vkl_gen_params_get(const vkl_gen_params *p, const char *key);
/* "Size: 512x768" -> 512, 768; -1 when absent or malformed. */
int vkl_gen_params_size(const vkl_gen_params *p, int *width, int *height);

/* The text, malloc'd in *out. */
int vkl_gen_params_format(const vkl_gen_params *p, char **out, vkl_err *e);
int vkl_gen_params_parse(const char *text, vkl_gen_params *out, vkl_err *e);

typedef struct vkl_gen_lora_hash {
    const char *name; /* the alias A1111 shows; ':' and ',' are dropped from it */
    const char *hash; /* short hash, e.g. the first 12 hex digits of the file's sha256 */
} vkl_gen_lora_hash;

/* What vklora knows of one generated image. NULL strings and the noted
 * sentinel values leave a field out, as A1111 leaves out None. */
typedef struct vkl_gen_settings {
    const char *prompt, *negative_prompt;
    int steps;
    const char *sampler;       /* "Euler a", "DPM++ 2M", ... */
    const char *schedule_type; /* "Karras", "Automatic", ... or NULL */
    double cfg_scale;
    uint64_t seed;
    int width, height;
    const char *model_hash, *model, *vae_hash, *vae;
    double denoising_strength; /* < 0: left out (txt2img) */
    int clip_skip;             /* <= 1: left out */
    const vkl_gen_lora_hash *loras;
    int nloras;
    const char *version;
} vkl_gen_settings;

/* Fills p with the fields in the order A1111's create_infotext writes them. */
int vkl_gen_params_from_settings(const vkl_gen_settings *s, vkl_gen_params *p, vkl_err *e);

#endif
