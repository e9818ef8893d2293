#include "bench_flops.h"

static double conv(double hw, int ci, int co, int k) { return 2.0 * hw * ci * co * k * k; }

static double resnet(double hw, int ci, int co)
{
    return conv(hw, ci, co, 3) + conv(hw, co, co, 3) + (ci != co ? conv(hw, ci, co, 1) : 0);
}

/* proj_in, depth x (self-attention, cross-attention on the text, GEGLU
 * feed-forward of inner width 4C), proj_out on n = h*w tokens of width c */
static double transformer(double n, int c, int depth, int tokens, int ctx)
{
    double block = 4 * 2.0 * n * c * c + 2 * 2.0 * n * n * c  /* attn1: q k v out, QK^T and AV */
                   + 2 * 2.0 * n * c * c + 2 * 2.0 * tokens * ctx * c + 2 * 2.0 * n * tokens * c /* attn2 */
                   + 2.0 * n * c * 8 * c + 2.0 * n * 4 * c * c; /* ff */
    return 2 * 2.0 * n * c * c + depth * block;
}

double vkl_bench_unet_forward_flops(const vkl_sd_unet_config *u, int batch, int lh, int lw, int tokens)
{
    int ctx = u->cross_attention_dim, skips[64], nskip = 0, c = u->block_out_channels[0];
    double hw = (double)lh * lw, f = conv(hw, u->in_channels, c, 3);
    skips[nskip++] = c;
    for (int i = 0; i < u->n_levels; i++) {
        int co = u->block_out_channels[i];
        for (int j = 0; j < u->layers_per_block; j++) {
            f += resnet(hw, c, co);
            c = co;
            if (u->down_attn[i]) f += transformer(hw, c, u->transformer_layers[i], tokens, ctx);
            if (nskip < 64) skips[nskip++] = c;
        }
        if (i < u->n_levels - 1) {
            hw /= 4;
            f += conv(hw, c, c, 3); /* stride 2: counted at the output size */
            if (nskip < 64) skips[nskip++] = c;
        }
    }
    f += 2 * resnet(hw, c, c);
    if (u->mid_attn) f += transformer(hw, c, u->mid_transformer_layers, tokens, ctx);
    for (int i = 0; i < u->n_levels; i++) {
        int level = u->n_levels - 1 - i, co = u->block_out_channels[level];
        for (int j = 0; j < u->layers_per_block + 1 && nskip > 0; j++) {
            f += resnet(hw, c + skips[--nskip], co);
            c = co;
            if (u->up_attn[i]) f += transformer(hw, c, u->transformer_layers[level], tokens, ctx);
        }
        if (i < u->n_levels - 1) {
            hw *= 4;
            f += conv(hw, c, c, 3);
        }
    }
    f += conv(hw, c, u->out_channels, 3);
    return f * batch;
}
