/* Targets from a model path: an SD model when the SD reader accepts it, else
 * the ".weight" tensors of any safetensors checkpoint (language models). */
#include "lora/lora_file.h"
#include "sd/sd_source.h"

#include <string.h>
#include <sys/stat.h>

int vkl_lora_targets_open(const char *model_path, vkl_lora_targets *t, vkl_err *e)
{
    return vkl_lora_targets_open_yaml(model_path, NULL, t, e);
}

int vkl_lora_targets_open_yaml(const char *model_path, const char *yaml, vkl_lora_targets *t, vkl_err *e)
{
    vkl_sd_source *s;
    vkl_err sd_err;
    vkl_sd_source_opts so = {yaml, 0};
    if (vkl_sd_source_open(model_path, &so, &s, &sd_err) == 0) {
        int rc = vkl_lora_targets_from_sd(vkl_sd_source_config(s), t, e);
        vkl_sd_source_close(s);
        return rc;
    }
    struct stat st;
    vkl_st_file *f;
    if (stat(model_path, &st) != 0 || !S_ISREG(st.st_mode) || vkl_st_open(model_path, &f, e) != 0) {
        *e = sd_err;
        return -1;
    }
    int rc = 0;
    if (!vkl_st_find(f, "model.embed_tokens.weight")) {
        /* neither SD nor a language model: the SD reader's message says more */
        *e = sd_err;
        rc = -1;
    } else {
        rc = vkl_lora_targets_from_st(f, t, e);
    }
    vkl_st_close(f);
    return rc;
}
