/* --base-dtype (also --weights): how a command stores a model's frozen weights on the device. */
#include "app.h"

#include <string.h>

int vkl_app_base_dtype(const char *v, vkl_dtype *out)
{
    if (!strcmp(v, "f32")) *out = VKL_F32;
    else if (!strcmp(v, "f16")) *out = VKL_F16;
    else if (!strcmp(v, "bf16")) *out = VKL_BF16;
    else if (!strcmp(v, "nf4")) *out = VKL_NF4;
    else if (!strcmp(v, "nf4dq")) *out = VKL_NF4_DQ;
    else return -1;
    return 0;
}
