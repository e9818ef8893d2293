/* Option values of the command-line parsers: checked whole, with a message
 * naming the command, the option, the value and what it should be. */
#ifndef VKL_OPT_VALUE_H
#define VKL_OPT_VALUE_H

/* Prints "vklora CMD: OPT V: WANT" and returns 2 (a usage error). */
int vkl_app_opt_bad(const char *cmd, const char *opt, const char *v, const char *want);
/* An integer in [lo, hi] / a finite number in [lo, hi]: 0, or 2 after the message. */
int vkl_app_opt_int(const char *cmd, const char *opt, const char *v, long lo, long hi, int *out);
int vkl_app_opt_real(const char *cmd, const char *opt, const char *v, double lo, double hi, float *out);

#endif
