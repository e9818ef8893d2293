#include "opt_value.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int vkl_app_opt_bad(const char *cmd, const char *opt, const char *v, const char *want)
{
    fprintf(stderr, "vklora %s: %s %s: %s\n", cmd, opt, v, want);
    return 2;
}

int vkl_app_opt_int(const char *cmd, const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        char want[96];
        snprintf(want, sizeof want, "expected an integer in [%ld, %ld]", lo, hi);
        return vkl_app_opt_bad(cmd, opt, v, want);
    }
    *out = (int)x;
    return 0;
}

int vkl_app_opt_real(const char *cmd, const char *opt, const char *v, double lo, double hi, float *out)
{
    char *end;
    double x = strtod(v, &end);
    if (!*v || *end || !isfinite(x) || x < lo || x > hi) {
        char want[96];
        snprintf(want, sizeof want, "expected a number in [%g, %g]", lo, hi);
        return vkl_app_opt_bad(cmd, opt, v, want);
    }
    *out = (float)x;
    return 0;
}
