#include "vkl_test.h"
#include "vkl.h"

#include <stdio.h>

const char *const vkl_test_profiles[] = {"default", "portable"};
const int vkl_test_profile_count = 2;

vkl_ctx *vkl_test_ctx(const char *profile)
{
    vkl_ctx_opts o;
    vkl_ctx_opts_default(&o);
    o.profile = profile;
    o.no_pipeline_cache = 0;
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    if (vkl_ctx_create(&o, &c, &e)) {
        print_error("cannot create a Vulkan context (profile %s): %s\n", profile ? profile : "default", e.msg);
        fail();
    }
    return c;
}

void vkl_test_ctx_done(vkl_ctx *c)
{
    uint64_t n = vkl_ctx_validation_count(c);
    vkl_ctx_destroy(c);
    if (n) {
        print_error("the validation layer reported %llu message(s) (printed above)\n", (unsigned long long)n);
        fail();
    }
}
