/* vklora grid: images of one size laid out in a grid (enlarged by whole
 * pixels, so small pictures such as vklora's own 32 px ones stay sharp), for
 * model cards and READMEs. */
#include "app.h"
#include "args.h"

#include "io/image.h"

#include <stdlib.h>
#include <string.h>

static const char *usage_text = "usage: vklora grid [--columns N (8)] [--scale S (1)] [--gap G (2)] -o OUT.png IMAGE...\n"
                                "  lays out images of one size row by row on white, each enlarged S times\n";

int vkl_cmd_grid(int argc, char **argv)
{
    int cols = 8, scale = 1, gap = 2, n = 0;
    const char *out = NULL;
    const char **files = calloc((size_t)argc, sizeof *files);
    if (!files) return 1;
    const vkl_arg opts[] = {
        {"--columns", NULL, VKL_ARG_INT, VKL_AS_INT(&cols), 1, 1024, .help = "N"},
        {"--scale", NULL, VKL_ARG_INT, VKL_AS_INT(&scale), 1, 64, .help = "S"},
        {"--gap", NULL, VKL_ARG_INT, VKL_AS_INT(&gap), 0, 256, .help = "G"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "OUT.png"},
    };
    vkl_args_rest images = {files, argc, 0};
    int prc = vkl_args_parse("grid", opts, (int)(sizeof opts / sizeof *opts), argc, argv, &images);
    n = images.n;
    if (prc) {
        fputs(usage_text, prc == VKL_ARGS_HELP ? stdout : stderr);
        free(files);
        return prc == VKL_ARGS_HELP ? 0 : prc;
    }
    if (!out || !n) {
        fprintf(stderr, "vklora grid: give -o OUT.png and at least one image\n%s", usage_text);
        free(files);
        return 2;
    }
    vkl_err e = {{0}};
    vkl_image grid = {0}, im = {0};
    int rc = 1, w = 0, h = 0, rows = (n + cols - 1) / cols, gc = n < cols ? n : cols;
    for (int i = 0; i < n; i++) {
        if (vkl_image_read_file(files[i], 3, VKL_PIX_U8, &im, NULL, &e)) goto done;
        if (!i) {
            w = im.width * scale;
            h = im.height * scale;
            if (vkl_image_alloc(&grid, gc * w + (gc + 1) * gap, rows * h + (rows + 1) * gap, 3, VKL_PIX_U8, &e)) goto done;
            memset(grid.data, 255, (size_t)grid.width * grid.height * 3);
        } else if (im.width * scale != w || im.height * scale != h) {
            vkl_fail(&e, "%s is %dx%d, the first image %dx%d: a grid takes images of one size", files[i], im.width,
                     im.height, w / scale, h / scale);
            goto done;
        }
        int x0 = gap + (i % cols) * (w + gap), y0 = gap + (i / cols) * (h + gap);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                memcpy(vkl_image_u8(&grid) + ((size_t)(y0 + y) * grid.width + x0 + x) * 3,
                       vkl_image_u8(&im) + ((size_t)(y / scale) * im.width + x / scale) * 3, 3);
        vkl_image_free(&im);
    }
    if (vkl_png_write(out, &grid, NULL, 0, &e)) goto done;
    printf("wrote %s (%d images, %dx%d)\n", out, n, grid.width, grid.height);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora grid: %s\n", e.msg);
    vkl_image_free(&im);
    vkl_image_free(&grid);
    free(files);
    return rc;
}
