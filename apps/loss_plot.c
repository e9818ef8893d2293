/* A PNG plot of a loss curve (raw values faint, smoothed line dark), drawn
 * into an RGB buffer without any plotting library. */
#include "loss_plot.h"

#include "io/image.h"
#include "tiny_font.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void px(uint8_t *im, int W, int H, int x, int y, uint8_t r, uint8_t g, uint8_t b)
{
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    uint8_t *p = im + ((size_t)y * W + x) * 3;
    p[0] = r;
    p[1] = g;
    p[2] = b;
}

static void line(uint8_t *im, int W, int H, int x0, int y0, int x1, int y1, uint8_t r, uint8_t g, uint8_t b)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, err = dx + dy;
    for (;;) {
        px(im, W, H, x0, y0, r, g, b);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * err;
        if (e2 >= dy) err += dy, x0 += sx;
        if (e2 <= dx) err += dx, y0 += sy;
    }
}

int vkl_loss_plot(const char *path, const float *loss, int n, vkl_err *e)
{
    if (n < 1) return vkl_fail(e, "no losses to plot");
    enum { W = 640, H = 320, L = 64, R = 16, T = 24, Bm = 40 };
    vkl_image im;
    if (vkl_image_alloc(&im, W, H, 3, VKL_PIX_U8, e)) return -1;
    uint8_t *p = vkl_image_u8(&im);
    memset(p, 255, (size_t)W * H * 3);
    float lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++)
        if (isfinite(loss[i])) {
            if (loss[i] < lo) lo = loss[i];
            if (loss[i] > hi) hi = loss[i];
        }
    if (!(hi > lo)) hi = lo + 1;
    int pw = W - L - R, ph = H - T - Bm;
    line(p, W, H, L, T, L, T + ph, 0, 0, 0);
    line(p, W, H, L, T + ph, L + pw, T + ph, 0, 0, 0);
    /* axes: loss ticks at the quarters of its range, steps at the quarters of the run */
    static const uint8_t ink[3] = {0, 0, 0};
    for (int k = 0; k <= 4; k++) {
        int y = T + ph - ph * k / 4;
        if (k) line(p, W, H, L, y, L + pw, y, 225, 225, 225);
        line(p, W, H, L - 4, y, L, y, 0, 0, 0);
        char lab[32];
        snprintf(lab, sizeof lab, "%.3g", lo + (hi - lo) * k / 4);
        vkl_tiny_text(p, W, H, L - 8 - vkl_tiny_text_width(lab, 2), y - 5, 2, lab, ink);
        int x = L + pw * k / 4;
        line(p, W, H, x, T + ph, x, T + ph + 4, 0, 0, 0);
        snprintf(lab, sizeof lab, "%d", n > 1 ? (int)((double)(n - 1) * k / 4 + 0.5) + 1 : 1);
        vkl_tiny_text(p, W, H, x - vkl_tiny_text_width(lab, 2) / 2, T + ph + 8, 2, lab, ink);
    }
    vkl_tiny_text(p, W, H, L + pw / 2 - vkl_tiny_text_width("STEP", 2) / 2, H - 14, 2, "STEP", ink);
    vkl_tiny_text(p, W, H, 4, 4, 2, "LOSS", ink);
    double sm = loss[0];
    int pxs = -1, pys = -1, pxr = -1, pyr = -1;
    for (int i = 0; i < n; i++) {
        if (!isfinite(loss[i])) continue;
        sm = i < 10 ? (sm * i + loss[i]) / (i + 1) : sm * 0.95 + loss[i] * 0.05;
        int x = L + (n > 1 ? (int)((double)i * pw / (n - 1)) : pw / 2);
        int yr = T + ph - (int)((loss[i] - lo) / (hi - lo) * ph);
        int ys = T + ph - (int)((sm - lo) / (hi - lo) * ph);
        if (pxr >= 0) line(p, W, H, pxr, pyr, x, yr, 170, 200, 240);
        if (pxs >= 0) line(p, W, H, pxs, pys, x, ys, 20, 60, 160);
        pxr = x, pyr = yr, pxs = x, pys = ys;
    }
    char range[160];
    snprintf(range, sizeof range, "loss over %d steps: min %.5g, max %.5g, last (smoothed) %.5g", n, lo, hi, sm);
    vkl_png_text txt = {"Description", range};
    int rc = vkl_png_write(path, &im, &txt, 1, e);
    vkl_image_free(&im);
    return rc;
}

int vkl_loss_plot_csv(const char *png, const char *csv, vkl_err *e)
{
    FILE *f = fopen(csv, "rb");
    if (!f) return vkl_fail(e, "cannot read %s", csv);
    char line[512];
    int col = -1, n = 0, cap = 0, rc = 0;
    float *loss = NULL;
    if (fgets(line, sizeof line, f)) {
        /* the column named loss, wherever the log puts it */
        int k = 0;
        for (char *save = NULL, *tok = strtok_r(line, ",\r\n", &save); tok; tok = strtok_r(NULL, ",\r\n", &save), k++)
            if (!strcmp(tok, "loss")) col = k;
    }
    while (col >= 0 && !rc && fgets(line, sizeof line, f)) {
        const char *p = line;
        for (int k = 0; k < col && p; k++)
            if ((p = strchr(p, ','))) p++;
        if (!p) continue;
        if (n == cap) {
            float *q = realloc(loss, sizeof(float) * (size_t)(cap = cap ? 2 * cap : 1024));
            if (!q) rc = vkl_fail(e, "out of host memory");
            else loss = q;
        }
        if (!rc) loss[n++] = strtof(p, NULL);
    }
    fclose(f);
    if (!rc && col < 0) rc = vkl_fail(e, "%s has no loss column", csv);
    if (!rc) rc = vkl_loss_plot(png, loss, n, e);
    free(loss);
    return rc;
}
