/* vklora plot LOG.csv -o CURVE.png: the loss curve of a training log (the
 * `loss` column of what train, lm train and train-vae write), e.g. of a run
 * made in several resumed parts. */
#include "app.h"
#include "args.h"
#include "loss_plot.h"

#include <stdio.h>
#include <string.h>

static const char *usage_text = "usage: vklora plot LOG.csv -o CURVE.png\n"
                                "Draws the `loss` column of a training log (raw values faint, smoothed dark) with\n"
                                "numbered axes, as `vklora train` does at the end of a run.\n";

int vkl_cmd_plot(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    const vkl_arg opts[] = {{"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "CURVE.png"}};
    vkl_args_rest log = {&in, 1, 0};
    int prc = vkl_args_parse("plot", opts, 1, argc, argv, &log);
    if (prc) {
        fputs(usage_text, prc == VKL_ARGS_HELP ? stdout : stderr);
        return prc == VKL_ARGS_HELP ? 0 : prc;
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
