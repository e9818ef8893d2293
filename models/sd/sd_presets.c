/* Full-size configurations of the public Stable Diffusion models (as their
 * diffusers config.json files describe them), for benchmarks and random
 * checkpoints; loading a real model never uses these. */
#include "sd/sd_config.h"

#include <string.h>

static void sd15(vkl_sd_config *c)
{
    vkl_sd_config_family_defaults(c, VKL_SD_FAMILY_SD1);
    vkl_sd_unet_config *u = &c->unet;
    u->n_levels = 4;
    int boc[] = {320, 640, 1280, 1280};
    for (int i = 0; i < 4; i++) {
        u->block_out_channels[i] = boc[i];
        u->down_attn[i] = i < 3;
        u->up_attn[i] = i > 0;
        u->heads[i] = 8;
        u->transformer_layers[i] = i < 3;
    }
    u->layers_per_block = 2;
    u->mid_attn = 1;
    u->mid_heads = 8;
    u->mid_transformer_layers = 1;
    u->cross_attention_dim = 768;
    u->time_proj_dim = 320;
    u->time_embed_dim = 1280;
    vkl_sd_vae_config *v = &c->vae;
    v->n_levels = 4;
    int vb[] = {128, 256, 512, 512};
    for (int i = 0; i < 4; i++) v->block_out_channels[i] = vb[i];
    v->layers_per_block = 2;
    c->te[0].hidden = 768;
    c->te[0].layers = 12;
    c->te[0].heads = 12;
    c->te[0].intermediate = 3072;
}

static void sd21(vkl_sd_config *c)
{
    sd15(c);
    vkl_sd_config s = *c;
    vkl_sd_config_family_defaults(c, VKL_SD_FAMILY_SD2);
    c->unet = s.unet;
    c->vae.n_levels = s.vae.n_levels;
    memcpy(c->vae.block_out_channels, s.vae.block_out_channels, sizeof s.vae.block_out_channels);
    c->vae.layers_per_block = s.vae.layers_per_block;
    c->unet.use_linear_projection = 1;
    c->unet.cross_attention_dim = 1024;
    c->unet.sample_size = 96;
    int heads[] = {5, 10, 20, 20};
    for (int i = 0; i < 4; i++) c->unet.heads[i] = heads[i];
    c->unet.mid_heads = 20;
    c->te[0].hidden = 1024;
    c->te[0].layers = 23;
    c->te[0].heads = 16;
    c->te[0].intermediate = 4096;
}

static void sdxl(vkl_sd_config *c)
{
    vkl_sd_config s;
    sd15(&s);
    vkl_sd_config_family_defaults(c, VKL_SD_FAMILY_SDXL);
    c->vae.n_levels = s.vae.n_levels;
    memcpy(c->vae.block_out_channels, s.vae.block_out_channels, sizeof s.vae.block_out_channels);
    c->vae.layers_per_block = s.vae.layers_per_block;
    vkl_sd_unet_config *u = &c->unet;
    u->n_levels = 3;
    int boc[] = {320, 640, 1280}, tl[] = {0, 2, 10}, heads[] = {5, 10, 20};
    for (int i = 0; i < 3; i++) {
        u->block_out_channels[i] = boc[i];
        u->down_attn[i] = i > 0;
        u->up_attn[i] = i < 2;
        u->heads[i] = heads[i];
        u->transformer_layers[i] = tl[i];
    }
    u->layers_per_block = 2;
    u->mid_attn = 1;
    u->mid_heads = 20;
    u->mid_transformer_layers = 10;
    u->cross_attention_dim = 2048;
    u->use_linear_projection = 1;
    u->time_proj_dim = 320;
    u->time_embed_dim = 1280;
    u->projection_class_embeddings_input_dim = 2816;
    c->te[0] = s.te[0];
    vkl_sd_text_config *t = &c->te[1];
    t->hidden = 1280;
    t->layers = 32;
    t->heads = 20;
    t->intermediate = 5120;
    t->projection_dim = 1280;
}

int vkl_sd_config_preset(const char *name, vkl_sd_config *c, vkl_err *e)
{
    memset(c, 0, sizeof *c);
    if (!strcmp(name, "sd1.5") || !strcmp(name, "sd15") || !strcmp(name, "sd1")) sd15(c);
    else if (!strcmp(name, "sd2.1") || !strcmp(name, "sd21") || !strcmp(name, "sd2")) sd21(c);
    else if (!strcmp(name, "sdxl")) sdxl(c);
    else return vkl_fail(e, "unknown model family '%s' (known: sd1.5, sd2.1, sdxl)", name);
    return 0;
}
