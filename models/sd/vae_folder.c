#include "sd/vae_folder.h"
#include "io/text.h"

#include "io/dir.h"
#include "io/safetensors.h"
#include "sd/sd_layout.h"
#include "shape.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void vkl_vae_config_default(vkl_sd_vae_config *v)
{
    memset(v, 0, sizeof *v);
    v->in_channels = 3;
    v->out_channels = 3;
    v->n_levels = 1;
    v->block_out_channels[0] = 64;
    v->layers_per_block = 1;
    v->latent_channels = 4;
    v->norm_num_groups = 32;
    v->norm_eps = 1e-6f; /* diffusers' Encoder/Decoder fix it; config.json cannot change it */
    v->scaling_factor = 0.18215f;
    v->sample_size = 32;
}

int vkl_vae_config_read(const char *path, vkl_sd_vae_config *v, vkl_err *e)
{
    char *text = NULL;
    vkl_vae_config_default(v);
    if (vkl_read_text_file(path, 1 << 20, &text, NULL, e)) return -1;
    cJSON *j = cJSON_Parse(text);
    const cJSON *cls = j ? cJSON_GetObjectItemCaseSensitive(j, "_class_name") : NULL;
    int rc = 0;
    if (cJSON_IsString(cls) && strcmp(cls->valuestring, "AutoencoderKL"))
        rc = vkl_fail(e, "%s: _class_name is \"%.60s\", not AutoencoderKL", path, cls->valuestring);
    cJSON_Delete(j);
    if (!rc) rc = vkl_sd_vae_config_from_json(text, path, v, e);
    free(text);
    if (!rc && vkl_sd_vae_config_validate(v, e)) {
        vkl_err_prefix(e, "%s: ", path);
        rc = -1;
    }
    return rc;
}

char *vkl_vae_config_json(const vkl_sd_vae_config *v)
{
    cJSON *j = cJSON_CreateObject();
    if (!j) return NULL;
    cJSON *down = cJSON_CreateArray(), *up = cJSON_CreateArray();
    cJSON_AddStringToObject(j, "_class_name", "AutoencoderKL");
    cJSON_AddStringToObject(j, "_diffusers_version", "0.25.0");
    cJSON_AddStringToObject(j, "act_fn", "silu");
    cJSON_AddItemToObject(j, "block_out_channels", cJSON_CreateIntArray(v->block_out_channels, v->n_levels));
    for (int i = 0; i < v->n_levels; i++) {
        cJSON_AddItemToArray(down, cJSON_CreateString("DownEncoderBlock2D"));
        cJSON_AddItemToArray(up, cJSON_CreateString("UpDecoderBlock2D"));
    }
    cJSON_AddItemToObject(j, "down_block_types", down);
    /* the decoder runs in f32 in vklora; diffusers upcasts fp16 models likewise */
    cJSON_AddBoolToObject(j, "force_upcast", 1);
    cJSON_AddNumberToObject(j, "in_channels", v->in_channels);
    cJSON_AddNumberToObject(j, "latent_channels", v->latent_channels);
    cJSON_AddNullToObject(j, "latents_mean");
    cJSON_AddNullToObject(j, "latents_std");
    cJSON_AddNumberToObject(j, "layers_per_block", v->layers_per_block);
    cJSON_AddNumberToObject(j, "norm_num_groups", v->norm_num_groups);
    cJSON_AddNumberToObject(j, "out_channels", v->out_channels);
    cJSON_AddNumberToObject(j, "sample_size", v->sample_size);
    /* a float's shortest decimal form, not the double's 17 digits */
    char sf[32];
    snprintf(sf, sizeof sf, "%.9g", v->scaling_factor);
    cJSON_AddItemToObject(j, "scaling_factor", cJSON_CreateNumber(strtod(sf, NULL)));
    cJSON_AddNullToObject(j, "shift_factor");
    cJSON_AddItemToObject(j, "up_block_types", up);
    cJSON_AddBoolToObject(j, "use_post_quant_conv", 1);
    cJSON_AddBoolToObject(j, "use_quant_conv", 1);
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    if (!s) return NULL;
    size_t n = strlen(s);
    char *out = realloc(s, n + 2);
    if (!out) {
        free(s);
        return NULL;
    }
    out[n] = '\n';
    out[n + 1] = 0;
    return out;
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static uint64_t count_of(int ndim, const int64_t *shape)
{
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (uint64_t)shape[d];
    return n;
}

int vkl_vae_folder_load(vkl_ctx *c, const char *dir, vkl_dtype dtype, vkl_sd_vae_config *v, vkl_weights *w,
                        vkl_err *e)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!is_file(path)) return vkl_fail(e, "%s: no config.json (a diffusers VAE folder has config.json and "
                                           "diffusion_pytorch_model.safetensors)", dir);
    if (vkl_vae_config_read(path, v, e)) return -1;
    static const char *names[] = {"diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"};
    int found = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !found; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        found = is_file(path);
    }
    if (!found)
        return vkl_fail(e, "%s: no weights (looked for diffusion_pytorch_model[.fp16].safetensors)", dir);
    vkl_st_file *f = NULL;
    if (vkl_st_open(path, &f, e)) return -1;
    vkl_sd_params ps;
    if (vkl_sd_vae_params_build(v, &ps, e)) {
        vkl_st_close(f);
        return -1;
    }
    int rc = 0, used = 0;
    float *buf = NULL;
    for (int i = 0; i < ps.n && !rc; i++) {
        const vkl_sd_param *p = &ps.v[i];
        vkl_sd_src_name cand[2];
        int nc = vkl_sd_diffusers_source_name(NULL, p->name, cand, 2);
        const vkl_st_tensor *t = NULL;
        for (int k = 0; k < nc && !t; k++) t = vkl_st_find(f, cand[k].name + 4); /* without "vae." */
        if (!t) {
            rc = vkl_fail(e, "%s: missing tensor %s (config.json asks for it)", path, p->name + 4);
            break;
        }
        if (!vkl_shape_same_squeezed(t->ndim, t->shape, p->ndim, p->shape)) {
            char have[96], want[96];
            vkl_shape_str(t->ndim, t->shape, have, sizeof have);
            vkl_shape_str(p->ndim, p->shape, want, sizeof want);
            rc = vkl_fail(e, "%s: tensor %s is %s, config.json makes it %s", path, t->name, have, want);
            break;
        }
        used++;
        uint64_t n = count_of(p->ndim, p->shape);
        free(buf);
        buf = malloc(sizeof(float) * (n ? n : 1));
        if (!buf) {
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        if (vkl_st_read(f, t, VKL_F32, buf, e)) {
            rc = -1;
            break;
        }
        vkl_tensor *x = vkl_tensor_new(c, p->ndim >= 2 ? dtype : VKL_F32, p->ndim, p->shape, e);
        if (!x || vkl_tensor_upload(c, x, buf, VKL_F32, e) || vkl_weights_put(w, p->name, x, e)) {
            if (x && !vkl_weights_find(w, p->name)) vkl_tensor_free(x);
            rc = -1;
        }
    }
    if (!rc && used != vkl_st_count(f)) {
        /* name the first tensor the configuration has no place for */
        for (int i = 0; i < vkl_st_count(f); i++) {
            const vkl_st_tensor *t = vkl_st_at(f, i);
            char internal[300];
            snprintf(internal, sizeof internal, "vae.%s", t->name);
            int known = 0;
            for (int k = 0; k < ps.n && !known; k++) {
                vkl_sd_src_name cand[2];
                int nc = vkl_sd_diffusers_source_name(NULL, ps.v[k].name, cand, 2);
                for (int m = 0; m < nc; m++) known |= !strcmp(cand[m].name, internal);
            }
            if (!known) {
                rc = vkl_fail(e, "%s: unexpected tensor %s (%d tensors, config.json describes %d)", path, t->name,
                              vkl_st_count(f), ps.n);
                break;
            }
        }
    }
    free(buf);
    vkl_sd_params_free(&ps);
    vkl_st_close(f);
    return rc;
}


