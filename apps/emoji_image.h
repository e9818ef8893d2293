/* One emoji picture for training: decoded, composited over white (the model
 * learns on opaque RGB), centre-cropped to a square and area-averaged down to
 * size x size, as 8-bit RGB. */
#ifndef VKL_EMOJI_IMAGE_H
#define VKL_EMOJI_IMAGE_H

#include "io/image.h"

/* png: an encoded image (any format the image reader knows); label names it
 * in messages. out is a u8 RGB image (free with vkl_image_free). */
int vkl_emoji_image(const void *png, size_t n, const char *label, int size, vkl_image *out, vkl_err *e);

#endif
