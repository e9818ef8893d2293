#include "sd/vae.h"

#include <stdio.h>

static vkl_tensor *mid_block(vkl_sd_net *n, vkl_tensor *x, const char *coder, const vkl_sd_vae_config *c)
{
    char p[256];
    int G = c->norm_num_groups;
    snprintf(p, sizeof p, "vae.%s.mid_block.resnets.0", coder);
    x = vkl_sd_resnet(n, x, NULL, p, G, c->norm_eps);
    if (!x) return NULL;
    /* single-head attention over all channels, on the token layout */
    int64_t H = x->shape[2], W = x->shape[3];
    snprintf(p, sizeof p, "vae.%s.mid_block.attentions.0.group_norm", coder);
    vkl_tensor *h = vkl_sd_to_tokens(n->g, vkl_sd_group_norm(n, x, p, G, c->norm_eps, 0));
    snprintf(p, sizeof p, "vae.%s.mid_block.attentions.0", coder);
    h = vkl_sd_attention(n, h, NULL, p, 1);
    x = vkl_add(n->g, x, vkl_sd_from_tokens(n->g, h, H, W));
    snprintf(p, sizeof p, "vae.%s.mid_block.resnets.1", coder);
    return vkl_sd_resnet(n, x, NULL, p, G, c->norm_eps);
}

vkl_tensor *vkl_vae_decode(vkl_graph *g, const vkl_vae *m, vkl_tensor *z)
{
    if (!z || vkl_graph_failed(g)) return NULL;
    const vkl_sd_vae_config *c = m->cfg;
    vkl_sd_net n = {g, m->w, NULL, 0};
    char p[256];
    if (z->ndim != 4 || z->shape[1] != c->latent_channels)
        return vkl_graph_set_error(g, "vae: latents must be [batch, %d, h, w]", c->latent_channels);
    vkl_tensor *x = vkl_sd_conv(&n, z, "vae.post_quant_conv", 1, 0);
    x = vkl_sd_conv(&n, x, "vae.decoder.conv_in", 1, 1);
    x = mid_block(&n, x, "decoder", c);
    for (int i = 0; i < c->n_levels; i++) {
        for (int j = 0; j < c->layers_per_block + 1; j++) {
            snprintf(p, sizeof p, "vae.decoder.up_blocks.%d.resnets.%d", i, j);
            x = vkl_sd_resnet(&n, x, NULL, p, c->norm_num_groups, c->norm_eps);
        }
        if (i < c->n_levels - 1) {
            snprintf(p, sizeof p, "vae.decoder.up_blocks.%d.upsamplers.0.conv", i);
            x = vkl_sd_conv(&n, vkl_upsample_nearest2x(g, x), p, 1, 1);
        }
    }
    x = vkl_sd_group_norm(&n, x, "vae.decoder.conv_norm_out", c->norm_num_groups, c->norm_eps, 1);
    return vkl_sd_conv(&n, x, "vae.decoder.conv_out", 1, 1);
}

vkl_tensor *vkl_vae_encode(vkl_graph *g, const vkl_vae *m, vkl_tensor *image)
{
    if (!image || vkl_graph_failed(g)) return NULL;
    const vkl_sd_vae_config *c = m->cfg;
    vkl_sd_net n = {g, m->w, NULL, 0};
    char p[256];
    int64_t f = 1 << (c->n_levels - 1);
    if (image->ndim != 4 || image->shape[1] != c->in_channels || image->shape[2] % f || image->shape[3] % f)
        return vkl_graph_set_error(g, "vae: images must be [batch, %d, H, W] with H and W multiples of %lld",
                                   c->in_channels, (long long)f);
    vkl_tensor *x = vkl_sd_conv(&n, image, "vae.encoder.conv_in", 1, 1);
    for (int i = 0; i < c->n_levels; i++) {
        for (int j = 0; j < c->layers_per_block; j++) {
            snprintf(p, sizeof p, "vae.encoder.down_blocks.%d.resnets.%d", i, j);
            x = vkl_sd_resnet(&n, x, NULL, p, c->norm_num_groups, c->norm_eps);
        }
        if (i < c->n_levels - 1) {
            /* the encoder pads right and bottom by one, then a stride-2 conv without padding */
            vkl_conv2d_params cp = {2, 2, 0, 1, 0, 1};
            snprintf(p, sizeof p, "vae.encoder.down_blocks.%d.downsamplers.0.conv", i);
            x = vkl_sd_conv_ex(&n, x, p, &cp);
        }
    }
    x = mid_block(&n, x, "encoder", c);
    x = vkl_sd_group_norm(&n, x, "vae.encoder.conv_norm_out", c->norm_num_groups, c->norm_eps, 1);
    x = vkl_sd_conv(&n, x, "vae.encoder.conv_out", 1, 1);
    return vkl_sd_conv(&n, x, "vae.quant_conv", 1, 0);
}
