/* Tiled VAE decoding on the tiny model: the tile layout, one covering tile
 * reproducing the untiled decode bit for bit, the linear blend of separately
 * decoded windows, how far real tiling moves the image (reported), the
 * activation estimate behind AUTO against the allocator, and bad settings. */
#include "vkl_test.h"
#include "sd/pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LAT "refkit/sd/vectors/pipeline_ddim.safetensors"
#define LAT2 "refkit/sd/vectors/pipeline_euler.safetensors"

static vkl_ctx *ctx;
static vkl_sd_model *model;
static float *latents;   /* [2, 4, 16, 16]: two pipelines' final latents */
static float *untiled;   /* [2, 3, 128, 128] */
static const int B = 2, C = 4, h = 16, w = 16, H = 128, W = 128;

static int setup(void **state)
{
    (void)state;
    if (!vkl_test_shared_exists("refkit/sd/tiny-sd") || !vkl_test_shared_exists(LAT) || !vkl_test_shared_exists(LAT2))
        return 0;
    ctx = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    if (vkl_sd_model_load(ctx, vkl_test_shared_path("refkit/sd/tiny-sd"), NULL, &model, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    int64_t n;
    float *a = vkl_test_ref_f32(LAT, "final_latents", &n), *b = vkl_test_ref_f32(LAT2, "final_latents", &n);
    latents = malloc(sizeof(float) * 2 * (size_t)n);
    untiled = malloc(sizeof(float) * (size_t)B * 3 * H * W);
    memcpy(latents, a, sizeof(float) * (size_t)n);
    memcpy(latents + n, b, sizeof(float) * (size_t)n);
    free(a);
    free(b);
    if (vkl_sd_decode(model, latents, B, h, w, untiled, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_sd_model_free(model);
    free(latents);
    free(untiled);
    if (ctx) vkl_test_ctx_done(ctx);
    return 0;
}

static void tile_starts(void **state)
{
    (void)state;
    int s[64];
    assert_int_equal(vkl_vae_tile_starts(16, 8, 2, s, 64), 3);
    assert_int_equal(s[0], 0);
    assert_int_equal(s[1], 4);
    assert_int_equal(s[2], 8);
    assert_int_equal(vkl_vae_tile_starts(100, 64, 16, s, 64), 2);
    assert_int_equal(s[1], 36);
    assert_int_equal(vkl_vae_tile_starts(64, 64, 16, s, 64), 1);
    assert_int_equal(vkl_vae_tile_starts(40, 64, 16, s, 64), 1);
    assert_int_equal(s[0], 0);
    assert_int_equal(vkl_vae_tile_starts(65, 64, 64, s, 64), -1); /* overlap must be below the tile */
    assert_int_equal(vkl_vae_tile_starts(1000, 8, 0, s, 64), -1); /* more than max */
    /* every layout: covers the line, neighbours share at least the overlap, fewest tiles */
    for (int size = 1; size < 200; size += 7)
        for (int len = 1; len < 80; len += 5)
            for (int ov = 0; ov < len; ov += 3) {
                int n = vkl_vae_tile_starts(size, len, ov, s, 64);
                if (n < 0) {
                    assert_true(1 + (size - len + (len - ov) - 1) / (len - ov) > 64);
                    continue;
                }
                assert_int_equal(s[0], 0);
                assert_int_equal(n > 1 ? s[n - 1] + len : size, size);
                for (int i = 1; i < n; i++) {
                    assert_true(s[i] > s[i - 1]);
                    assert_true(s[i - 1] + len - s[i] >= ov);
                }
                if (n > 1) assert_true((n - 2) * (len - ov) + len < size); /* one tile fewer would not do */
            }
}

static void decode_tiled(const vkl_vae_tiling *t, float *out, int *tiles)
{
    vkl_err e = {{0}};
    if (vkl_sd_decode_ex(model, latents, B, h, w, t, out, tiles, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
}

static void covering_tile_is_untiled(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LAT);
    float *got = malloc(sizeof(float) * (size_t)B * 3 * H * W);
    int sizes[2] = {16, 64}, tiles = 0;
    for (int i = 0; i < 2; i++) {
        vkl_vae_tiling t = {VKL_VAE_TILING_ON, sizes[i], 4};
        decode_tiled(&t, got, &tiles);
        assert_int_equal(tiles, 1);
        assert_memory_equal(got, untiled, sizeof(float) * (size_t)B * 3 * H * W);
    }
    /* AUTO leaves a decode this small whole */
    vkl_vae_tiling t;
    vkl_vae_tiling_default(&t);
    t.tile = 8;
    decode_tiled(&t, got, &tiles);
    assert_int_equal(tiles, 1);
    assert_memory_equal(got, untiled, sizeof(float) * (size_t)B * 3 * H * W);
    free(got);
}

/* The latent window [y0, y0+n) x [x0, x0+n) decoded on its own. */
static float *decode_window(int y0, int x0, int n)
{
    float *z = malloc(sizeof(float) * (size_t)B * C * n * n), *img = malloc(sizeof(float) * (size_t)B * 3 * 64 * n * n);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < n; y++)
                memcpy(z + (((size_t)b * C + c) * n + y) * n, latents + (((size_t)b * C + c) * h + y0 + y) * w + x0,
                       sizeof(float) * (size_t)n);
    vkl_err e = {{0}};
    if (vkl_sd_decode(model, z, B, n, n, img, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    free(z);
    return img;
}

/* 2x2 tiles of 10 with 4 of overlap: windows at 0 and 6 on each axis share
 * latent rows 6..9 = image rows 48..79, where the weights go linearly from
 * the first window to the second. */
static void blend_of_windows(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LAT);
    const int n = 10, N = 80, starts[2] = {0, 6};
    float *win[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) win[i][j] = decode_window(starts[i], starts[j], n);
    float *got = malloc(sizeof(float) * (size_t)B * 3 * H * W), *want = malloc(sizeof(float) * (size_t)B * 3 * H * W);
    vkl_vae_tiling t = {VKL_VAE_TILING_ON, n, 4};
    int tiles = 0;
    decode_tiled(&t, got, &tiles);
    assert_int_equal(tiles, 4);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 3; c++)
            for (int Y = 0; Y < H; Y++)
                for (int X = 0; X < W; X++) {
                    double wy[2], wx[2], v = 0;
                    double ty = Y < 48 ? 0 : Y >= 80 ? 1 : (Y - 48 + 0.5) / 32.0;
                    double tx = X < 48 ? 0 : X >= 80 ? 1 : (X - 48 + 0.5) / 32.0;
                    wy[0] = 1 - ty, wy[1] = ty, wx[0] = 1 - tx, wx[1] = tx;
                    for (int i = 0; i < 2; i++)
                        for (int j = 0; j < 2; j++) {
                            if (wy[i] == 0 || wx[j] == 0) continue;
                            int y = Y - 8 * starts[i], x = X - 8 * starts[j];
                            v += wy[i] * wx[j] * win[i][j][(((size_t)b * 3 + c) * N + y) * N + x];
                        }
                    want[(((size_t)b * 3 + c) * H + Y) * W + X] = (float)v;
                }
    vkl_test_assert_close("blend of separately decoded windows", got, want, (size_t)B * 3 * H * W, 1e-5f, 1e-5f);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) free(win[i][j]);
    free(want);
    free(got);
}

/* Tiles that do not cover the latent see only part of it (attention, group
 * norms, and zero padding where the neighbour's latents were, felt about 11
 * latent pixels deep through the decoder's convolutions at latent size):
 * the image moves. On this 16x16 latent every tile is mostly border, so the
 * change is large (about 4% to 16% relative rms, less as tiles grow); reported, and bounded by
 * 20% relative rms (a misplaced or unblended tile would be near 100%). */
static void tiled_against_untiled(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LAT);
    const int cfg[4][2] = {{14, 4}, {12, 4}, {10, 4}, {8, 2}};
    size_t n = (size_t)B * 3 * H * W;
    float *got = malloc(sizeof(float) * n);
    double ref2 = 0;
    for (size_t i = 0; i < n; i++) ref2 += (double)untiled[i] * untiled[i];
    for (int k = 0; k < 4; k++) {
        vkl_vae_tiling t = {VKL_VAE_TILING_ON, cfg[k][0], cfg[k][1]};
        int tiles = 0;
        decode_tiled(&t, got, &tiles);
        double sum = 0, d2 = 0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)got[i] - untiled[i];
            sum += fabs(d);
            d2 += d * d;
        }
        float md = vkl_test_max_abs_diff(got, untiled, n);
        double rel = sqrt(d2 / ref2);
        printf("tile %d overlap %d (latent 16x16): %d tiles, max |diff| %.4f, mean |diff| %.5f, relative rms %.4f\n",
               cfg[k][0], cfg[k][1], tiles, md, sum / n, rel);
        assert_true(rel < 0.2);
    }
    free(got);
}

