/* vklora info FILE: placeholder until the safetensors/image describer lands. */
#include "app.h"

int vkl_cmd_info(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "vklora info: not available in this build\n");
    return 1;
}
