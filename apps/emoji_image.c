/* Compositing happens before any resampling: averaging colours over white is
 * what a viewer shows, whereas averaging straight (unpremultiplied) RGBA would
 * let the invisible colour of transparent pixels bleed into the edges. */
#include "emoji_image.h"

int vkl_emoji_image(const void *png, size_t n, const char *label, int size, vkl_image *out, vkl_err *e)
{
    vkl_image rgba = {0}, rgb = {0}, square = {0}, small = {0};
    int rc = -1;
    if (vkl_image_read_memory(png, n, label, 4, VKL_PIX_U8, &rgba, NULL, e)) goto done;
    if (vkl_image_alloc(&rgb, rgba.width, rgba.height, 3, VKL_PIX_F32, e)) goto done;
    const uint8_t *s = vkl_image_u8(&rgba);
    float *d = vkl_image_f32(&rgb);
    size_t px = (size_t)rgba.width * rgba.height;
    for (size_t i = 0; i < px; i++) {
        float a = s[4 * i + 3] * (1.0f / 255.0f);
        for (int c = 0; c < 3; c++) d[3 * i + c] = s[4 * i + c] * (1.0f / 255.0f) * a + (1.0f - a);
    }
    int side = rgb.width < rgb.height ? rgb.width : rgb.height;
    if (vkl_image_center_crop(&rgb, side, side, &square, e) ||
        vkl_image_resize(&square, size, size, VKL_RESIZE_AREA, &small, e) ||
        vkl_image_convert(&small, VKL_PIX_U8, out, e)) {
        vkl_err_prefix(e, "%s: ", label);
        goto done;
    }
    rc = 0;
done:
    vkl_image_free(&rgba);
    vkl_image_free(&rgb);
    vkl_image_free(&square);
    vkl_image_free(&small);
    return rc;
}
