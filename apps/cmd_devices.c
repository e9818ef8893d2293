/* vklora devices [--json]: every Vulkan device with its limits and features. */
#include "app.h"
#include "args.h"
#include "vkl.h"

#include <stdlib.h>
#include <string.h>

int vkl_cmd_devices(int argc, char **argv)
{
    int json = 0;
    const vkl_arg opts[] = {{"--json", NULL, VKL_ARG_FLAG, VKL_AS_INT(&json), .help = " print JSON"}};
    int prc = vkl_args_parse("devices", opts, 1, argc, argv, NULL);
    if (prc == VKL_ARGS_HELP) {
        printf("usage: vklora devices [--json]\n"
               "Lists every Vulkan device with its limits and features, in the order --device N counts them.\n");
        return 0;
    }
    if (prc) return prc;
    vkl_caps *caps = NULL;
    int n = 0;
    vkl_err e = {{0}};
    if (vkl_list_devices(NULL, &caps, &n, &e)) {
        fprintf(stderr, "vklora: %s\n", e.msg);
        return 1;
    }
    if (json) printf("[");
    for (int i = 0; i < n; i++) {
        if (json) {
            char *s = vkl_caps_json(&caps[i], i);
            printf("%s%s", i ? "," : "", s ? s : "null");
            free(s);
        } else {
            vkl_caps_print(&caps[i], i, stdout);
        }
    }
    if (json) printf("]\n");
    free(caps);
    return 0;
}
