#include "sd/vae_decode.h"

#include <stdlib.h>
#include <string.h>

void vkl_vae_tiling_default(vkl_vae_tiling *t)
{
    t->mode = VKL_VAE_TILING_AUTO;
    t->tile = 64;
    t->overlap = 16;
}

int vkl_vae_tile_starts(int size, int len, int overlap, int *starts, int max)
{
    if (len >= size) {
        if (max < 1) return -1;
        starts[0] = 0;
        return 1;
    }
    if (overlap < 0 || overlap >= len) return -1;
    int stride = len - overlap, span = size - len;
    int n = 1 + (span + stride - 1) / stride;
    if (n > max) return -1;
    /* rounded even spacing: each step is floor or ceil of span/(n-1), never past stride */
    for (int i = 0; i < n; i++) starts[i] = (int)(((int64_t)i * span + (n - 1) / 2) / (n - 1));
    return n;
}

uint64_t vkl_vae_decode_bytes(const vkl_sd_vae_config *c, int batch, int h, int w)
{
    /* The full-resolution stage dominates: the upsampled input of the last up
     * block and its conv (the previous level's width), and that block's
     * resnet tensors (the first level's width), a few alive at once. */
    int n = c->n_levels, f = 1 << (n - 1);
    uint64_t px = (uint64_t)batch * (uint64_t)(h * f) * (uint64_t)(w * f);
    uint64_t prev = (uint64_t)c->block_out_channels[n > 1 ? 1 : 0], first = (uint64_t)c->block_out_channels[0];
    uint64_t full = px * (2 * prev + 2 * first) * sizeof(float);
    /* a mid-block head wider than the fused attention stores its scores and
     * probabilities, [batch, hw, hw] each */
    uint64_t tokens = (uint64_t)h * (uint64_t)w, scores = 0;
    if (c->block_out_channels[n - 1] > VKL_ATTN_MAX_FUSED_D) scores = 2 * (uint64_t)batch * tokens * tokens * sizeof(float);
    return full > scores ? full : scores;
}

int vkl_vae_tiling_wanted(vkl_ctx *ctx, const vkl_sd_vae_config *c, int batch, int h, int w)
{
    const vkl_caps *k = vkl_ctx_caps(ctx);
    uint64_t heap = 0;
    for (int i = 0; i < k->nheaps; i++)
        if (k->heaps[i].device_local && k->heaps[i].size > heap) heap = k->heaps[i].size;
    return heap && vkl_vae_decode_bytes(c, batch, h, w) > heap / 4;
}

/* Blending weight of pixel p of a window of n pixels along one axis: 1, except
 * linear ramps over the pixels it shares with the previous (lo) and next (hi)
 * window, so two overlapping windows' weights sum to one. */
static float ramp(int p, int n, int lo, int hi)
{
    float r = 1.0f;
    if (lo > 0 && p < lo) r = (p + 0.5f) / lo;
    if (hi > 0 && p >= n - hi) {
        float q = (n - p - 0.5f) / hi;
        if (q < r) r = q;
    }
    return r;
}

/* One decoder graph for latents [B, C, th, tw], planned once, replayed per tile. */
typedef struct tile_runner {
    vkl_graph *g;
    vkl_tensor *z, *img;
} tile_runner;

static int runner_init(tile_runner *r, vkl_sd_model *m, int B, int th, int tw, vkl_err *e)
{
    memset(r, 0, sizeof *r);
    const vkl_sd_vae_config *vc = &m->cfg->vae;
    r->z = vkl_tensor_new(m->ctx, VKL_F32, 4, (int64_t[]){B, vc->latent_channels, th, tw}, e);
    if (!r->z) return -1;
    r->g = vkl_graph_new(m->ctx);
    r->img = vkl_vae_decode(r->g, &m->vae, r->z);
    vkl_graph_keep(r->g, r->img);
    return vkl_graph_plan(r->g, e);
}

static void runner_free(tile_runner *r)
{
    vkl_graph_free(r->g);
    vkl_tensor_free(r->z);
}

#define MAX_TILES_PER_AXIS 1024

