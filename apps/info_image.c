/* `vklora info` for images: format, size, channels, and the generation
 * parameters stored in a PNG's "parameters" text chunk (what A1111's PNG Info
 * tab shows), raw and parsed. The pixels are decoded too, so a damaged image
 * is reported here and not later in the middle of a training run. */
#include "info.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "sd/gen_params.h"

static const char *channel_names[5] = {"", "grey", "grey+alpha", "RGB", "RGBA"};

static void print_indented(const char *indent, const char *v)
{
    fputs(indent, stdout);
    for (; *v; v++) {
        putchar(*v);
        if (*v == '\n' && v[1]) fputs(indent, stdout);
    }
    putchar('\n');
}

static void print_text(const char *path, const vkl_image_info *info, const vkl_png_text *t, int nt,
                       const vkl_gen_params *gp, const char *text_err)
{
    printf("path: %s\n", path);
    printf("format: %s\n", vkl_image_format_name(info->format));
    printf("size: %dx%d\n", info->width, info->height);
    printf("channels: %d (%s)\n", info->channels, channel_names[info->channels]);
    printf("bits per channel: %d\n", info->bits);
    if (info->orientation != 1)
        printf("EXIF orientation: %d (size shown upright)\n", info->orientation);
    if (text_err) printf("text chunks: unreadable: %s\n", text_err);
    else if (info->format == VKL_IMG_PNG) printf("text chunks: %d\n", nt);
    for (int i = 0; i < nt; i++) {
        printf("  %s:\n", t[i].key);
        print_indented("    ", t[i].value);
    }
    if (!gp) return;
    printf("generation parameters:\n");
    printf("  prompt: ");
    print_indented("", gp->prompt);
    if (gp->negative_prompt[0]) {
        printf("  negative prompt: ");
        print_indented("", gp->negative_prompt);
    }
    for (int i = 0; i < gp->count; i++) printf("  %s: %s\n", gp->keys[i], gp->values[i]);
}

static int print_json(const char *path, const vkl_image_info *info, const vkl_png_text *t, int nt,
                      const vkl_gen_params *gp, const char *text_err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "format", vkl_image_format_name(info->format));
    cJSON_AddNumberToObject(o, "width", info->width);
    cJSON_AddNumberToObject(o, "height", info->height);
    cJSON_AddNumberToObject(o, "channels", info->channels);
    cJSON_AddNumberToObject(o, "bits", info->bits);
    cJSON_AddNumberToObject(o, "orientation", info->orientation);
    cJSON *texts = cJSON_AddObjectToObject(o, "text");
    for (int i = 0; i < nt; i++) cJSON_AddStringToObject(texts, t[i].key, t[i].value);
    if (text_err) cJSON_AddStringToObject(o, "text_error", text_err);
    if (gp) {
        cJSON *g = cJSON_AddObjectToObject(o, "parameters");
        cJSON_AddStringToObject(g, "prompt", gp->prompt);
        cJSON_AddStringToObject(g, "negative_prompt", gp->negative_prompt);
        cJSON *kv = cJSON_AddObjectToObject(g, "settings");
        for (int i = 0; i < gp->count; i++) cJSON_AddStringToObject(kv, gp->keys[i], gp->values[i]);
    }
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    if (!s) {
        vkl_log(VKL_LOG_ERROR, "%s: out of memory for the JSON report", path);
        return 1;
    }
    puts(s);
    cJSON_free(s);
    return 0;
}

int vkl_info_image(const char *path, int json)
{
    vkl_err e = {{0}};
    vkl_image im;
    vkl_image_info info;
    if (vkl_image_read_file(path, 0, VKL_PIX_U8, &im, &info, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_image_free(&im);
    vkl_png_text *t = NULL;
    int nt = 0;
    char text_err[sizeof e.msg];
    int have_err = 0;
    if (info.format == VKL_IMG_PNG && vkl_png_read_texts_file(path, &t, &nt, &e)) {
        /* the picture is fine; only its text is not: report both */
        snprintf(text_err, sizeof text_err, "%s", e.msg);
        have_err = 1;
    }
    vkl_gen_params gp;
    const char *params = vkl_png_text_get(t, nt, "parameters");
    int have_gp = params && vkl_gen_params_parse(params, &gp, &e) == 0;
    int rc = 0;
    if (json) rc = print_json(path, &info, t, nt, have_gp ? &gp : NULL, have_err ? text_err : NULL);
    else print_text(path, &info, t, nt, have_gp ? &gp : NULL, have_err ? text_err : NULL);
    if (have_gp) vkl_gen_params_free(&gp);
    vkl_png_texts_free(t, nt);
    return rc;
}
