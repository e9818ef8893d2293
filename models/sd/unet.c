#include "sd/unet.h"

#include <stdio.h>

/* Training with checkpointing: each block's activations are recomputed in the
 * backward pass instead of kept. */
#define SEG_BEGIN() do { if (m->checkpoint) vkl_graph_segment_begin(g); } while (0)
#define SEG_END() do { if (m->checkpoint) vkl_graph_segment_end(g); } while (0)

vkl_tensor *vkl_unet_forward(vkl_graph *g, const vkl_unet *m, vkl_tensor *sample, vkl_tensor *t, vkl_tensor *ctx,
                             vkl_unet_taps *taps)
{
    return vkl_unet_forward_ex(g, m, 0, sample, t, ctx, taps);
}

vkl_tensor *vkl_unet_forward_ex(vkl_graph *g, const vkl_unet *m, int act16, vkl_tensor *sample, vkl_tensor *t,
                                vkl_tensor *ctx, vkl_unet_taps *taps)
{
    return vkl_unet_forward_added(g, m, act16, sample, t, ctx, NULL, taps);
}

/* SDXL's aug_emb: add_embedding([text_embeds | sinusoids of the 6 time ids]).
 * Each id gets the same sinusoid as the timestep, of width
 * addition_time_embed_dim, id 0's values first. */
static vkl_tensor *added_embedding(vkl_sd_net *n, const vkl_sd_unet_config *c, const vkl_unet_added *add,
                                   int64_t B, vkl_unet_taps *taps)
{
    vkl_graph *g = n->g;
    vkl_tensor *te = add->text_embeds, *ids = add->time_ids;
    if (te->ndim != 2 || te->shape[0] != B || ids->ndim != 2 || ids->shape[0] != B || ids->shape[1] != 6)
        return vkl_graph_set_error(g, "unet: added conditioning needs text_embeds [%lld, P] and time_ids [%lld, 6]",
                                   (long long)B, (long long)B);
    int dim = c->addition_time_embed_dim;
    if (te->shape[1] + 6 * dim != c->projection_class_embeddings_input_dim)
        return vkl_graph_set_error(g, "unet: pooled text width %lld + 6 x %d time-id sinusoids is not add_embedding's "
                                      "input width %d", (long long)te->shape[1], dim,
                                   c->projection_class_embeddings_input_dim);
    vkl_tensor *flat = vkl_reshape(g, vkl_contiguous(g, ids), 1, (int64_t[]){6 * B});
    vkl_tensor *tp = vkl_timestep_embedding(g, flat, dim, c->flip_sin_to_cos, (float)c->freq_shift, 10000.0f);
    if (taps) taps->add_time_proj = tp;
    vkl_tensor *x = vkl_concat(g, te, vkl_reshape(g, tp, 2, (int64_t[]){B, 6 * (int64_t)dim}), 1);
    x = vkl_sd_linear(n, x, "unet.add_embedding.linear_1");
    x = vkl_sd_linear(n, vkl_silu(g, x), "unet.add_embedding.linear_2");
    if (taps) taps->add_embedding = x;
    return x;
}