int vkl_vae_folder_save(vkl_ctx *c, const char *dir, const vkl_sd_vae_config *v, const vkl_weights *w,
                        vkl_dtype dtype, vkl_err *e)
{
    if (dtype != VKL_F32 && dtype != VKL_F16) return vkl_fail(e, "a VAE folder is written as f32 or f16");
    vkl_sd_params ps;
    if (vkl_sd_vae_params_build(v, &ps, e)) return -1;
    vkl_st_writer *wr = vkl_st_writer_new();
    int rc = wr ? 0 : vkl_fail(e, "out of host memory");
    void *buf = NULL;
    for (int i = 0; i < ps.n && !rc; i++) {
        const vkl_sd_param *p = &ps.v[i];
        vkl_tensor *t = vkl_weights_find(w, p->name);
        if (!t) {
            rc = vkl_fail(e, "the VAE has no weight %s", p->name);
            break;
        }
        size_t n = (size_t)vkl_tensor_nelem(t);
        free(buf);
        buf = malloc(sizeof(float) * (n ? n : 1));
        rc = !buf ? vkl_fail(e, "out of host memory")
                  : vkl_tensor_download(c, t, buf, dtype, e) ||
                        vkl_st_writer_add(wr, p->name + 4, dtype, t->ndim, t->shape, buf, e);
    }
    free(buf);
    char path[4200];
    snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", dir);
    /* diffusers' save_pretrained marks its files so */
    if (!rc) rc = vkl_st_writer_meta(wr, "format", "pt", e) || vkl_st_writer_finish(wr, path, e);
    vkl_st_writer_free(wr);
    vkl_sd_params_free(&ps);
    if (rc) return -1;
    char *json = vkl_vae_config_json(v);
    if (!json) return vkl_fail(e, "out of host memory");
    snprintf(path, sizeof path, "%s/config.json", dir);
    rc = vkl_write_text_atomic(path, json, e);
    free(json);
    return rc;
}
