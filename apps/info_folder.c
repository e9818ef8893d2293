/* `vklora info FOLDER`: a diffusers model folder (model_index.json), a PEFT
 * adapter folder (adapter_model.safetensors) or a Hugging Face language
 * model folder (config.json + model.safetensors). */
#include "info.h"

#include "llama/llama.h"
#include "sd/sd_source.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int has(const char *dir, const char *name, char *path, size_t n)
{
    snprintf(path, n, "%s/%s", dir, name);
    struct stat st;
    return !stat(path, &st) && S_ISREG(st.st_mode);
}

static const char *prediction_name(vkl_sd_prediction p) { return p == VKL_SD_PRED_V ? "v_prediction" : "epsilon"; }

static int report_diffusers(const char *dir, int json)
{
    vkl_sd_source *s;
    vkl_err e;
    if (vkl_sd_source_open(dir, NULL, &s, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    const vkl_sd_config *c = vkl_sd_source_config(s);
    int f = 1 << (c->vae.n_levels - 1), native = c->unet.sample_size * f;
    char chans[128] = "";
    for (int i = 0, k = 0; i < c->unet.n_levels; i++)
        k += snprintf(chans + k, sizeof chans - (size_t)k, "%s%d", i ? "," : "", c->unet.block_out_channels[i]);
    uint64_t params = 0;
    for (int i = 0; i < vkl_sd_source_count(s); i++) params += vkl_sd_entry_nelem(vkl_sd_source_at(s, i));
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "path", dir);
        cJSON_AddStringToObject(j, "kind", "diffusers-model");
        cJSON_AddStringToObject(j, "family", vkl_sd_family_name(c->family));
        cJSON_AddNumberToObject(j, "parameters", (double)params);
        cJSON_AddNumberToObject(j, "native_size", native);
        cJSON_AddNumberToObject(j, "vae_factor", f);
        cJSON_AddNumberToObject(j, "latent_channels", c->vae.latent_channels);
        cJSON_AddNumberToObject(j, "vae_scaling_factor", c->vae.scaling_factor);
        cJSON_AddStringToObject(j, "unet_channels", chans);
        cJSON_AddNumberToObject(j, "cross_attention_dim", c->unet.cross_attention_dim);
        cJSON_AddNumberToObject(j, "text_encoders", c->n_text_encoders);
        cJSON_AddNumberToObject(j, "text_layers", c->te[0].layers);
        cJSON_AddNumberToObject(j, "text_width", c->te[0].hidden);
        cJSON_AddNumberToObject(j, "vocabulary", c->te[0].vocab);
        cJSON_AddStringToObject(j, "prediction", prediction_name(c->sched.prediction));
        char *t = cJSON_Print(j);
        puts(t ? t : "null");
        cJSON_free(t);
        cJSON_Delete(j);
    } else {
        printf("%s: diffusers model folder, %s family, %.1fM parameters\n", dir, vkl_sd_family_name(c->family),
               params / 1e6);
        printf("  native size %dx%d (UNet sample size %d x VAE factor %d), %d latent channels, VAE scaling factor %g\n",
               native, native, c->unet.sample_size, f, c->vae.latent_channels, c->vae.scaling_factor);
        printf("  UNet channels %s, cross-attention width %d; text encoder: %d layers of width %d, vocabulary %d\n",
               chans, c->unet.cross_attention_dim, c->te[0].layers, c->te[0].hidden, c->te[0].vocab);
        printf("  scheduler: %d training steps, %s prediction\n", c->sched.train_steps, prediction_name(c->sched.prediction));
    }
    vkl_sd_source_close(s);
    return 0;
}

static int report_lm(const char *dir, const char *config, int json)
{
    vkl_llama_config c;
    vkl_err e;
    if (vkl_llama_config_read(config, &c, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "path", dir);
        cJSON_AddStringToObject(j, "kind", "language-model");
        cJSON_AddNumberToObject(j, "hidden", c.hidden);
        cJSON_AddNumberToObject(j, "layers", c.layers);
        cJSON_AddNumberToObject(j, "heads", c.heads);
        cJSON_AddNumberToObject(j, "kv_heads", c.kv_heads);
        cJSON_AddNumberToObject(j, "intermediate", c.intermediate);
        cJSON_AddNumberToObject(j, "vocabulary", c.vocab);
        cJSON_AddNumberToObject(j, "max_positions", c.max_pos);
        char *t = cJSON_Print(j);
        puts(t ? t : "null");
        cJSON_free(t);
        cJSON_Delete(j);
    } else {
        printf("%s: Hugging Face LLaMA-family model folder: %d layers, width %d, %d heads (%d key/value), MLP %d, "
               "vocabulary %d, %d positions\n", dir, c.layers, c.hidden, c.heads, c.kv_heads, c.intermediate, c.vocab,
               c.max_pos);
    }
    return 0;
}

int vkl_info_folder(const char *dir, int json)
{
    char path[4200];
    if (has(dir, "model_index.json", path, sizeof path)) return report_diffusers(dir, json);
    if (has(dir, "adapter_model.safetensors", path, sizeof path)) return vkl_info_safetensors(path, json);
    if (has(dir, "config.json", path, sizeof path)) {
        char st[4200];
        if (has(dir, "model.safetensors", st, sizeof st) || has(dir, "model.safetensors.index.json", st, sizeof st))
            return report_lm(dir, path, json);
    }
    vkl_log(VKL_LOG_ERROR, "%s: a folder vklora info does not know (it reads diffusers model folders with "
            "model_index.json, PEFT adapter folders with adapter_model.safetensors, and language model folders with "
            "config.json + model.safetensors)", dir);
    return 1;
}