vkl_tensor *vkl_unet_forward_added(vkl_graph *g, const vkl_unet *m, int act16, vkl_tensor *sample, vkl_tensor *t,
                                   vkl_tensor *ctx, const vkl_unet_added *add, vkl_unet_taps *taps)
{
    if (!sample || !t || !ctx || vkl_graph_failed(g)) return NULL;
    const vkl_sd_unet_config *c = m->cfg;
    vkl_sd_net n = {g, m->w, m->lora, act16};
    char p[256];
    int G = c->norm_num_groups;
    if (sample->ndim != 4 || sample->shape[1] != c->in_channels)
        return vkl_graph_set_error(g, "unet: sample must be [batch, %d, h, w]", c->in_channels);
    int64_t down_factor = 1 << (c->n_levels - 1);
    if (sample->shape[2] % down_factor || sample->shape[3] % down_factor)
        return vkl_graph_set_error(g, "unet: latent size %lldx%lld is not a multiple of %lld",
                                   (long long)sample->shape[3], (long long)sample->shape[2], (long long)down_factor);

    /* time embedding */
    vkl_tensor *temb = vkl_timestep_embedding(g, t, c->time_proj_dim, c->flip_sin_to_cos, (float)c->freq_shift, 10000.0f);
    if (taps) taps->time_proj = temb;
    temb = vkl_sd_linear(&n, temb, "unet.time_embedding.linear_1");
    temb = vkl_sd_linear(&n, vkl_silu(g, temb), "unet.time_embedding.linear_2");
    if (taps) taps->time_embedding = temb;
    int has_add = add && add->text_embeds && add->time_ids;
    if (c->add_text_time != has_add)
        return vkl_graph_set_error(g, c->add_text_time ? "unet: this model needs the added conditioning (pooled text "
                                                         "embedding and size/crop time ids)"
                                                       : "unet: this model takes no added conditioning");
    if (has_add) temb = vkl_add(g, temb, added_embedding(&n, c, add, sample->shape[0], taps));
    if (taps) taps->emb = temb;
    vkl_tensor *temb_silu = vkl_silu(g, temb);

    /* with act16 the skip connections (kept until the up blocks) and every
     * block boundary (the checkpoint segments' inputs) are f16 */
    vkl_tensor *x = vkl_sd_store16(&n, vkl_sd_conv(&n, sample, "unet.conv_in", 1, 1));
    if (taps) taps->conv_in = x;
    vkl_tensor *skips[64];
    int nskip = 0;
    skips[nskip++] = x;
    for (int i = 0; i < c->n_levels; i++) {
        for (int j = 0; j < c->layers_per_block; j++) {
            snprintf(p, sizeof p, "unet.down_blocks.%d.resnets.%d", i, j);
            SEG_BEGIN();
            x = vkl_sd_resnet(&n, x, temb_silu, p, G, c->norm_eps);
            SEG_END();
            if (c->down_attn[i]) {
                snprintf(p, sizeof p, "unet.down_blocks.%d.attentions.%d", i, j);
                SEG_BEGIN();
                x = vkl_sd_spatial_transformer(&n, x, ctx, p, c->heads[i], c->transformer_layers[i], G,
                                               c->transformer_norm_eps, c->layer_norm_eps);
                SEG_END();
            }
            if (nskip < 64) skips[nskip++] = x;
        }
        if (i < c->n_levels - 1) {
            snprintf(p, sizeof p, "unet.down_blocks.%d.downsamplers.0.conv", i);
            x = vkl_sd_store16(&n, vkl_sd_conv(&n, x, p, 2, 1));
            if (nskip < 64) skips[nskip++] = x;
        }
        if (taps && i < 8) taps->down[i] = x;
    }

    SEG_BEGIN();
    x = vkl_sd_resnet(&n, x, temb_silu, "unet.mid_block.resnets.0", G, c->norm_eps);
    SEG_END();
    if (c->mid_attn) {
        SEG_BEGIN();
        x = vkl_sd_spatial_transformer(&n, x, ctx, "unet.mid_block.attentions.0", c->mid_heads, c->mid_transformer_layers,
                                       G, c->transformer_norm_eps, c->layer_norm_eps);
        SEG_END();
    }
    SEG_BEGIN();
    x = vkl_sd_resnet(&n, x, temb_silu, "unet.mid_block.resnets.1", G, c->norm_eps);
    SEG_END();
    if (taps) taps->mid = x;

    for (int i = 0; i < c->n_levels; i++) {
        int level = c->n_levels - 1 - i; /* matching down level */
        for (int j = 0; j < c->layers_per_block + 1; j++) {
            if (nskip <= 0) return vkl_graph_set_error(g, "unet: skip connections exhausted");
            x = vkl_concat(g, vkl_sd_store16(&n, x), skips[--nskip], 1);
            snprintf(p, sizeof p, "unet.up_blocks.%d.resnets.%d", i, j);
            SEG_BEGIN();
            x = vkl_sd_resnet(&n, x, temb_silu, p, G, c->norm_eps);
            SEG_END();
            if (c->up_attn[i]) {
                snprintf(p, sizeof p, "unet.up_blocks.%d.attentions.%d", i, j);
                SEG_BEGIN();
                x = vkl_sd_spatial_transformer(&n, x, ctx, p, c->heads[level], c->transformer_layers[level], G,
                                               c->transformer_norm_eps, c->layer_norm_eps);
                SEG_END();
            }
        }
        if (i < c->n_levels - 1) {
            snprintf(p, sizeof p, "unet.up_blocks.%d.upsamplers.0.conv", i);
            x = vkl_sd_store16(&n, vkl_sd_conv(&n, vkl_upsample_nearest2x(g, x), p, 1, 1));
        }
        if (taps && i < 8) taps->up[i] = x;
    }
    x = vkl_sd_group_norm(&n, x, "unet.conv_norm_out", G, c->norm_eps, 0);
    if (taps) taps->conv_norm_out = x;
    x = vkl_sd_conv(&n, vkl_silu(g, x), "unet.conv_out", 1, 1);
    if (taps) taps->conv_out = x;
    return x;
}