/* The estimate AUTO decides with, against what the allocator really holds
 * for an untiled decode (within a factor of two); and tiles hold less. */
static void decode_memory(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LAT);
    float *got = malloc(sizeof(float) * (size_t)B * 3 * H * W);
    vkl_mem_stats ms;
    vkl_mem_get_stats(ctx, &ms);
    uint64_t base = ms.total_current;
    vkl_mem_reset_peak(ctx);
    decode_tiled(NULL, got, NULL);
    vkl_mem_get_stats(ctx, &ms);
    uint64_t whole = ms.total_peak - base;
    uint64_t est = vkl_vae_decode_bytes(&model->cfg->vae, B, h, w);
    vkl_mem_reset_peak(ctx);
    vkl_vae_tiling t = {VKL_VAE_TILING_ON, 8, 2};
    decode_tiled(&t, got, NULL);
    vkl_mem_get_stats(ctx, &ms);
    uint64_t tiled = ms.total_peak - base;
    printf("decode activations: untiled %.2f MiB (estimate %.2f MiB), 8x8-latent tiles %.2f MiB\n", whole / 1048576.0,
           est / 1048576.0, tiled / 1048576.0);
    assert_true(est >= whole / 2 && est <= whole * 2);
    assert_true(tiled * 2 < whole);
    free(got);
}

static void bad_settings(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LAT);
    float *got = malloc(sizeof(float) * (size_t)B * 3 * H * W);
    vkl_err e = {{0}};
    vkl_vae_tiling t = {VKL_VAE_TILING_ON, 8, 8};
    assert_int_equal(vkl_sd_decode_ex(model, latents, B, h, w, &t, got, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "overlap"));
    t.overlap = -1;
    assert_int_equal(vkl_sd_decode_ex(model, latents, B, h, w, &t, got, NULL, &e), -1);
    assert_non_null(strstr(e.msg, "overlap"));
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tile_starts),        cmocka_unit_test(covering_tile_is_untiled),
        cmocka_unit_test(blend_of_windows),   cmocka_unit_test(tiled_against_untiled),
        cmocka_unit_test(decode_memory),      cmocka_unit_test(bad_settings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
