/* The last line of a failed command. When the failure is memory running out,
 * a second line says what makes that command's work fit, so nobody has to
 * guess which of the options trade speed for memory. */
#include "app.h"

#include <stdio.h>
#include <string.h>

static const struct {
    const char *cmd, *hint;
} HINTS[] = {
    {"generate", "--lowvram (one network on the device at a time), --vae-tiling on, or a smaller "
                 "--width/--height or --batch"},
    {"train", "--checkpointing, --mixed-precision fp16, --optimizer adamw8bit, or a smaller --batch "
              "(with --grad-accum to keep the effective batch) or --resolution"},
    {"train-vae", "a smaller --batch or image size"},
    {"lm generate", "a shorter prompt or fewer new tokens"},
    {"lm train", "a smaller --batch or --seq-len"},
};

void vkl_app_print_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "vklora %s: %s\n", cmd, msg);
    if (!strstr(msg, "out of device memory") && !strstr(msg, "out of host memory")) return;
    for (size_t i = 0; i < sizeof HINTS / sizeof *HINTS; i++)
        if (!strcmp(cmd, HINTS[i].cmd)) {
            fprintf(stderr, "vklora %s: to fit in less memory, try %s\n", cmd, HINTS[i].hint);
            return;
        }
}