int vkl_sd_decode_ex(vkl_sd_model *m, const float *latents, int batch, int h, int w, const vkl_vae_tiling *t,
                     float *images, int *tiles, vkl_err *e)
{
    const vkl_sd_vae_config *vc = &m->cfg->vae;
    int C = vc->latent_channels, f = 1 << (vc->n_levels - 1), oc = vc->out_channels;
    int tiled = t && (t->mode == VKL_VAE_TILING_ON ||
                      (t->mode == VKL_VAE_TILING_AUTO && vkl_vae_tiling_wanted(m->ctx, vc, batch, h, w)));
    int len = tiled ? (t->tile > 0 ? t->tile : 64) : (h > w ? h : w);
    int th = len < h ? len : h, tw = len < w ? len : w, overlap = tiled ? t->overlap : 0;
    if (tiled && (overlap < 0 || overlap >= len))
        return vkl_fail(e, "VAE tiling: the overlap (%d) must be at least 0 and below the tile size (%d)", overlap, len);
    int ys[MAX_TILES_PER_AXIS], xs[MAX_TILES_PER_AXIS];
    int ny = vkl_vae_tile_starts(h, th, overlap, ys, MAX_TILES_PER_AXIS);
    int nx = vkl_vae_tile_starts(w, tw, overlap, xs, MAX_TILES_PER_AXIS);
    if (ny < 0 || nx < 0)
        return vkl_fail(e, "VAE tiling: a %dx%d latent needs more than %d tiles of %d per side", w, h,
                        MAX_TILES_PER_AXIS, len);
    if (vkl_sd_model_acquire(m, VKL_SD_PART_VAE, e)) return -1;
    size_t H = (size_t)h * f, W = (size_t)w * f, TH = (size_t)th * f, TW = (size_t)tw * f;
    size_t zn = (size_t)batch * C * th * tw, in = (size_t)batch * oc * TH * TW;
    int whole = ny == 1 && nx == 1;
    float *z = malloc(sizeof(float) * zn);
    float *piece = whole ? images : malloc(sizeof(float) * in);
    float *wsum = whole ? NULL : calloc(H * W, sizeof(float));
    float *wy = malloc(sizeof(float) * TH), *wx = malloc(sizeof(float) * TW);
    tile_runner r;
    memset(&r, 0, sizeof r);
    int rc = -1;
    if (!z || !piece || (!whole && !wsum) || !wy || !wx) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    if (runner_init(&r, m, batch, th, tw, e)) goto done;
    if (!whole) memset(images, 0, sizeof(float) * (size_t)batch * oc * H * W);
    for (int iy = 0; iy < ny; iy++)
        for (int ix = 0; ix < nx; ix++) {
            int y0 = ys[iy], x0 = xs[ix];
            for (int b = 0; b < batch; b++)
                for (int c = 0; c < C; c++)
                    for (int y = 0; y < th; y++) {
                        const float *src = latents + (((size_t)b * C + c) * h + y0 + y) * w + x0;
                        float *dst = z + (((size_t)b * C + c) * th + y) * tw;
                        for (int x = 0; x < tw; x++) dst[x] = src[x] / vc->scaling_factor;
                    }
            if (vkl_tensor_upload(m->ctx, r.z, z, VKL_F32, e) || vkl_graph_run(r.g, e) ||
                vkl_tensor_download(m->ctx, r.img, piece, VKL_F32, e))
                goto done;
            if (whole) continue;
            int lo_y = iy ? (ys[iy - 1] + th - y0) * f : 0, hi_y = iy + 1 < ny ? (y0 + th - ys[iy + 1]) * f : 0;
            int lo_x = ix ? (xs[ix - 1] + tw - x0) * f : 0, hi_x = ix + 1 < nx ? (x0 + tw - xs[ix + 1]) * f : 0;
            for (size_t y = 0; y < TH; y++) wy[y] = ramp((int)y, (int)TH, lo_y, hi_y);
            for (size_t x = 0; x < TW; x++) wx[x] = ramp((int)x, (int)TW, lo_x, hi_x);
            size_t Y0 = (size_t)y0 * f, X0 = (size_t)x0 * f;
            for (size_t y = 0; y < TH; y++)
                for (size_t x = 0; x < TW; x++) wsum[(Y0 + y) * W + X0 + x] += wy[y] * wx[x];
            for (int b = 0; b < batch; b++)
                for (int c = 0; c < oc; c++)
                    for (size_t y = 0; y < TH; y++) {
                        const float *src = piece + (((size_t)b * oc + c) * TH + y) * TW;
                        float *dst = images + (((size_t)b * oc + c) * H + Y0 + y) * W + X0;
                        for (size_t x = 0; x < TW; x++) dst[x] += wy[y] * wx[x] * src[x];
                    }
        }
    if (!whole)
        for (int b = 0; b < batch; b++)
            for (int c = 0; c < oc; c++) {
                float *img = images + ((size_t)b * oc + c) * H * W;
                for (size_t i = 0; i < H * W; i++) img[i] /= wsum[i];
            }
    if (tiles) *tiles = ny * nx;
    rc = 0;
done:
    if (rc) vkl_err_prefix(e, "VAE decoder: ");
    runner_free(&r);
    free(z);
    if (!whole) free(piece);
    free(wsum);
    free(wy);
    free(wx);
    return rc;
}

int vkl_sd_decode(vkl_sd_model *m, const float *latents, int batch, int h, int w, float *images, vkl_err *e)
{
    return vkl_sd_decode_ex(m, latents, batch, h, w, NULL, images, NULL, e);
}
