/* libFuzzer target: arbitrary bytes through the image reader, the PNG text
 * reader and the A1111 parameters parser. Any crash, leak or sanitizer report
 * is a bug; errors are the expected outcome for most inputs. */
#include <stdlib.h>
#include <string.h>

#include "io/image.h"
#include "sd/gen_params.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vkl_err e;
    vkl_image im;
    if (vkl_image_read_memory(data, size, "fuzz", 0, size & 1 ? VKL_PIX_F32 : VKL_PIX_U8, &im,
                              NULL, &e) == 0)
        vkl_image_free(&im);
    vkl_png_text *t;
    int n;
    if (vkl_png_read_texts_memory(data, size, "fuzz", &t, &n, &e) == 0) vkl_png_texts_free(t, n);
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = 0;
        vkl_gen_params p;
        if (vkl_gen_params_parse(s, &p, &e) == 0) {
            char *text;
            if (vkl_gen_params_format(&p, &text, &e) == 0) free(text);
            vkl_gen_params_free(&p);
        }
        free(s);
    }
    return 0;
}
