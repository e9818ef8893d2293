/* An application built against the installed vklora (pkg-config --cflags
 * --libs vklora): loads a Stable Diffusion model once, applies an adapter at
 * run time, and draws the same prompt and seed at two adapter weights,
 * switching the weight without reloading anything. Writes OUT-w0.ppm and
 * OUT-w1.ppm and prints how much the adapter changed the image.
 *
 *   embed MODEL ADAPTER OUT [PROMPT]
 */
#include <vkl.h>
#include <sd/pipeline.h>
#include <sd/sd_adapters.h>
#include <sd/sd_model.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A binary PPM: no image library needed. images in [-1, 1], [3, H, W]. */
static int write_ppm(const char *path, const float *img, int w, int h)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fprintf(f, "P6\n%d %d\n255\n", w, h);
    size_t hw = (size_t)w * h;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) {
            float v = img[c * hw + i] * 0.5f + 0.5f;
            fputc((int)(255.0f * (v < 0 ? 0 : v > 1 ? 1 : v) + 0.5f), f);
        }
    return fclose(f);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: embed MODEL ADAPTER OUT [PROMPT]\n");
        return 2;
    }
    const char *model = argv[1], *adapter = argv[2], *out = argv[3], *prompt = argc > 4 ? argv[4] : "a portrait";
    printf("vklora %s (headers %s)\n", vkl_version(), VKL_VERSION_STRING);
    vkl_err e = {{0}};
    vkl_ctx *ctx = NULL;
    vkl_sd_model *m = NULL;
    vkl_sd_adapters ad;
    memset(&ad, 0, sizeof ad);
    float *first = NULL;
    size_t n = 0;
    int rc = 1;
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    if (vkl_ctx_create(NULL, &ctx, &e) || vkl_sd_model_load(ctx, model, &mo, &m, &e)) goto done;
    float w0 = 0.0f;
    if (vkl_sd_adapters_apply(m, &adapter, &w0, &w0, 1, 0, &ad, &e)) goto done;
    const float weights[2] = {0.0f, 1.0f};
    for (int k = 0; k < 2; k++) {
        if (vkl_sd_adapters_set_weight(&ad, 0, weights[k], weights[k], &e)) goto done;
        vkl_gen_opts o;
        vkl_gen_opts_default(&o);
        o.prompt = prompt;
        o.width = o.height = 64;
        o.sampler.steps = 4;
        o.seed = 1;
        vkl_gen_result r;
        if (vkl_sd_generate(m, &o, &r, &e)) goto done;
        char path[4096];
        snprintf(path, sizeof path, "%s-w%d.ppm", out, k);
        n = (size_t)3 * r.width * r.height;
        if (write_ppm(path, r.images, r.width, r.height)) {
            vkl_gen_result_free(&r);
            snprintf(e.msg, sizeof e.msg, "cannot write %.900s", path);
            goto done;
        }
        printf("weight %g: wrote %s\n", weights[k], path);
        if (!k) {
            first = malloc(sizeof(float) * n);
            if (first) memcpy(first, r.images, sizeof(float) * n);
        } else if (first) {
            double d = 0;
            for (size_t i = 0; i < n; i++) d += fabs(r.images[i] - first[i]);
            printf("mean change made by the adapter: %.5f\n", d / n);
            rc = d > 0 ? 0 : 3;
            if (rc) snprintf(e.msg, sizeof e.msg, "the adapter at weight 1 changed nothing");
        }
        vkl_gen_result_free(&r);
    }
done:
    if (rc) fprintf(stderr, "embed: %s\n", e.msg);
    free(first);
    vkl_sd_adapters_free(&ad);
    vkl_sd_model_free(m);
    vkl_ctx_destroy(ctx);
    return rc;
}
