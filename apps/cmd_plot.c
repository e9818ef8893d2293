/* vklora plot LOG.csv -o CURVE.png: the loss curve of a training log (the
 * `loss` column of what train, lm train and train-vae write), e.g. of a run
 * made in several resumed parts. */
#include "app.h"
#include "loss_plot.h"

#include <stdio.h>
#include <string.h>

static const char *usage_text = "usage: vklora plot LOG.csv -o CURVE.png\n"
                                "Draws the `loss` column of a training log (raw values faint, smoothed dark) with\n"
                                "numbered axes, as `vklora train` does at the end of a run.\n";

int vkl_cmd_plot(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] == '-' || in) {
            fprintf(stderr, "vklora plot: unknown option or extra argument '%s'\n%s", argv[i], usage_text);
            return 2;
        } else {
            in = argv[i];
        }
    }
    if (!in || !out) {
        fputs(usage_text, stderr);
        return 2;
    }
    vkl_err e = {{0}};
    if (vkl_loss_plot_csv(out, in, &e)) {
        fprintf(stderr, "vklora plot: %s\n", e.msg);
        return 1;
    }
    return 0;
}
