/* Live previews for /sdapi/v1/progress's current_image: every
 * show_progress_every_n_steps steps (an A1111 option; default 10, -1: at
 * the last step only, 0: none), while someone watches (a progress request
 * that wants current_image came in the last few seconds: a client that
 * never asks pays nothing), the sampler's prediction of the clean latents
 * of the batch's first image is decoded through the model's own VAE (the
 * exact decoder, not a latent-to-RGB approximation, so any model's preview
 * shows its real colours; it costs one VAE decode of one image per preview).
 * With --lowvram there are none: decoding would bring the VAE onto the
 * device beside the UNet. */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include "gen_image.h"
#include "io/image.h"
#include "sd/pipeline.h"

#include <stdlib.h>
#include <string.h>

/* How long a progress request keeps previews coming: longer than any
 * client's polling period (the page polls every 0.3 s, A1111's every 1 s) */
#define WATCHED_SECONDS 10.0

int serve_preview_wanted(vkl_server *s, int step, int steps)
{
    if (s->model->lowvram) return 0;
    pthread_mutex_lock(&s->opt_mu);
    int every = s->preview_every;
    pthread_mutex_unlock(&s->opt_mu);
    pthread_mutex_lock(&s->q.mu);
    int watched = s->preview_asked > 0 && vkl_serve_now() - s->preview_asked < WATCHED_SECONDS;
    pthread_mutex_unlock(&s->q.mu);
    return watched && (every > 0 ? step % every == 0 : every == -1 && step == steps);
}

int serve_preview_make(vkl_server *s, const float *denoised, int channels, int h, int w, int width, int height)
{
    (void)channels;
    vkl_err e = {{0}};
    float *rgb = malloc(sizeof(float) * 3 * (size_t)width * height);
    if (!rgb) return -1;
    vkl_vae_tiling t;
    vkl_vae_tiling_default(&t);
    int tiles = 0;
    vkl_image im;
    memset(&im, 0, sizeof im);
    uint8_t *png = NULL;
    size_t n = 0;
    char *b64 = NULL;
    if (!vkl_sd_decode_ex(s->model, denoised, 1, h, w, &t, rgb, &tiles, &e) &&
        !vkl_gen_image_u8(rgb, 0, width, height, &im, &e) && !vkl_png_encode(&im, NULL, 0, "preview", &png, &n, &e))
        b64 = sj_base64_encode(png, n);
    free(rgb);
    free(png);
    vkl_image_free(&im);
    if (!b64) return -1; /* no preview this time; the image itself is unaffected */
    pthread_mutex_lock(&s->q.mu);
    free(s->preview);
    s->preview = b64;
    s->preview_job_no = s->q.job_no;
    pthread_mutex_unlock(&s->q.mu);
    return 0;
}
