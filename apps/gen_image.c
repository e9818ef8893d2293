#include "gen_image.h"

#include "io/sha256.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

int vkl_gen_image_u8(const float *images, int b, int w, int h, vkl_image *im, vkl_err *e)
{
    if (vkl_image_alloc(im, w, h, 3, VKL_PIX_U8, e)) return -1;
    size_t hw = (size_t)w * h;
    const float *src = images + (size_t)b * 3 * hw;
    uint8_t *px = vkl_image_u8(im);
    for (size_t i = 0; i < hw; i++)
        for (int ch = 0; ch < 3; ch++) {
            float v = src[ch * hw + i] * 0.5f + 0.5f;
            v = v < 0 ? 0 : v > 1 ? 1 : v;
            px[i * 3 + ch] = (uint8_t)(v * 255.0f + 0.5f);
        }
    return 0;
}

void vkl_gen_model_name(const char *model_path, char *out, size_t size)
{
    size_t n = strlen(model_path);
    while (n > 1 && model_path[n - 1] == '/') n--; /* "dir/" names dir */
    const char *start = model_path;
    for (size_t i = 0; i < n; i++)
        if (model_path[i] == '/') start = model_path + i + 1;
    snprintf(out, size, "%.*s", (int)(model_path + n - start), start);
    char *dot = strrchr(out, '.');
    if (dot && !strcasecmp(dot, ".safetensors")) *dot = 0;
}

int vkl_gen_infotext(vkl_gen_settings *gs, const vkl_gen_lora *gl, char **text, vkl_err *e)
{
    /* "Lora hashes" as AUTOMATIC1111 writes them: the adapter's name and the
     * first 12 digits of its safetensors (AUTOV3) hash */
    vkl_gen_lora_hash lh[VKL_GEN_MAX_LORAS];
    char lhex[VKL_GEN_MAX_LORAS][VKL_SHA256_HEX];
    int nl = 0;
    for (int i = 0; gl && i < gl->n; i++) {
        vkl_err he = {{0}};
        if (vkl_hash_safetensors_autov3(gl->path[i], lhex[nl], &he)) continue;
        lhex[nl][12] = 0;
        lh[nl].name = gl->name[i];
        lh[nl].hash = lhex[nl];
        nl++;
    }
    gs->loras = nl ? lh : NULL;
    gs->nloras = nl;
    vkl_gen_params gp; /* initialised by vkl_gen_params_from_settings */
    *text = NULL;
    int bad = vkl_gen_params_from_settings(gs, &gp, e) || vkl_gen_params_format(&gp, text, e);
    vkl_gen_params_free(&gp);
    gs->loras = NULL;
    gs->nloras = 0;
    return bad ? -1 : 0;
}
