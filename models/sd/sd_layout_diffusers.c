/* diffusers folder layout: each model's file holds the internal names without
 * the model prefix (the source keys are listed with that prefix added back). */
#include "sd/sd_layout.h"

#include <stdio.h>
#include <string.h>

int vkl_sd_diffusers_source_name(const vkl_sd_config *c, const char *internal,
                                 vkl_sd_src_name *out, int max)
{
    (void)c;
    if (max < 2) return -1;
    int n = snprintf(out[0].name, sizeof out[0].name, "%s", internal);
    if (n < 0 || (size_t)n >= sizeof out[0].name) return -1;
    out[0].xform = VKL_SD_X_NONE;
    out[0].part = out[0].parts = 0;
    /* VAE files written before diffusers 0.14 name the mid-block attention
     * query/key/value/proj_attn, as some published models still do. */
    static const char *legacy[][2] = {
        {".mid_block.attentions.0.to_q.", "query."}, {".mid_block.attentions.0.to_k.", "key."},
        {".mid_block.attentions.0.to_v.", "value."},
        {".mid_block.attentions.0.to_out.0.", "proj_attn."}};
    if (strncmp(internal, "vae.", 4)) return 1;
    for (size_t i = 0; i < sizeof legacy / sizeof legacy[0]; i++) {
        const char *p = strstr(internal, legacy[i][0]);
        if (!p) continue;
        const char *tail = p + strlen(legacy[i][0]);
        size_t keep = (size_t)(p - internal) + strlen(".mid_block.attentions.0.");
        n = snprintf(out[1].name, sizeof out[1].name, "%.*s%s%s", (int)keep, internal,
                     legacy[i][1], tail);
        if (n < 0 || (size_t)n >= sizeof out[1].name) return 1;
        out[1].xform = VKL_SD_X_NONE;
        out[1].part = out[1].parts = 0;
        return 2;
    }
    return 1;
}

int vkl_sd_diffusers_key_ignorable(const vkl_sd_config *c, const char *name)
{
    (void)c;
    size_t n = strlen(name);
    return n >= 13 && !strcmp(name + n - 13, ".position_ids");
}
