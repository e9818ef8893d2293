#include "gen_sweep.h"

#include "app.h"
#include "gen_image.h"
#include "grid.h"
#include "lora_args.h"
#include "progress.h"

#include "io/image.h"

#include <stdio.h>
#include <string.h>

int vkl_app_sweep_list(const char *weights, float *w, int *n, vkl_err *e)
{
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", weights);
    int k = 0;
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
        float x;
        if (vkl_app_parse_weight(p, &x))
            return vkl_fail(e, "--lora-sweep: '%s' in '%s' is not a weight (a finite number)", p, weights);
        if (k == 64) return vkl_fail(e, "--lora-sweep: at most 64 weights");
        if (w) w[k] = x;
        k++;
    }
    if (!k) return vkl_fail(e, "--lora-sweep: '%s' is not a list of weights", weights);
    if (n) *n = k;
    return 0;
}

int vkl_app_sweep(vkl_sd_model *m, vkl_gen_lora *gl, int idx, const char *weights, vkl_gen_opts *o, const char *out,
                 int quiet, vkl_err *e)
{
    float w[64];
    const char *lab[64];
    char labbuf[64][32];
    int n = 0;
    if (vkl_app_sweep_list(weights, w, &n, e)) return -1;
    for (int i = 0; i < n; i++) {
        snprintf(labbuf[i], sizeof labbuf[i], "%g", w[i]);
        lab[i] = labbuf[i];
    }
    vkl_image imgs[64];
    int made = 0, rc = 0;
    double sampling = 0, switching = 0, peak = 0;
    vkl_progress *bar = o->progress_user;
    for (int i = 0; i < n && !rc; i++) {
        double t0 = vkl_progress_now();
        rc = vkl_gen_lora_set_weight(gl, idx, w[i], w[i], e);
        double sw = vkl_progress_now() - t0;
        vkl_gen_result r;
        /* each cell is a run of its own: its own bar, rate and ETA */
        char label[48];
        snprintf(label, sizeof label, "weight %g (%d/%d)", w[i], i + 1, n);
        vkl_progress_begin(bar, label, bar->total, quiet);
        if (!rc) rc = vkl_sd_generate(m, o, &r, e);
        vkl_progress_end(bar);
        if (!rc) {
            rc = vkl_gen_image_u8(r.images, 0, r.width, r.height, &imgs[made], e);
            if (!rc) made++;
            sampling += r.seconds_sampling;
            switching += sw;
            if (r.peak_device_bytes > peak) peak = (double)r.peak_device_bytes;
            vkl_gen_result_free(&r);
        }
    }
    if (!rc && !quiet)
        fprintf(stderr, "seed %llu; %d weights: switching %.4f s in all, sampling %.2f s (%.2f s per image); peak "
                "device memory %.1f MiB\n", (unsigned long long)o->seed, made, switching, sampling,
                made ? sampling / made : 0, peak / 1048576.0);
    vkl_image grid;
    if (!rc) rc = vkl_grid_row(imgs, lab, made, &grid, e);
    for (int i = 0; i < made; i++) vkl_image_free(&imgs[i]);
    if (rc) return -1;
    char text[1024];
    snprintf(text, sizeof text, "%s\nLoRA sweep: %s at %s, seed %llu", o->prompt, gl->name[idx], weights,
             (unsigned long long)o->seed);
    vkl_png_text t = {"parameters", text};
    rc = vkl_png_write(out, &grid, &t, 1, e);
    vkl_image_free(&grid);
    if (!rc && !quiet) printf("wrote %s\n", out);
    return rc;
}
